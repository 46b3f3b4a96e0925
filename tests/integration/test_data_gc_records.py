"""`data gc` refuses to run on a run record or run-cache entry it cannot read.

gc keeps what recent run records and run-cache entries name. One it skipped would let gc
delete the objects it names, so each class of unreadable file (not JSON, not the form
gha-mlops writes, a digest that is not one) stops gc, real and dry run alike, before anything
is deleted, with an error that names the file and says what to do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CONFIG = """\
stages:
  make:
    cmd: echo made > out.txt
    outs: [out.txt]
"""

Breakage = Callable[[Path], None]


def gha(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "CI")}
    return subprocess.run([sys.executable, "-m", "gha_mlops", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False, timeout=120)


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_bytes())
    change(doc)
    path.write_text(json.dumps(doc))


def _first_output(doc: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = doc["outputs"]["out.txt"]
    return entry


# Run records (.gha-mlops/runs/<id>.json), one breakage per class.
RECORD_BREAKAGES: dict[str, Breakage] = {
    "not JSON (cut short)": lambda p: p.write_bytes(p.read_bytes()[:40]),
    "not UTF-8": lambda p: p.write_bytes(b'{"schema": "\xff"}'),
    "not an object": lambda p: p.write_text("[]"),
    "outputs of the wrong type": lambda p: _edit_json(
        p, lambda d: d.update(outputs=[d["outputs"]])),
    "an output without sha256": lambda p: _edit_json(
        p, lambda d: _first_output(d).pop("sha256")),
    "a digest that is not lowercase hex": lambda p: _edit_json(
        p, lambda d: _first_output(d).update(sha256=_first_output(d)["sha256"].upper())),
    "a digest that is a path": lambda p: _edit_json(
        p, lambda d: _first_output(d).update(sha256="../" + _first_output(d)["sha256"])),
    "another record schema": lambda p: _edit_json(
        p, lambda d: d.update(schema="gha-mlops/run-record@2")),
}

# Run-cache entries (.gha-mlops/cache/runs/ab/<signature>.json).
ENTRY_BREAKAGES: dict[str, Breakage] = {
    "not JSON": lambda p: p.write_bytes(b"{\"outs\": {"),
    "no outs object": lambda p: _edit_json(p, lambda d: d.update(outs="out.txt")),
    "a digest that is not one": lambda p: _edit_json(
        p, lambda d: d.update(outs={k: v[:-1] + "g" for k, v in d["outs"].items()})),
    # A FIFO would block a plain read forever: gc must refuse it, not hang.
    "not a regular file": lambda p: (p.unlink(), os.mkfifo(p)),
    "nested deeper than the parser goes": lambda p: p.write_text("[" * 200_000 + "]" * 200_000),
}


@pytest.fixture
def ran(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace after one run: ``(workspace, the cache object of out.txt)``."""
    (tmp_path / "mlops.yaml").write_text(CONFIG)
    run = gha(tmp_path, "run", "-q")
    assert run.returncode == 0, run.stderr
    record = json.loads(next(_records(tmp_path)).read_bytes())
    digest = record["outputs"]["out.txt"]["sha256"]
    obj = tmp_path / ".gha-mlops/cache/objects" / digest[:2] / digest[2:]
    assert obj.is_file()
    return tmp_path, obj


def _records(ws: Path) -> Any:
    return (p for p in (ws / ".gha-mlops/runs").glob("*.json") if p.name != "index.json")


def _entries(ws: Path) -> list[Path]:
    return list((ws / ".gha-mlops/cache/runs").glob("*/*.json"))


def _refuses(ws: Path, obj: Path, broken: Path, hint: str) -> None:
    for args in (("data", "gc", "--dry-run"), ("data", "gc")):
        proc = gha(ws, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert str(broken) in proc.stderr, proc.stderr
        assert hint in proc.stderr and "nothing was deleted" in proc.stderr, proc.stderr
        assert "removed" not in proc.stdout
        assert obj.is_file(), "gc deleted an object the unreadable file names"


@pytest.mark.parametrize("breakage", RECORD_BREAKAGES, ids=list(RECORD_BREAKAGES))
def test_an_unreadable_run_record_stops_gc_before_it_deletes(
        ran: tuple[Path, Path], breakage: str) -> None:
    ws, obj = ran
    for entry in _entries(ws):  # the record alone names the output now
        entry.unlink()
    record = next(_records(ws))
    RECORD_BREAKAGES[breakage](record)
    _refuses(ws, obj, record, "move it out of .gha-mlops/runs/ or delete it")
    record.unlink()  # done as the hint says: gc runs again
    proc = gha(ws, "data", "gc")
    assert proc.returncode == 0 and "removed 1 objects" in proc.stdout, proc.stdout


@pytest.mark.parametrize("breakage", ENTRY_BREAKAGES, ids=list(ENTRY_BREAKAGES))
def test_an_unreadable_run_cache_entry_stops_gc_before_it_deletes(
        ran: tuple[Path, Path], breakage: str) -> None:
    ws, obj = ran
    for record in _records(ws):  # the run-cache entry alone names the output now
        record.unlink()
    (entry,) = _entries(ws)
    ENTRY_BREAKAGES[breakage](entry)
    _refuses(ws, obj, entry, "delete it (the stage it remembers then runs again")


def test_records_past_keep_days_are_not_read(ran: tuple[Path, Path]) -> None:
    """gc reads only the records it keeps objects for: an old damaged one does not stop it."""
    ws, obj = ran
    for entry in _entries(ws):
        entry.unlink()
    record = next(_records(ws))
    record.write_text("not json")
    os.utime(record, (1_000_000_000, 1_000_000_000))
    proc = gha(ws, "data", "gc")
    assert proc.returncode == 0 and "removed 1 objects" in proc.stdout, proc.stderr
    assert not obj.exists()
