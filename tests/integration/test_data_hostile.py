"""`gha-mlops data` against hostile input: a remote, pointers and a working tree that a pull
request controls. One test per class of attack; each runs the real CLI in a subprocess against
a real directory remote, and checks the exit code, that no traceback is printed, and that
nothing was written where it should not be.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.data.packs import PackEntry, PackIndex, index_key, pack_key

EXIT_INTEGRITY = 7  # DataIntegrityError (ManifestError)
EXIT_UNSAFE_PATH = 8  # UnsafePathError
EXIT_CONFIG = 2  # ConfigError: a pointer that is not one gha-mlops wrote
STAGES = "stages:\n  noop:\n    cmd: 'true'\n"
SECRET = b"GITHUB_TOKEN=ghs_not_a_real_secret_but_private\n"


def gha(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "CI")}
    return subprocess.run([sys.executable, "-m", "gha_mlops", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False, timeout=300)


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert "error: " in proc.stderr, proc.stderr


def plant(remote: Path, data: bytes, *, tree: bool = False) -> str:
    """Put ``data`` on the directory remote as a stand-alone object, as a hostile writer of
    the remote can; returns its digest (``.dir`` for a manifest)."""
    digest = hashlib.sha256(data).hexdigest() + (".dir" if tree else "")
    path = remote / "v1/objects" / digest[:2] / digest[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def manifest(entries: Any) -> bytes:
    return json.dumps(entries).encode()


def workspace(root: Path, remote: Path, version: str, *, path: str = "images",
              pointer: str = "data/images.lock.yaml") -> Path:
    """A checkout of a pull request: mlops.yaml naming ``remote`` and one dataset pointer."""
    ws = root / "ws"
    (ws / pointer).parent.mkdir(parents=True, exist_ok=True)
    (ws / "mlops.yaml").write_text(f"remotes:\n  nas:\n    url: {remote}\n{STAGES}")
    (ws / pointer).write_text(f"name: images\npath: {path}\nversion: {json.dumps(version)}\n"
                              "files: 2\nsize: 10\n")
    return ws


def _files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()}


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """An empty directory remote; each test plants what a hostile writer of it would."""
    remote = tmp_path / "remote"
    remote.mkdir()
    return remote


def _honest_tree(remote: Path) -> tuple[str, list[dict[str, Any]]]:
    entries = [{"path": "a.txt", "sha256": plant(remote, b"abc"), "size": 3},
               {"path": "sub/x.txt", "sha256": plant(remote, b"hello"), "size": 5}]
    return plant(remote, manifest(entries), tree=True), entries


# ----------------------------------------------------------------------- (a) traversal


def test_manifest_entries_that_leave_the_tree_are_refused_and_nothing_is_written(
        tmp_path: Path, remote: Path) -> None:
    file_digest = plant(remote, b"pwned\n")
    outside = tmp_path / "escaped.txt"
    for bad_path in ["../../../escaped.txt", "ok/../../../../escaped.txt", str(outside),
                     "a\0b", "..\\..\\..\\escaped.txt", "./a", "a//b", "a/"]:
        digest = plant(remote, manifest([{"path": bad_path, "sha256": file_digest,
                                          "size": 6}]), tree=True)
        case = tmp_path / f"case-{hashlib.sha256(bad_path.encode()).hexdigest()[:8]}"
        ws = workspace(case, remote, digest)
        pull = gha(ws, "data", "pull")
        assert pull.returncode == EXIT_INTEGRITY, (bad_path, pull.stdout, pull.stderr)
        _no_traceback(pull)
        assert "is not one gha-mlops wrote" in pull.stderr and "images" in pull.stderr
        assert not outside.exists() and not (case / "escaped.txt").exists(), bad_path
        assert not (ws / "data/images").exists(), bad_path
        assert sorted(p.name for p in (ws / "data").iterdir()) == ["images.lock.yaml"]
        # the manifest was refused before it entered the cache
        assert not (ws / ".gha-mlops/cache/objects" / digest[:2] / digest[2:]).exists()

    # A pointer (it comes with the pull request) whose path leads where data must not go.
    honest, _ = _honest_tree(remote)
    for i, bad_path in enumerate(["../escaped", ".git/hooks", "sub/.git", ".gha-mlops/cache",
                                  "a\\..\\..\\x", "./images"]):
        case = tmp_path / f"pointer-{i}"
        ws = workspace(case, remote, honest, path=json.dumps(bad_path), pointer="x.lock.yaml")
        (ws / ".git").mkdir()
        pull = gha(ws, "data", "pull")
        assert pull.returncode == EXIT_CONFIG, (bad_path, pull.stdout, pull.stderr)
        _no_traceback(pull)
        assert "key 'path'" in pull.stderr, pull.stderr
        assert not (case / "escaped").exists() and list((ws / ".git").iterdir()) == []


# ----------------------------------------------------------------------- (b) digests


def test_digests_that_are_not_hex64_are_refused_and_no_local_file_is_copied(
        tmp_path: Path, remote: Path) -> None:
    secret = tmp_path / "secret.env"  # stands for /proc/self/environ, a key file, ...
    secret.write_bytes(SECRET)

    # A manifest whose "digest" is a path from the cache to a local file.
    case = tmp_path / "manifest"
    objects = case / "ws/.gha-mlops/cache/objects"
    sneaky = ".." + os.path.relpath(secret, objects / "..")
    assert os.path.realpath(objects / sneaky[:2] / sneaky[2:]) == str(secret)
    digest = plant(remote, manifest([{"path": "loot.txt", "sha256": sneaky,
                                      "size": len(SECRET)}]), tree=True)
    ws = workspace(case, remote, digest)
    pull = gha(ws, "data", "pull")
    assert pull.returncode == EXIT_INTEGRITY, pull.stdout + pull.stderr
    _no_traceback(pull)
    assert "64 lowercase hex" in pull.stderr
    copied = [p for p, data in _files_under(case).items() if SECRET in data]
    assert copied == [], f"a local file was copied into the workspace: {copied}"

    # A pointer whose version is not a digest (a trailing newline passes a `$` regex).
    honest, _ = _honest_tree(remote)
    for version in [honest + "\n", "../" + honest[3:], honest.upper(), honest[:-4] + ".tar"]:
        ws = workspace(tmp_path / f"pointer-{len(version)}-{version[-3:]!r}", remote, version)
        pull = gha(ws, "data", "pull")
        assert pull.returncode == EXIT_CONFIG, (version, pull.stdout + pull.stderr)
        _no_traceback(pull)
        assert "version" in pull.stderr and not (ws / "data/images").exists()

    # A pack index that lists an object under something that is not a digest.
    pack = b"abc"
    pack_id = hashlib.sha256(pack).hexdigest()
    (remote / pack_key(pack_id)).parent.mkdir(parents=True)
    (remote / pack_key(pack_id)).write_bytes(pack)
    (remote / index_key(pack_id)).write_bytes(
        PackIndex(pack_id, 3, (PackEntry("abc", 0, 3),)).to_bytes())
    ws = workspace(tmp_path / "index", remote, honest)
    pull = gha(ws, "data", "pull")
    assert pull.returncode != 0, pull.stdout + pull.stderr
    _no_traceback(pull)
    assert "not an object digest" in pull.stderr and not (ws / "data/images").exists()


# ----------------------------------------------------------------------- (c) malformed


_HEX = "ab" * 32


@pytest.mark.parametrize("shape", [
    pytest.param(b"{", id="not-json"),
    pytest.param(b"\xff\xfe[]", id="not-utf8"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    pytest.param({"path": "a", "sha256": _HEX, "size": 1}, id="object-not-list"),
    pytest.param(["a.txt"], id="entry-not-object"),
    pytest.param([{"path": "a.txt", "sha256": _HEX}], id="missing-key"),
    pytest.param([{"path": "a.txt", "sha256": _HEX, "size": 1, "mode": 511}], id="extra-key"),
    pytest.param([{"path": 7, "sha256": _HEX, "size": 1}], id="path-not-string"),
    pytest.param([{"path": "a.txt", "sha256": None, "size": 1}], id="digest-not-string"),
    pytest.param([{"path": "a.txt", "sha256": _HEX, "size": "1"}], id="size-string"),
    pytest.param([{"path": "a.txt", "sha256": _HEX, "size": -1}], id="size-negative"),
    pytest.param([{"path": "a.txt", "sha256": _HEX, "size": 10 ** 30}], id="size-huge"),
    pytest.param([{"path": "a.txt", "sha256": _HEX, "size": True}], id="size-bool"),
    pytest.param([{"path": "a\udc80", "sha256": _HEX, "size": 1}], id="lone-surrogate"),
    pytest.param([{"path": "a", "sha256": _HEX, "size": 1},
                  {"path": "a/b", "sha256": _HEX, "size": 1}], id="file-and-folder"),
    pytest.param([{"path": "a", "sha256": _HEX, "size": 1}] * 2, id="duplicate"),
    pytest.param("size-mismatch", id="size-not-the-objects"),
])
def test_malformed_manifests_are_a_clear_error(tmp_path: Path, remote: Path,
                                               shape: Any) -> None:
    if shape == "size-mismatch":  # a real object, but the manifest lies about its size
        data = manifest([{"path": "a.txt", "sha256": plant(remote, b"abc"), "size": 2}])
    elif isinstance(shape, bytes):
        data = shape
    else:
        data = json.dumps(shape).encode("utf-8", "surrogatepass")
    digest = plant(remote, data, tree=True)
    ws = workspace(tmp_path, remote, digest)
    pull = gha(ws, "data", "pull")
    assert pull.returncode == EXIT_INTEGRITY, pull.stdout + pull.stderr
    _no_traceback(pull)
    assert f"tree manifest {digest}" in pull.stderr and "dataset images" in pull.stderr
    assert not (ws / "data/images").exists()
    again = gha(ws, "data", "status")  # nothing bad was left behind to trip over
    assert "Traceback" not in again.stdout + again.stderr


# ----------------------------------------------------------------------- (d) symlinks


def _outside(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    outside = tmp_path / "outside"
    (outside / "images/sub").mkdir(parents=True)
    (outside / "images/keep.txt").write_bytes(b"precious\n")
    (outside / "images/sub/x.txt").write_bytes(b"precious too\n")
    (outside / ".gitignore").write_bytes(b"# not yours\n")
    return outside, _files_under(outside)


@pytest.mark.parametrize("attack", ["folder-above", "dataset-folder", "subfolder", "pull-to",
                                    "add-gitignore"])
def test_symlinks_do_not_lead_writes_out_of_the_workspace(
        tmp_path: Path, remote: Path, attack: str) -> None:
    outside, before = _outside(tmp_path)
    digest, _ = _honest_tree(remote)
    args = ["data", "pull"]
    if attack == "folder-above":  # link/images where link -> outside
        ws = workspace(tmp_path, remote, digest, path="link/images",
                       pointer="images.lock.yaml")
        (ws / "link").symlink_to(outside)
    elif attack == "dataset-folder":  # data/images -> outside/images
        ws = workspace(tmp_path, remote, digest)
        (ws / "data/images").symlink_to(outside / "images")
    elif attack == "subfolder":  # data/images/sub -> outside/images/sub, the tree has sub/
        ws = workspace(tmp_path, remote, digest)
        (ws / "data/images").mkdir()
        (ws / "data/images/sub").symlink_to(outside / "images/sub")
    elif attack == "pull-to":  # --to out, where out -> outside
        ws = workspace(tmp_path, remote, digest)
        (ws / "out").symlink_to(outside)
        args += ["--to", "out"]
    else:  # data add writes data/.gitignore, a link to a file outside
        ws = tmp_path / "ws"
        (ws / "data/images").mkdir(parents=True)
        (ws / "mlops.yaml").write_text(STAGES)
        (ws / "data/images/a.txt").write_bytes(b"abc")
        (ws / "data/.gitignore").symlink_to(outside / ".gitignore")
        args = ["data", "add", "data/images"]
    proc = gha(ws, *args)
    assert proc.returncode == EXIT_UNSAFE_PATH, proc.stdout + proc.stderr
    _no_traceback(proc)
    assert "outside the workspace" in proc.stderr or "symlink" in proc.stderr
    assert _files_under(outside) == before
    assert sorted(p.name for p in outside.iterdir()) == [".gitignore", "images"]


def test_data_add_never_copies_a_file_a_link_brings_in_from_outside(tmp_path: Path) -> None:
    """What `data add` walks is cached and pushed: a link in the data folder to a file outside
    the workspace (a credentials file, say) is refused before anything is cached, while a link
    to a file inside the workspace is taken as that file."""
    secret = tmp_path / "home/.aws/credentials"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(SECRET)
    ws = tmp_path / "ws"
    (ws / "data/images").mkdir(parents=True)
    (ws / "mlops.yaml").write_text(STAGES)
    (ws / "data/images/a.txt").write_bytes(b"abc")
    (ws / "README.md").write_bytes(b"inside\n")
    (ws / "data/images/readme").symlink_to(ws / "README.md")
    (ws / "data/images/creds").symlink_to(secret)
    proc = gha(ws, "data", "add", "data/images")
    assert proc.returncode == EXIT_UNSAFE_PATH, proc.stdout + proc.stderr
    _no_traceback(proc)
    assert "creds" in proc.stderr and "outside the workspace" in proc.stderr
    state = ws / ".gha-mlops"
    cached = [p.read_bytes() for p in state.rglob("*") if p.is_file()] if state.exists() else []
    assert not any(SECRET.strip() in blob for blob in cached)
    assert not (ws / "data/images.lock.yaml").exists()

    (ws / "data/images/creds").unlink()
    proc = gha(ws, "data", "add", "data/images")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "files: 2" in (ws / "data/images.lock.yaml").read_text()
