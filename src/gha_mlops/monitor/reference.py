"""A version's reference profile: made when the model is packaged, found again when it is
monitored.

Made: :func:`build_reference` profiles the check data (the registry's ``check_data``, up to
:data:`PROFILE_ROWS` rows) as the model takes it and the model's outputs on it, with the
column names of :mod:`gha_mlops.monitor.features` (the names ``monitor check`` gives the
logged tensors).

Kept: ``gha-mlops package`` writes the bytes into the image (``/model/profile.json``), the
workspace's content cache and the version's note in ``refs/notes/gha-mlops-profiles`` (pushed
with the image notes by release.yml), and names them in the lineage
(``Registry.record_profile``).

Found: :func:`load_reference` takes ``--profile FILE`` when given, else the bytes the lineage
names, from the content cache or else the profile note, checked against the sha256; it never
uses a profile the lineage does not name, and a missing one is an error saying how to get
it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops.config._state import STATE_DIR
from gha_mlops.errors import quoted
from gha_mlops.monitor.features import tensor_columns
from gha_mlops.monitor.profile import (
    MAX_PROFILE_BYTES,
    Profile,
    ProfileError,
    build_profile,
    dump_profile,
    load_profile,
)

if TYPE_CHECKING:
    from gha_mlops.registry import ModelVersion

PROFILE_ROWS = 100_000  # rows of the check data the profile summarises at most
IMAGE_PATH = "/model/profile.json"


def build_reference(signature: Mapping[str, Any], feeds: Sequence[Any],
                    outputs: Sequence[Any]) -> tuple[bytes, int]:
    """The canonical bytes of the profile of ``feeds`` (the model's inputs, in the order of
    ``signature["inputs"]``) and ``outputs`` (the model's outputs on them, in the order of
    ``signature["outputs"]``), and the rows it summarises."""
    inputs = {spec["name"]: feed for spec, feed in zip(signature["inputs"], feeds, strict=True)}
    preds = {spec["name"]: out for spec, out in zip(signature["outputs"], outputs, strict=True)}
    profile = build_profile(tensor_columns(inputs), predictions=tensor_columns(preds))
    return dump_profile(profile), profile.rows


def cache_path(workspace: Path, sha256: str) -> Path:
    """Where the workspace's content cache keeps the bytes of ``sha256``."""
    from gha_mlops.store.objects import ContentCache

    return ContentCache(workspace / STATE_DIR / "cache").object_path(sha256)


def store_reference(workspace: Path, data: bytes) -> str:
    """Put the profile's bytes in the workspace's content cache; their sha256."""
    from gha_mlops.store.objects import ContentCache

    digest = hashlib.sha256(data).hexdigest()
    ContentCache(workspace / STATE_DIR / "cache").put_verified_bytes(data, digest)
    return digest


def monitored_version(workspace: Path, name: str, *, version: str | None = None,
                      stage: str | None = None) -> ModelVersion:
    """The version of model ``name`` a check judges: ``version`` when given, else the one
    at registry ``stage`` (``monitor.models.<name>.stage``), else the newest registered.
    Registry errors (no such model, version or stage) say what is there."""
    from gha_mlops.registry import open_registry

    ref = name if version is None and stage is None else (
        f"{name}@{version}" if version is not None else f"{name}#{stage}")
    return open_registry(workspace).resolve(ref)


def reference_for(workspace: Path, name: str, *, stage: str | None = None,
                  version: str | None = None,
                  profile_file: Path | None = None) -> tuple[str, Profile]:
    """The version a check of model ``name`` judges and its reference profile. A
    ``version`` with a ``profile_file`` needs no registry; otherwise the registry names the
    version (:func:`monitored_version`) and its lineage the profile (:func:`load_reference`,
    which takes ``profile_file`` first)."""
    if version is not None and profile_file is not None:
        return version, load_profile(_read_bounded(profile_file), where=str(profile_file))
    mv = monitored_version(workspace, name, version=version, stage=stage)
    return mv.version, load_reference(workspace, mv, profile_file=profile_file)


def _read_bounded(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PROFILE_BYTES + 1)
    except OSError as err:
        raise ProfileError(f"cannot read the reference profile {path}: {err.strerror or err}",
                           hint="give --profile the profile.json of the packaged model",
                           file=str(path)) from err
    return data  # load_profile refuses it when over the limit


def load_reference(workspace: Path, mv: ModelVersion, *,
                   profile_file: Path | None = None) -> Profile:
    """The reference profile of ``mv``: ``profile_file`` when given, else the one its
    lineage names, from the content cache (checked against the sha256). A
    :class:`ProfileError` when there is none, saying how to get one."""
    if profile_file is not None:
        return load_profile(_read_bounded(profile_file), where=str(profile_file))
    ref = mv.lineage.profile
    image = next(iter(reversed(mv.lineage.images)), None)
    extract = (f"docker cp \"$(docker create {image.image}@{image.digest})\":{IMAGE_PATH} "
               "profile.json" if image is not None else
               f"docker cp \"$(docker create IMAGE)\":{IMAGE_PATH} profile.json")
    if ref is None:
        raise ProfileError(
            f"{mv.name} {mv.version} has no reference profile in its lineage (it was packaged "
            "before gha-mlops wrote profiles, or without registry.models."
            f"{mv.name}.check_data)",
            hint=f"set check_data and package it again (`gha-mlops package {mv.name}@"
                 f"{mv.version}`), or give --profile FILE")
    path = cache_path(workspace, ref.sha256)
    try:
        data = _read_bounded(path) if path.is_file() else None
    except ProfileError:
        data = None
    where = f"the reference profile of {mv.name} {mv.version} ({quoted(str(path))})"
    if data is None or hashlib.sha256(data).hexdigest() != ref.sha256:
        from gha_mlops.registry import PROFILE_NOTES_REF, open_registry

        data = open_registry(workspace).profile_bytes(mv, MAX_PROFILE_BYTES)
        where = f"the reference profile of {mv.name} {mv.version} (its note in " \
                f"{PROFILE_NOTES_REF})"
    if data is None or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise ProfileError(
            f"the reference profile of {mv.name} {mv.version} (sha256 {ref.sha256[:12]}, "
            f"{ref.rows} rows) is neither in this workspace's cache nor in its git notes",
            hint="fetch the notes (git fetch origin "
                 "'refs/notes/*:refs/notes/*'), or take it from the image: "
                 f"{extract}, then pass --profile profile.json")
    return load_profile(data, where=where)


__all__ = ["IMAGE_PATH", "PROFILE_ROWS", "build_reference", "load_reference",
           "monitored_version", "reference_for", "store_reference"]
