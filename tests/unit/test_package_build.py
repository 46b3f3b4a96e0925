"""The serving image's build context without Docker: hostile wheels (one test per class of
attack), pruning, the SBOM, the image reference rule, the base image's Python as reported,
and the wheel fetch with pip replaced by a recording stand-in (no network)."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from gha_mlops.errors import UnsafePathError, UsageError
from gha_mlops.packaging import build
from gha_mlops.packaging.build import PackageError, PythonTarget
from gha_mlops.packaging.service import image_reference

TARGET = PythonTarget(version="3.11", full_version="3.11.2", machine="x86_64", glibc="2.36")
METADATA = "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense-Expression: MIT\n"


def _wheel(path: Path, members: dict[str, bytes], *, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def _dist(tmp_path: Path, name: str = "demo", version: str = "1.0") -> Path:
    return _wheel(tmp_path / f"{name}-{version}-cp311-cp311-manylinux_2_17_x86_64.whl", {
        f"{name}/__init__.py": b"x = 1\n",
        f"{name}/tests/test_it.py": b"",
        f"{name}/__init__.pyi": b"",
        f"{name}/__pycache__/__init__.cpython-311.pyc": b"",
        f"{name}-{version}.dist-info/METADATA":
            METADATA.format(name=name, version=version).encode()})


def test_a_wheel_unpacks_without_what_serving_never_imports(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    build.unpack_wheel(_dist(tmp_path), site)
    files = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert files == ["demo-1.0.dist-info/METADATA", "demo/__init__.py"]


@pytest.mark.parametrize("member", ["../evil.py", "/abs/evil.py", "a/../../evil.py",
                                    "a\\..\\evil.py"])
def test_members_that_leave_the_site_are_refused(tmp_path: Path, member: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    wheel = _wheel(tmp_path / "bad-1-py3-none-any.whl", {"ok.py": b"", member: b"boom"})
    with pytest.raises(UnsafePathError, match="not a plain relative path"):
        build.unpack_wheel(wheel, site)
    assert not (tmp_path / "evil.py").exists()


def test_symlink_members_are_refused(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    wheel = _wheel(tmp_path / "bad-1-py3-none-any.whl", {}, symlink="link")
    with pytest.raises(UnsafePathError, match="symlink member 'link'"):
        build.unpack_wheel(wheel, site)


def test_a_wheel_that_unpacks_past_the_bound_stops_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "MAX_WHEEL_BYTES", 1 << 20)
    site = tmp_path / "site"
    site.mkdir()
    wheel = _wheel(tmp_path / "bomb-1-py3-none-any.whl", {"bomb.bin": b"\0" * (2 << 20)})
    assert wheel.stat().st_size < 64 << 10
    with pytest.raises(PackageError, match="unpacks to more than 1 MiB"):
        build.unpack_wheel(wheel, site)


def test_a_file_that_is_not_a_wheel_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "numpy-1-cp311-cp311-manylinux_2_17_x86_64.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PackageError, match="cannot be unpacked"):
        build.unpack_wheel(bad, tmp_path)


def test_the_sbom_lists_each_distribution_with_its_purl_and_wheel_hash(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    wheel = _dist(tmp_path, "demo", "2.5")
    build.unpack_wheel(wheel, site)
    doc = build.sbom(site, {"demo": wheel}, TARGET, subject={"name": "img", "version": "1"})
    again = build.sbom(site, {"demo": wheel}, TARGET, subject={"name": "img", "version": "1"})
    assert doc == again  # no timestamp, a serial number from the content
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.5"
    demo = next(c for c in doc["components"] if c["name"] == "demo")
    assert demo["purl"] == "pkg:pypi/demo@2.5" and demo["licenses"] == [{"expression": "MIT"}]
    import hashlib
    assert demo["hashes"] == [{"alg": "SHA-256",
                               "content": hashlib.sha256(wheel.read_bytes()).hexdigest()}]


@pytest.mark.parametrize(("tag", "expected"), [
    (None, "gha-mlops/digits:1.2.0"),
    ("ghcr.io/acme/", "ghcr.io/acme/digits:1.2.0"),
    ("127.0.0.1:5000/", "127.0.0.1:5000/digits:1.2.0"),
    ("ghcr.io/acme/serve", "ghcr.io/acme/serve:1.2.0"),
    ("localhost:5000/serve:prod", "localhost:5000/serve:prod"),
])
def test_image_reference(tag: str | None, expected: str) -> None:
    assert image_reference("Digits", "1.2.0", tag) == expected


@pytest.mark.parametrize("tag", ["UPPER/case", "a b", "x:y:z", "-x", "ok/"
                                 + "a" * 300, "a//b"])
def test_image_references_docker_refuses_are_usage_errors(tag: str) -> None:
    with pytest.raises(UsageError, match="not an image reference Docker accepts"):
        image_reference("digits", "1.2.0", tag)


@pytest.mark.parametrize(("doc", "message"), [
    ({"implementation": "pypy", "version": "3.10", "full": "3.10.1", "machine": "x86_64",
      "glibc": "2.36"}, "not CPython"),
    ({"implementation": "cpython", "version": "3.11", "full": "3.11.2", "machine": "x86_64",
      "glibc": ""}, "glibc"),
    ("not json", "implementation"),
])
def test_a_base_python_wheels_cannot_be_chosen_for_is_named(doc: object, message: str) -> None:
    with pytest.raises(PackageError, match=message):
        PythonTarget.from_probe(doc, base="alpine:3")


def test_platforms_cover_every_manylinux_up_to_the_glibc() -> None:
    plats = TARGET.platforms()
    assert plats[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in plats
    assert plats[-1] == "manylinux2014_x86_64"


def test_wheels_come_from_the_cache_else_pinned_from_pip_else_the_newest(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def pip(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        spec, dest = argv[-1], Path(argv[argv.index("--dest") + 1])
        if spec == "numpy==9.9":  # no such wheel for this Python: pip fails
            return subprocess.CompletedProcess(argv, 1, "", "ERROR: No matching distribution")
        version = spec.partition("==")[2] or "2.0"
        (dest / f"{spec.partition('==')[0]}-{version}-cp311-cp311-"
         "manylinux_2_17_x86_64.whl").write_bytes(b"")
        return subprocess.CompletedProcess(argv, 0, "", "")

    got = build.fetch_wheels(TARGET, tmp_path, {"numpy": "9.9", "onnxruntime": "1.2"}, run=pip)
    assert got["numpy"].name.startswith("numpy-2.0-") and got["onnxruntime"].name.startswith(
        "onnxruntime-1.2-")
    assert [c[-1] for c in calls] == ["numpy==9.9", "numpy", "onnxruntime==1.2"]
    assert "--only-binary=:all:" in calls[0] and "--no-deps" in calls[0]
    assert calls[0][calls[0].index("--python-version") + 1] == "3.11"
    calls.clear()
    assert build.fetch_wheels(TARGET, tmp_path, {"onnxruntime": "1.2"}, run=pip) == {
        "onnxruntime": got["onnxruntime"]}
    assert calls == []  # cached: pip is not asked


def test_no_wheel_at_all_is_a_clear_error(tmp_path: Path) -> None:
    def pip(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "ERROR: Could not find a version")

    with pytest.raises(PackageError, match=r"no numpy wheel for Python 3\.11") as err:
        build.fetch_wheels(TARGET, tmp_path, {"numpy": None}, run=pip)
    assert "Could not find a version" in err.value.message
    assert "pip download" in (err.value.hint or "")


def test_the_dockerfile_copies_only_and_puts_the_model_last() -> None:
    text = build.dockerfile("python:3.11-slim", compile_in_image=False)
    lines = text.splitlines()
    assert lines[0] == "FROM python:3.11-slim" and lines[-1] == "COPY model/ /model/"
    assert not any(line.startswith("RUN") for line in lines)
    assert "USER 65532:65532" in lines and "EXPOSE 8080" in lines
    health = next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert json.loads(health.split(" CMD ", 1)[1])[:2] == ["python3", "-c"]
    assert io.StringIO(text).read().count("COPY") == 4
