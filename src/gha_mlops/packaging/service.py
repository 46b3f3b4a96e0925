"""The ``package`` use case: a registered model -> a serving image (-> pushed, recorded).

    resolve NAME[@VERSION|#STAGE] in the registry -> the model's bytes (hash-checked)
    -> ONNX (exported and checked against the original on ``check_data`` unless it is ONNX
       already) -> model.json (signature, sha256, run id, commit)
    -> the base image's Python -> wheels for it -> the build context -> docker build
    -> [--push: push, the digest recorded on the version: reg.record_image]

The build never imports the user's training code: a torch or scikit-learn model is read by
:mod:`gha_mlops.packaging.export` (torch.export, TorchScript read only, a restricted
unpickler), and nothing of the workspace but the model file and the check data is read.
The image engine is a port (:class:`ImageEngine`): the CLI hands in the Docker adapter
(:class:`gha_mlops.packaging.image.DockerImages`).
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from gha_mlops.errors import UsageError, quoted
from gha_mlops.packaging.build import (
    PackageError,
    PythonTarget,
    fetch_wheels,
    host_pins,
    make_context,
)
from gha_mlops.store.hashing import sha256_file

if TYPE_CHECKING:
    import numpy as np

    from gha_mlops.registry import ModelVersion

DEFAULT_BASE = "python:3.11-slim"
DEFAULT_REPOSITORY = "gha-mlops"
SERVER = Path(__file__).with_name("oip_server.py")
LABEL_PREFIX = "io.gha-mlops.model."
MAX_CHECK_ROWS = 10_000  # rows of check_data the export is compared on
GOLDEN_CASES = 8  # rows of check_data that become golden requests in the image
# The distribution reference grammar (docker/distribution reference/regexp.go), simplified:
# [domain[:port]/]path[/path...][:tag]; the first part is a domain only when it has a '.' or
# a ':' or is localhost (as Docker reads it), else it is a (lowercase) path component.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")


class ImageEngine(Protocol):
    """What packaging needs of a container engine (the Docker adapter implements it)."""

    daemon_url: str

    def python_of(self, base: str) -> PythonTarget:
        """The Python of image ``base`` (a :class:`PackageError` when it is not there)."""

    def build(self, context: Path, *, tag: str, labels: Mapping[str, str]) -> str:
        """Build ``context`` as ``tag`` with ``labels``, without network; the image id."""

    def push(self, image: str) -> str:
        """Push ``image``; the manifest digest the registry stored (``sha256:...``)."""


@dataclass(frozen=True)
class PackageRequest:
    """What ``gha-mlops package`` was asked: the model reference, the image reference (None:
    ``gha-mlops/<name>:<version>``; ending in ``/``: a prefix for ``<name>:<version>``; no
    tag: ``:<version>`` added), the base image, whether to push, and the source repository's
    URL for the ``org.opencontainers.image.source`` label (None: no label)."""

    ref: str
    tag: str | None = None
    base: str = DEFAULT_BASE
    push: bool = False
    source: str | None = None


@dataclass(frozen=True)
class PackageResult:
    """The image built: its reference, id, size-relevant facts, and the pushed digest (None
    unless pushed; only a pushed digest is recorded on the version)."""

    name: str
    version: str
    image: str
    image_id: str
    digest: str | None
    signature: dict[str, Any]
    sbom_components: tuple[str, ...]
    labels: dict[str, str]


def image_reference(name: str, version: str, tag: str | None) -> str:
    """The image reference for model ``name`` at ``version`` (see :class:`PackageRequest`);
    a :class:`UsageError` for a reference Docker would refuse."""
    repository = name.lower()
    if tag is None:
        ref = f"{DEFAULT_REPOSITORY}/{repository}:{version}"
    elif tag.endswith("/"):
        ref = f"{tag}{repository}:{version}"
    elif re.search(r":[\w][\w.-]*$", tag.rpartition("/")[2]):
        ref = tag
    else:
        ref = f"{tag}:{version}"
    if len(ref) > 255 or not _valid_reference(ref):
        raise UsageError(f"{quoted(ref)} is not an image reference Docker accepts",
                         hint="give --tag as [REGISTRY/]PATH[:TAG] (lowercase path), or "
                              "REGISTRY/PATH/ to name only where it goes")
    return ref


def _valid_reference(ref: str) -> bool:
    parts = ref.split("/")
    last, sep, tag = parts[-1].partition(":")
    parts[-1] = last
    if sep and not _TAG.fullmatch(tag):
        return False
    domain = len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost")
    if domain and not _DOMAIN.fullmatch(parts.pop(0)):
        return False
    return all(_COMPONENT.fullmatch(part) for part in parts)


def model_json(mv: ModelVersion, signature: Mapping[str, Any], onnx_sha256: str) -> dict[str, Any]:
    """model.json of the serving image (the interfaces' form)."""
    return {"name": mv.name, "version": mv.version, "platform": "onnxruntime_onnx",
            "inputs": signature["inputs"], "outputs": signature["outputs"],
            "sha256": onnx_sha256, "run_id": mv.lineage.run_id, "commit": mv.lineage.commit}


def labels_for(mv: ModelVersion, *, base: str, onnx_sha256: str,
               source: str | None) -> dict[str, str]:
    """The image's labels (OCI annotations and ours); nothing that changes between builds."""
    labels = {
        "org.opencontainers.image.title": mv.name,
        "org.opencontainers.image.description":
            f"{mv.name} {mv.version} served over the Open Inference Protocol V2 (gha-mlops)",
        "org.opencontainers.image.version": mv.version,
        "org.opencontainers.image.revision": mv.lineage.commit,
        "org.opencontainers.image.base.name": base,
        f"{LABEL_PREFIX}name": mv.name,
        f"{LABEL_PREFIX}version": mv.version,
        f"{LABEL_PREFIX}sha256": mv.lineage.model_sha256,
        f"{LABEL_PREFIX}onnx-sha256": onnx_sha256,
        f"{LABEL_PREFIX}run-id": mv.lineage.run_id,
    }
    if source:
        labels["org.opencontainers.image.source"] = source
    return labels


def check_inputs(workspace: Path, mv: ModelVersion, rel: str,
                 limit: int = MAX_CHECK_ROWS) -> np.ndarray:
    """The run's ``rel`` output (a .npy file), hash-checked against the run's record and
    read without pickles, at most ``limit`` rows."""
    import numpy as np

    from gha_mlops.runs.files import read_run_file
    from gha_mlops.runs.store import RunStore

    record = RunStore.of(workspace).record(mv.lineage.run_id)
    digest = _output_digest(record.outputs, rel)
    if digest is None:
        raise PackageError(f"check_data {quoted(rel)} is not an output of run "
                           f"{mv.lineage.run_id} (the run {mv.tag} was registered from)",
                           hint="point registry.models.<name>.check_data at a .npy file the "
                                "run wrote")
    data = read_run_file(workspace, rel, digest).data
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise PackageError(f"check_data {quoted(rel)} is not a .npy array: {err}",
                           hint="write it with numpy.save (a numeric array)") from err
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf" or array.ndim < 1:
        raise PackageError(f"check_data {quoted(rel)} holds no numeric array",
                           hint="write it with numpy.save (a numeric array, rows first)")
    return array[:limit]


def _output_digest(outputs: Mapping[str, Any], rel: str) -> str | None:
    if rel in outputs:
        digest = outputs[rel].sha256
        return None if digest.endswith(".dir") else str(digest)
    for path, output in outputs.items():
        if output.files and rel.startswith(path.rstrip("/") + "/"):
            inner = output.files.get(rel[len(path.rstrip("/")) + 1:])
            return None if inner is None else str(inner)
    return None


@dataclass(frozen=True)
class _Exported:
    """What the export gives the image: the signature (JSON form) and, when the registry
    names check data, the golden requests (gha_mlops.deploy.golden) of its first rows and
    the reference profile's bytes (gha_mlops.monitor.reference)."""

    signature: dict[str, Any]
    golden: dict[str, Any] | None = None
    profile: bytes | None = None
    profile_rows: int = 0


def _export(workspace: Path, mv: ModelVersion, model: Path, dest: Path) -> _Exported:
    """The model as ONNX at ``dest`` and what goes with it into the image."""
    from gha_mlops.config import DEFAULT_CONFIG, load_pipeline
    from gha_mlops.packaging.export import export_to_onnx

    suffix = PurePosixPath(mv.lineage.model_path).suffix
    if model.suffix.lower() != suffix.lower():
        # The content cache's copy is named by its sha256; the export reads the format from
        # the name the run wrote it under.
        named = dest.with_name(f"registered{suffix}")
        shutil.copyfile(model, named)
        model = named
    entry = None
    config = workspace / DEFAULT_CONFIG
    registry = load_pipeline(config).registry if config.is_file() else None
    if registry is not None:
        entry = registry.models.get(mv.name)
    check = None
    if entry is not None and entry.check_data and model.suffix.lower() != ".onnx":
        check = check_inputs(workspace, mv, entry.check_data)
    tolerance = {"atol": entry.atol, "rtol": entry.rtol} if entry is not None else {}
    signature = export_to_onnx(model, dest, check_inputs=check, **tolerance)
    if entry is None or not entry.check_data:
        return _Exported(signature.to_json())
    from gha_mlops.deploy.golden import golden_doc
    from gha_mlops.monitor.reference import PROFILE_ROWS, build_reference
    from gha_mlops.packaging.export import onnx_outputs

    # The profile's rows: as many as the reference may have (the export's check used the
    # first MAX_CHECK_ROWS of them).
    rows = check_inputs(workspace, mv, entry.check_data, limit=PROFILE_ROWS)
    feeds, outputs = onnx_outputs(dest, [rows[:GOLDEN_CASES]])
    golden = golden_doc(feeds, outputs, atol=entry.atol, rtol=entry.rtol, cases=GOLDEN_CASES)
    profile, profile_rows = build_reference(signature.to_json(), *onnx_outputs(dest, [rows]))
    return _Exported(signature.to_json(), golden, profile, profile_rows)


def _silent(line: str) -> None:
    pass


def package(workspace: Path, request: PackageRequest, *, engine: ImageEngine, wheel_cache: Path,
            pip: Sequence[str] | None = None,
            progress: Callable[[str], None] = _silent) -> PackageResult:
    """Build (and with ``request.push``, push and record) the serving image of a registered
    model; see the module's docstring. Errors are :class:`GhaMlopsError`: the registry's
    (unknown model or version, model bytes missing), the export's (mismatch beyond the
    tolerance), :class:`PackageError` (Docker, the base image, wheels, the push).
    ``progress`` is told each step as it starts, in a line."""
    from gha_mlops.registry import open_registry

    reg = open_registry(workspace)
    mv = reg.resolve(request.ref)
    image = image_reference(mv.name, mv.version, request.tag)
    model = reg.model_file(mv)
    progress(f"{mv.name} {mv.version} -> {image}; asking {request.base} for its Python")
    target = engine.python_of(request.base)  # first: a missing daemon or base fails fast
    progress(f"numpy and onnxruntime wheels for Python {target.version} ({target.machine})")
    wheels = fetch_wheels(target, wheel_cache, host_pins(), pip=pip)
    work = Path(tempfile.mkdtemp(prefix="gha-mlops-package-"))
    try:
        onnx_path = work / "model.onnx"
        progress(f"exporting {mv.lineage.model_path} to ONNX")
        exported = _export(workspace, mv, model, onnx_path)
        signature = exported.signature
        onnx_sha256 = sha256_file(onnx_path)
        labels = labels_for(mv, base=request.base, onnx_sha256=onnx_sha256,
                            source=request.source)
        context = make_context(
            work / "context", base=request.base, target=target, wheels=wheels, server=SERVER,
            model_onnx=onnx_path, model_json=model_json(mv, signature, onnx_sha256),
            golden=exported.golden, profile=exported.profile,
            subject={"name": image.rpartition(":")[0], "version": mv.version})
        progress(f"building {image} on {engine.daemon_url}")
        image_id = engine.build(context.path, tag=image, labels=labels)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if exported.profile is not None:
        # Kept with the version even for a local build: `monitor check` finds it by this
        # (the cache here; the profile note wherever the notes are fetched).
        from gha_mlops.monitor.reference import store_reference

        store_reference(workspace, exported.profile)
        reg.record_profile(mv, exported.profile, exported.profile_rows)
    digest = None
    if request.push:
        progress(f"pushing {image}")
        digest = engine.push(image)
        reg.record_image(mv, image, digest)
    components = tuple(f"{c['name']}=={c['version']}" for c in context.sbom["components"])
    return PackageResult(name=mv.name, version=mv.version, image=image, image_id=image_id,
                         digest=digest, signature=signature, sbom_components=components,
                         labels=labels)


__all__ = ["DEFAULT_BASE", "ImageEngine", "PackageError", "PackageRequest",
           "PackageResult", "image_reference", "package"]
