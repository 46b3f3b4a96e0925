"""The build context of a serving image, made on the host: nothing in the build needs a network.

``gha-mlops package`` never runs pip inside the image. It asks the base image which Python it
has (:class:`PythonTarget`), downloads the wheels of the serving runtime for THAT Python with
the host's pip (``pip download --only-binary=:all: --no-deps --python-version ...``, cached),
unpacks them here (hostile-safe and bounded: :func:`unpack_wheel`), prunes what serving never
imports, writes a CycloneDX 1.5 SBOM of what went in, and lays out a context whose Dockerfile
only COPYs:

    Dockerfile
    site/       -> /opt/gha-mlops/site (PYTHONPATH): numpy, onnxruntime, their dist-info
    app/        -> /app/oip_server.py, /app/predlog_writer.py (the prediction log's writer,
                   which the server loads from beside itself)
    sbom/       -> /sbom/cyclonedx.json
    model/      -> /model/{model.onnx,model.json}   (the LAST layer: a new model version
                                                     re-uses every layer below it)

Every file gets a fixed mtime and mode, and no label says when it was built, so the same
inputs give the same layers (the image config's ``created`` is the daemon's to set).
onnxruntime's own Python dependencies (protobuf, sympy, flatbuffers, coloredlogs, packaging)
are left out on purpose: ``InferenceSession`` needs only numpy.
"""

from __future__ import annotations

import compileall
import json
import os
import py_compile
import re
import shutil
import stat
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from gha_mlops._fs import atomic_write_bytes, atomic_write_text, resolve_inside
from gha_mlops.errors import GhaMlopsError, UnsafePathError, quoted
from gha_mlops.store.hashing import sha256_file

# What the image's Python needs to serve an ONNX model, and nothing else.
RUNTIME = ("numpy", "onnxruntime")
SITE = "/opt/gha-mlops/site"
SERVER = "/app/oip_server.py"
# The prediction log's writer (standard library only), copied beside the server.
PREDLOG_WRITER = Path(__file__).resolve().parent.parent / "monitor" / "predlog_writer.py"
SBOM = "/sbom/cyclonedx.json"
MODEL_DIR = "/model"
PORT = 8080
UID = 65532  # the "nonroot" uid of distroless images: no account needed in /etc/passwd
FIXED_MTIME = 315532800  # 1980-01-01, the earliest a zip (wheel) can say: reproducible layers
MAX_WHEEL_BYTES = 1 << 30  # uncompressed, per wheel: a zip bomb stops here
MAX_WHEEL_MEMBERS = 50_000
PIP_TIMEOUT_S = 900

# Parts of the wheels that serving never imports (tests, build tooling, type stubs, the
# optional onnxruntime tool kits). Matched against each member's path.
_PRUNED_PARTS = {"__pycache__", "tests", "testing"}
_PRUNED_PREFIXES = (
    "numpy/f2py/", "numpy/distutils/", "numpy/typing/", "numpy/_pyinstaller/",
    "numpy/_core/include/", "numpy/_core/lib/", "numpy/random/lib/",
    "onnxruntime/tools/", "onnxruntime/transformers/", "onnxruntime/quantization/",
    "onnxruntime/training/",
)
_PRUNED_SUFFIXES = (".pyi", ".pxd", ".pyx", ".h", ".c", ".a")
_WHEEL_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)-.+\.whl$")


class PackageError(GhaMlopsError):
    """Building, pushing or recording a serving image failed; the message says which step
    and why, the hint what to do."""


@dataclass(frozen=True)
class PythonTarget:
    """The Python of a base image, as a container of it reports: ``version`` ``"3.11"``,
    ``full_version`` ``"3.11.2"``, ``machine`` ``"x86_64"``, ``glibc`` ``"2.36"``."""

    version: str
    full_version: str
    machine: str
    glibc: str

    @classmethod
    def from_probe(cls, doc: Any, *, base: str) -> PythonTarget:
        """From the JSON :data:`PROBE` prints; a :class:`PackageError` naming the base image
        for anything the wheels cannot be chosen for (not CPython, not glibc, odd values)."""
        def field(key: str, pattern: str) -> str:
            value = doc.get(key) if isinstance(doc, dict) else None
            if not isinstance(value, str) or not re.fullmatch(pattern, value):
                raise PackageError(
                    f"the base image {base}: its Python reported {key} = {quoted(value)}",
                    hint="use a base image with CPython 3 on glibc (e.g. python:3.11-slim)")
            return value
        if field("implementation", r"[a-z]+") != "cpython":
            raise PackageError(f"the base image {base} has {doc['implementation']}, not CPython",
                               hint="use a base image with CPython 3 (e.g. python:3.11-slim)")
        return cls(version=field("version", r"3\.\d{1,2}"),
                   full_version=field("full", r"3\.\d{1,2}\.\d{1,3}\S{0,20}"),
                   machine=field("machine", r"x86_64|aarch64"),
                   glibc=field("glibc", r"2\.\d{1,3}"))

    @property
    def abi(self) -> str:
        return "cp" + self.version.replace(".", "")

    def platforms(self) -> list[str]:
        """pip's ``--platform`` values the base can run: every manylinux up to its glibc."""
        top = int(self.glibc.split(".")[1])
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in range(top, 16, -1)]
        return [*tags, f"manylinux2014_{self.machine}"]

    def cache_key(self) -> str:
        return f"{self.abi}-{self.machine}-glibc{self.glibc}"


# Run as `python3 -c PROBE` in a throwaway container of the base image (no network).
PROBE = ("import json,os,platform,sys;print(json.dumps({'implementation':sys.implementation.name,"
         "'version':'%d.%d'%sys.version_info[:2],'full':platform.python_version(),"
         "'machine':platform.machine(),'glibc':(os.confstr('CS_GNU_LIBC_VERSION') or '')"
         ".partition(' ')[2]}))")

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run_pip(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False,
                          timeout=PIP_TIMEOUT_S)


def host_pins(names: Sequence[str] = RUNTIME) -> dict[str, str | None]:
    """The versions installed here (the ones the export was checked with), or None."""
    pins: dict[str, str | None] = {}
    for name in names:
        try:
            pins[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pins[name] = None
    return pins


def _cached(directory: Path, name: str, version: str | None) -> Path | None:
    found = []
    for path in directory.glob("*.whl") if directory.is_dir() else ():
        match = _WHEEL_NAME.fullmatch(path.name)
        if match and match["name"].lower().replace("_", "-") == name and (
                version is None or match["version"] == version):
            found.append(path)
    return sorted(found)[-1] if found else None


def fetch_wheels(target: PythonTarget, cache: Path, pins: Mapping[str, str | None], *,
                 pip: Sequence[str] | None = None, run: Runner = _run_pip) -> dict[str, Path]:
    """One wheel per package of ``pins`` for ``target``, from ``cache/<abi-machine-glibc>/`` or
    downloaded there by ``pip download`` (the pinned version first; when pip has none for
    that Python, the newest it has). A :class:`PackageError` with pip's words otherwise."""
    where = cache / target.cache_key()
    where.mkdir(parents=True, exist_ok=True)
    pip = list(pip or [sys.executable, "-m", "pip"])
    wheels: dict[str, Path] = {}
    for name, version in pins.items():
        hit = _cached(where, name, version)
        attempts = [f"{name}=={version}", name] if version else [name]
        errors: list[str] = []
        for spec in attempts if hit is None else ():
            argv = [*pip, "download", "--quiet", "--disable-pip-version-check",
                    "--only-binary=:all:", "--no-deps", "--implementation", "cp",
                    "--python-version", target.version, "--abi", target.abi,
                    *(arg for plat in target.platforms() for arg in ("--platform", plat)),
                    "--dest", str(where), spec]
            try:
                proc = run(argv)
            except (OSError, subprocess.TimeoutExpired) as err:
                errors.append(f"{spec}: {err}")
                continue
            if proc.returncode == 0:
                hit = _cached(where, name, version if spec != name else None)
                if hit is not None:
                    break
            errors.append(f"{spec}: " + (proc.stderr.strip().splitlines() or ["no wheel"])[-1])
        if hit is None:
            raise PackageError(
                f"no {name} wheel for Python {target.version} on {target.machine} "
                f"(glibc {target.glibc}): " + "; ".join(errors),
                hint=f"check that this host reaches the package index (pip download), or put "
                     f"a {name} wheel for {target.abi} manylinux in {where}")
        wheels[name] = hit
    return wheels


def pruned(member: str) -> bool:
    """Whether serving can do without this wheel member (see _PRUNED_*)."""
    parts = member.split("/")
    return (bool(_PRUNED_PARTS.intersection(parts[:-1])) or member.endswith(_PRUNED_SUFFIXES)
            or member.startswith(_PRUNED_PREFIXES))


def _member_path(site: Path, info: zipfile.ZipInfo, wheel: Path) -> Path:
    name = info.filename
    pure = PurePosixPath(name)
    if (not name or "\\" in name or "\x00" in name or pure.is_absolute()
            or any(part in ("", ".", "..") for part in name.rstrip("/").split("/"))):
        raise UnsafePathError(f"the wheel {wheel.name} has a member {quoted(name)} that is not "
                              "a plain relative path", hint="use the wheel from the index")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafePathError(f"the wheel {wheel.name} has a symlink member {quoted(name)}",
                              hint="use the wheel from the index")
    return resolve_inside(site, name, what=f"member of {wheel.name}")


def unpack_wheel(wheel: Path, site: Path) -> int:
    """Unpack ``wheel`` into ``site`` (what ``pip install --target`` would put there, minus
    :func:`pruned` members); returns the bytes written. Members must be plain relative paths
    (no ``..``, absolute or symlink members: :class:`UnsafePathError`); at most
    :data:`MAX_WHEEL_MEMBERS` members and :data:`MAX_WHEEL_BYTES` bytes, counted as read, not
    as the zip declares."""
    written = 0
    try:
        with zipfile.ZipFile(wheel) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_WHEEL_MEMBERS:
                raise PackageError(f"the wheel {wheel.name} has {len(infos)} members (at most "
                                   f"{MAX_WHEEL_MEMBERS})", hint="use the wheel from the index")
            for info in infos:
                dest = _member_path(site, info, wheel)
                if info.is_dir() or pruned(info.filename):
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, dest.open("xb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_WHEEL_BYTES:
                            raise PackageError(
                                f"the wheel {wheel.name} unpacks to more than "
                                f"{MAX_WHEEL_BYTES >> 20} MiB", hint="use the wheel from the index")
                        out.write(chunk)
                executable = (info.external_attr >> 16) & 0o111
                dest.chmod(0o755 if executable else 0o644)
    except (zipfile.BadZipFile, FileExistsError) as err:
        raise PackageError(f"the wheel {wheel.name} cannot be unpacked: {err}",
                           hint=f"delete it from {wheel.parent} and run again") from err
    return written


def _dist_metadata(site: Path, name: str) -> dict[str, str]:
    """Name, Version and License of an unpacked distribution, from its METADATA."""
    for info in site.glob("*.dist-info/METADATA"):
        headers = HeaderParser().parsestr(info.read_text(encoding="utf-8", errors="replace"))
        if (headers.get("Name") or "").lower().replace("_", "-") == name:
            return {key: str(headers.get(key) or "") for key in
                    ("Name", "Version", "License-Expression", "License")}
    raise PackageError(f"the {name} wheel has no METADATA", hint="use the wheel from the index")


def sbom(site: Path, wheels: Mapping[str, Path], target: PythonTarget, *,
         subject: Mapping[str, str]) -> dict[str, Any]:
    """A CycloneDX 1.5 document of the image's Python environment: the interpreter of the base
    image and one component per unpacked distribution (name and version from its METADATA,
    its purl, the sha256 of the wheel it came from). No timestamp, and a serial number
    derived from the content: the same inputs give the same bytes."""
    components: list[dict[str, Any]] = [{
        "type": "platform", "bom-ref": f"python@{target.full_version}", "name": "python",
        "version": target.full_version, "description": "the base image's CPython"}]
    for name, wheel in sorted(wheels.items()):
        meta = _dist_metadata(site, name)
        purl = f"pkg:pypi/{meta['Name'].lower()}@{meta['Version']}"
        component: dict[str, Any] = {
            "type": "library", "bom-ref": purl, "name": meta["Name"], "version": meta["Version"],
            "purl": purl,
            "hashes": [{"alg": "SHA-256", "content": sha256_file(wheel)}],
            "externalReferences": [{"type": "distribution",
                                    "url": f"https://pypi.org/project/{meta['Name']}/",
                                    "comment": wheel.name}]}
        license_id = meta["License-Expression"] or meta["License"]
        if license_id and len(license_id) < 200:
            component["licenses"] = [{"expression": license_id}] if meta["License-Expression"] \
                else [{"license": {"name": license_id}}]
        components.append(component)
    doc: dict[str, Any] = {
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "gha-mlops"}]},
            "component": {"type": "container", "bom-ref": "image", **subject}},
        "components": components}
    serial = uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(doc, sort_keys=True))
    return {"bomFormat": "CycloneDX", "specVersion": "1.5", "serialNumber": f"urn:uuid:{serial}",
            **{k: v for k, v in doc.items() if k not in ("bomFormat", "specVersion")}}


_HEALTHCHECK = ("import os,urllib.request as u;u.urlopen('http://127.0.0.1:%s/v2/health/ready'"
                "%os.environ.get('PORT','8080'),timeout=2)")


def dockerfile(base: str, *, compile_in_image: bool) -> str:
    """The Dockerfile: COPY only (a RUN compiles bytecode when the host's Python is not the
    image's), the model last. ``PORT`` (default 8080) is the port the server listens on."""
    compile_step = (f"RUN [\"python3\", \"-m\", \"compileall\", \"-q\", \"--invalidation-mode\", "
                    f"\"unchecked-hash\", \"{SITE}\", \"/app\"]\n" if compile_in_image else "")
    start = (f'exec python3 {SERVER} --model-dir {MODEL_DIR} --host 0.0.0.0 '
             f'--port "${{PORT:-{PORT}}}" "$@"')
    return (
        f"FROM {base}\n"
        f"COPY site/ {SITE}/\n"
        f"COPY app/ /app/\n"
        f"{compile_step}"
        f"COPY sbom/ /sbom/\n"
        # HOME: the uid has no home; onnxruntime keeps a device id there (else it warns).
        f"ENV PYTHONPATH={SITE} PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp "
        f"PORT={PORT}\n"
        f"USER {UID}:{UID}\n"
        f"EXPOSE {PORT}\n"
        f"HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3"
        f" CMD {json.dumps(['python3', '-c', _HEALTHCHECK])}\n"
        f"ENTRYPOINT {json.dumps(['/bin/sh', '-c', start, 'oip-server'])}\n"
        f"CMD []\n"
        f"COPY model/ {MODEL_DIR}/\n")


@dataclass(frozen=True)
class Context:
    """A build context on disk and what went into it."""

    path: Path
    sbom: dict[str, Any]
    site_bytes: int


def _normalise(root: Path) -> None:
    """Fixed mtimes and modes for every file below ``root``: COPY keeps both, so the same
    inputs give the same layer digests."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            mode = path.stat().st_mode
            path.chmod(0o755 if mode & 0o111 else 0o644)
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        for name in dirnames:
            Path(dirpath, name).chmod(0o755)
        os.utime(dirpath, (FIXED_MTIME, FIXED_MTIME))


def make_context(dest: Path, *, base: str, target: PythonTarget, wheels: Mapping[str, Path],
                 server: Path, model_onnx: Path, model_json: Mapping[str, Any],
                 subject: Mapping[str, str],
                 golden: Mapping[str, Any] | None = None,
                 profile: bytes | None = None,
                 predlog_writer: Path = PREDLOG_WRITER) -> Context:
    """Lay out the build context in the empty directory ``dest`` (see the module's
    docstring). Bytecode is compiled here (deterministically: unchecked-hash pycs) when this
    Python is the image's version, else by a RUN step in the image. ``golden``: the golden
    requests a rollout replays (model/golden.json), when there are some; ``profile``: the
    reference profile's canonical JSON (model/profile.json, gha_mlops.monitor.profile);
    ``predlog_writer`` is copied beside the server (``--log`` needs it)."""
    site = dest / "site"
    site.mkdir(parents=True)
    site_bytes = sum(unpack_wheel(wheel, site) for _, wheel in sorted(wheels.items()))
    (dest / "app").mkdir()
    shutil.copyfile(server, dest / "app" / "oip_server.py")
    shutil.copyfile(predlog_writer, dest / "app" / "predlog_writer.py")
    same_python = f"{sys.version_info[0]}.{sys.version_info[1]}" == target.version
    if same_python:
        # ddir: tracebacks name the image's paths, and no host path gets into the layer.
        for folder, inside in ((site, SITE), (dest / "app", "/app")):
            compileall.compile_dir(
                str(folder), quiet=2, workers=1, ddir=inside,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    doc = sbom(site, wheels, target, subject=subject)
    (dest / "sbom").mkdir()
    atomic_write_text(dest / "sbom" / "cyclonedx.json", json.dumps(doc, indent=2) + "\n")
    (dest / "model").mkdir()
    shutil.copyfile(model_onnx, dest / "model" / "model.onnx")
    atomic_write_text(dest / "model" / "model.json",
                      json.dumps(dict(model_json), indent=2, sort_keys=True) + "\n")
    if golden is not None:
        atomic_write_text(dest / "model" / "golden.json", json.dumps(golden) + "\n")
    if profile is not None:
        atomic_write_bytes(dest / "model" / "profile.json", profile)
    atomic_write_text(dest / "Dockerfile", dockerfile(base, compile_in_image=not same_python))
    _normalise(dest)
    return Context(path=dest, sbom=doc, site_bytes=site_bytes)
