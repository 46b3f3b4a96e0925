"""`gha-mlops data` through the real CLI with a shared-directory remote."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """\
remotes:
  nas:
    url: ../remote
stages:
  count:
    cmd: ls data/images | wc -l > count.txt
    deps: [data:images]
    outs: [count.txt]
"""


def gha(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "CI")}
    return subprocess.run([sys.executable, "-m", "gha_mlops", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture
def pushed(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace whose dataset (300 small files and one 5 MB file) is pushed to ../remote."""
    src = tmp_path / "src"
    (src / "data/images").mkdir(parents=True)
    (tmp_path / "remote").mkdir()
    (src / "mlops.yaml").write_text(CONFIG)
    for i in range(300):
        (src / f"data/images/{i:03d}.png").write_bytes(os.urandom(2000))
    (src / "data/images/big.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    assert gha(src, "data", "add", "data/images").returncode == 0
    push = gha(src, "data", "push")
    assert push.returncode == 0, push.stderr
    assert "pushed 302 objects" in push.stdout
    return src, tmp_path / "remote"


def _clone(src: Path, dest: Path) -> Path:
    (dest / "data").mkdir(parents=True)
    shutil.copy(src / "mlops.yaml", dest / "mlops.yaml")
    shutil.copy(src / "data/images.lock.yaml", dest / "data/images.lock.yaml")
    return dest


def test_push_is_deduplicated_and_pull_restores_the_exact_bytes(
        pushed: tuple[Path, Path], tmp_path: Path) -> None:
    src, _remote = pushed
    again = gha(src, "data", "push")
    assert again.returncode == 0 and "pushed 0 objects" in again.stdout
    other = _clone(src, tmp_path / "other")
    pull = gha(other, "data", "pull")
    assert pull.returncode == 0, pull.stderr
    for f in (src / "data/images").iterdir():
        assert (other / "data/images" / f.name).read_bytes() == f.read_bytes()
    assert "workspace: ok" in gha(other, "data", "status").stdout
    run = gha(other, "run")
    assert run.returncode == 0, run.stderr
    assert (other / "count.txt").read_text().strip() == "301"


def test_pull_to_another_directory(pushed: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = pushed
    other = _clone(src, tmp_path / "other")
    pull = gha(other, "data", "pull", "images", "--to", str(tmp_path / "elsewhere"))
    assert pull.returncode == 0, pull.stderr
    assert (tmp_path / "elsewhere/images/big.bin").stat().st_size == 5 * 1024 * 1024
    assert not (other / "data/images").exists()


def test_corrupted_remote_is_rejected_and_nothing_enters_the_cache(
        pushed: tuple[Path, Path], tmp_path: Path) -> None:
    src, remote = pushed
    packs = sorted(remote.rglob("*.pack"))
    assert packs
    for pack in packs:  # flip bytes in the middle of every pack
        data = bytearray(pack.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 64] = bytes(64)
        os.chmod(pack, 0o644)
        pack.write_bytes(bytes(data))
    other = _clone(src, tmp_path / "other")
    pull = gha(other, "data", "pull")
    assert pull.returncode != 0
    assert "sha256" in pull.stderr and "Traceback" not in pull.stderr
    cache = other / ".gha-mlops/cache/objects"
    from gha_mlops.store.hashing import sha256_file

    for obj in (p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []:
        name = obj.parent.name + obj.name
        if not name.endswith(".dir") and not obj.name.startswith("."):
            assert sha256_file(obj) == name  # whatever did enter is intact


def test_object_deleted_from_the_remote_is_a_clear_error(
        pushed: tuple[Path, Path], tmp_path: Path) -> None:
    src, remote = pushed
    big = [p for p in remote.rglob("*") if p.is_file() and p.stat().st_size >= 5 * 1024 * 1024]
    assert big, "the 5 MB file is stored as a single object"
    big[0].unlink()
    other = _clone(src, tmp_path / "other")
    pull = gha(other, "data", "pull")
    assert pull.returncode != 0 and "Traceback" not in pull.stderr
    assert "error: " in pull.stderr


def test_unknown_remote_and_missing_remotes(pushed: tuple[Path, Path]) -> None:
    src, _ = pushed
    proc = gha(src, "data", "push", "--remote", "nope")
    assert proc.returncode == 2 and "no remote named 'nope'" in proc.stderr
    (src / "mlops.yaml").write_text(CONFIG.split("stages:")[0].replace("remotes:", "x:")
                                    .split("x:")[0] + "stages:" + CONFIG.split("stages:")[1])
    proc = gha(src, "data", "push")
    assert proc.returncode == 2 and "no remotes are declared" in proc.stderr


def test_gc_keeps_referenced_objects(pushed: tuple[Path, Path]) -> None:
    src, _ = pushed
    (src / "data/images/000.png").write_bytes(b"new version")
    assert gha(src, "data", "add", "data/images").returncode == 0
    gc = gha(src, "data", "gc")
    assert gc.returncode == 0 and "removed 2 objects" in gc.stdout  # old file + old manifest
    assert "every byte matches" in gha(src, "data", "verify").stdout


def test_status_counts_what_the_remote_lacks(pushed: tuple[Path, Path]) -> None:
    src, _ = pushed
    assert "remote: has it" in gha(src, "data", "status", "--remote").stdout
    (src / "data/images/new.png").write_bytes(b"not pushed yet")
    assert gha(src, "data", "add", "data/images").returncode == 0
    out = gha(src, "data", "status", "--remote", "nas").stdout
    assert "remote: 2 objects not pushed" in out  # the new file and the new manifest


@pytest.fixture
def http_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A file served over HTTP on loopback (a public dataset's download link)."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "table.csv").write_bytes(b"a,b\n" + b"1,2\n" * 5000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served / "table.csv", f"http://127.0.0.1:{server.server_address[1]}/table.csv"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_file_pinned_to_its_download_url_is_pulled_from_there(
        tmp_path: Path, http_file: tuple[Path, str]) -> None:
    original, url = http_file
    src = tmp_path / "a"
    (src / "data").mkdir(parents=True)
    (src / "mlops.yaml").write_text("stages:\n  s:\n    cmd: 'true'\n")
    shutil.copy(original, src / "data/table.csv")
    added = gha(src, "data", "add", "data/table.csv", "--source", url)
    assert added.returncode == 0, added.stderr
    assert f"source: {url}" in (src / "data/table.csv.lock.yaml").read_text()
    other = tmp_path / "b"
    (other / "data").mkdir(parents=True)
    shutil.copy(src / "mlops.yaml", other / "mlops.yaml")
    shutil.copy(src / "data/table.csv.lock.yaml", other / "data/table.csv.lock.yaml")
    pull = gha(other, "data", "pull")  # no remote declared: the source URL serves it
    assert pull.returncode == 0, pull.stderr
    assert (other / "data/table.csv").read_bytes() == original.read_bytes()
    # The server now serves other bytes: the pin rejects them.
    original.write_bytes(b"tampered")
    third = tmp_path / "c"
    shutil.copytree(other, third, ignore=shutil.ignore_patterns(".gha-mlops", "table.csv"))
    bad = gha(third, "data", "pull")
    assert bad.returncode != 0 and "sha256" in bad.stderr and "Traceback" not in bad.stderr


def test_ci_logs_get_one_line_per_dataset_with_counts_and_throughput(
        pushed: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = pushed
    other = _clone(src, tmp_path / "other")
    env = {**os.environ, "CI": "true"}
    pull = subprocess.run([sys.executable, "-m", "gha_mlops", "data", "pull"], cwd=other,
                          env=env, capture_output=True, text=True, check=False, timeout=300)
    assert pull.returncode == 0, pull.stderr
    line = next(x for x in pull.stdout.splitlines() if x.startswith("images: "))
    assert re.fullmatch(r"images: fetched 302 objects \(5\.9 MB\) from nas in [\d.]+ s "
                        r"\([\d.]+ [KMG]?B/s\), \d+ requests", line), line
    assert "\r" not in pull.stdout + pull.stderr  # nothing redrawn in a log
    again = gha(other, "data", "fetch")
    assert "images: already in the cache" in again.stdout


def test_run_fetches_a_pinned_dataset_the_cache_lacks(pushed: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    src, _ = pushed
    other = _clone(src, tmp_path / "other")
    run = gha(other, "run")
    assert run.returncode == 0, run.stderr
    assert "fetched dataset images" in run.stdout and "302 objects" in run.stdout
    assert (other / "count.txt").read_text().strip() == "301"
    record = json.loads(gha(other, "runs", "show", "latest", "--json").stdout)
    assert record["datasets"]["images"]["remote"] == {"name": "nas", "url": "../remote"}


def test_run_without_the_data_or_a_remote_says_what_to_do(pushed: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    src, _ = pushed
    other = _clone(src, tmp_path / "other")
    (other / "mlops.yaml").write_text(CONFIG.replace("remotes:\n  nas:\n    url: ../remote\n",
                                                     ""))
    run = gha(other, "run")
    assert run.returncode == 1
    assert "declares no remote" in run.stderr and "gha-mlops data pull images" in run.stderr


def test_a_broken_mlops_yaml_is_reported_by_pull_not_hidden(pushed: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    src, _ = pushed
    other = _clone(src, tmp_path / "other")
    config = other / "mlops.yaml"
    config.write_text(config.read_text().replace("    outs: [count.txt]\n",
                                                 "    outz: [count.txt]\n"))
    pull = gha(other, "data", "pull")
    assert pull.returncode == 2
    assert "mlops.yaml:" in pull.stderr and "outz" in pull.stderr
    assert "no remote is declared" not in pull.stderr
