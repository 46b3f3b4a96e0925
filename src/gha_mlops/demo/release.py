"""The demo's last two steps of the life cycle: register the run's model in the project's
registry (git tags) and, when a Docker daemon answers, package it as a serving image.

Both are best effort in the way a new user needs: a demo inside somebody else's repository
registers nothing there (tags would land in that repository), and without Docker, or without
the base image on the daemon, the demo says so in one line and still succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from gha_mlops import git
from gha_mlops.packaging.build import PackageError
from gha_mlops.packaging.service import DEFAULT_BASE, ImageEngine, PackageRequest, PackageResult
from gha_mlops.packaging.service import package as package_model
from gha_mlops.registry import ModelVersion, open_registry
from gha_mlops.registry.service import SignatureOf
from gha_mlops.runs.record import RunRecord

MODEL = "digits"
"""The model the demo's mlops.yaml declares in ``registry.models``."""

EngineFactory = Callable[[], AbstractContextManager[ImageEngine]]


@dataclass(frozen=True)
class ReleaseTo:
    """What the demo's release step is handed: the image engine (None without the package
    extra), the wheel cache, and the signature deriver (None without onnx)."""

    engine: EngineFactory | None
    wheel_cache: Path
    signature_of: SignatureOf | None = None


@dataclass(frozen=True)
class Release:
    """What the demo did after its run: the version registered (or found: a fully cached
    rerun tags nothing new), the image built, and a one-line note for what was skipped."""

    version: ModelVersion | None = None
    registered_now: bool = False
    image: PackageResult | None = None
    note: str | None = None


def release(directory: Path, record: RunRecord, to: ReleaseTo, *,
            base: str = DEFAULT_BASE) -> Release:
    """Register ``record``'s model as ``digits`` (unless this commit holds a version already)
    and, with an ``engine``, package that version on ``base``."""
    if not _owns_repository(directory):
        return Release(note="not registered: the demo's folder is inside another git "
                            "repository, and its tags would land there")
    reg = open_registry(directory)
    commit = record.git.commit if record.git is not None else None
    state = reg.state.get(MODEL)
    known = [v for v in (state.versions.values() if state else ()) if v.commit == commit]
    if known:
        version, now = reg.version(MODEL, known[0].version), False
    else:
        written = reg.register(MODEL, record.id, signature_of=to.signature_of)
        assert written.version is not None
        version, now = written.version, True
    if to.engine is None:
        return Release(version, now, note="not packaged: the package extra is not installed "
                                          "(pip install 'gha-mlops[package]')")
    try:
        with to.engine() as images:
            built = package_model(directory, PackageRequest(ref=version.tag.replace("@v", "@"),
                                                            base=base),
                                  engine=images, wheel_cache=to.wheel_cache)
    except PackageError as err:
        # One line: the first clause says what is missing (no daemon, no base image); the
        # SDK's wording after it helps nobody starting out.
        return Release(version, now, note=f"not packaged: {err.message.split(': ', 1)[0]}"
                       f" (then: gha-mlops package {MODEL}; docs/packaging.md)")
    return Release(version, now, image=built)


def _owns_repository(directory: Path) -> bool:
    top = git.toplevel(directory) if git.available() else None
    return top is not None and top.resolve() == directory.resolve()
