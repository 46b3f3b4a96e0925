"""The data service owns its lock and takes its object stores as a port; config finds no
datasets by itself (issue 13: thin data commands, config below data)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gha_mlops.config import load_pipeline
from gha_mlops.config.model import Remote
from gha_mlops.data import service
from gha_mlops.data.pointer import find_datasets
from gha_mlops.data.ports import ObjectStore
from gha_mlops.data.service import (
    Workspace,
    add,
    checkout_all,
    fetch_named,
    push_named,
    status_named,
)
from gha_mlops.data.stores import MemoryStore
from gha_mlops.errors import ConfigError, WorkspaceBusyError
from gha_mlops.pipeline import gc as pipeline_gc
from gha_mlops.store.lock import WorkspaceLock

PIPELINE = """\
remotes:
  shared:
    url: ../remote
stages:
  count:
    cmd: ls data/images > count.txt
    deps: [data:images]
    outs: [count.txt]
"""


def _workspace(root: Path) -> Workspace:
    (root / "data/images").mkdir(parents=True)
    for i in range(3):
        (root / f"data/images/{i}.txt").write_text(f"image {i}\n")
    (root / "mlops.yaml").write_text(PIPELINE)
    return Workspace(root)


class _Opener:
    """A StoreOpener handing out one MemoryStore; remembers what it was asked and whether
    each store it opened was closed."""

    def __init__(self) -> None:
        self.store = MemoryStore("memory://shared")
        self.asked: list[tuple[str, Path]] = []
        self.closed = 0

    def __call__(self, remote: Remote, *, root: Path) -> ObjectStore:
        self.asked.append((remote.name, root))
        opener = self

        class Counted(MemoryStore):
            def close(self) -> None:
                opener.closed += 1

        store = Counted(self.store.url)
        store.objects = self.store.objects  # one remote, however often it is opened
        return store


def test_transfers_go_through_the_store_the_caller_hands_in_and_close_it(
        tmp_path: Path) -> None:
    opener = _Opener()
    src = _workspace(tmp_path / "src")
    add(src, src.root / "data/images")
    pushed = push_named(src, [], None, opener=opener)
    assert pushed.stats.objects == 4 and pushed.remote and pushed.remote.name == "shared"
    assert opener.asked == [("shared", src.root)] and opener.closed == 1
    assert not (tmp_path / "remote").exists()  # the real adapter never ran
    rows = status_named(src, [], remote="", opener=opener)
    assert rows[0].remote_missing == 0 and opener.closed == 2

    dst = _workspace(tmp_path / "dst")
    (dst.root / "data/images.lock.yaml").write_bytes(
        (src.root / "data/images.lock.yaml").read_bytes())
    fetched = fetch_named(dst, ["images"], None, opener=opener)
    assert fetched.stats.objects == 4 and opener.closed == 3
    assert [ds.name for ds in fetched.datasets] == ["images"]


_Operation = Callable[[Workspace], object]
_OPERATIONS: dict[str, _Operation] = {
    "add": lambda ws: add(ws, ws.root / "data/images"),
    "checkout": lambda ws: checkout_all(ws, ws.datasets().values()),
    "gc": lambda ws: pipeline_gc.gc(ws),
}


@pytest.mark.parametrize("operation", sorted(_OPERATIONS))
def test_data_operations_take_the_workspace_lock_themselves(
        operation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = _workspace(tmp_path / "ws")
    if operation != "add":
        add(ws, ws.root / "data/images")
    monkeypatch.setattr(service, "LOCK_WAIT", 0.0)  # fail at once rather than wait 60 s
    monkeypatch.setattr(pipeline_gc, "LOCK_WAIT", 0.0)
    with WorkspaceLock(ws.open_state(), what="run"):
        before = _tree(ws.root)
        with pytest.raises(WorkspaceBusyError, match="gha-mlops run"):
            _OPERATIONS[operation](ws)
        assert _tree(ws.root) == before  # nothing was written while a run held the workspace


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_checkout_holds_the_lock_while_it_writes(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    add(ws, ws.root / "data/images")
    held = []

    def placed(ds: object, dest: Path) -> None:
        with pytest.raises(WorkspaceBusyError):
            WorkspaceLock(ws.state).__enter__()
        held.append(dest)

    checkout_all(ws, ws.datasets().values(), to=ws.root / "copy", placed=placed)
    assert held == [ws.root / "copy/images"]


def test_config_checks_data_deps_only_with_the_finder_it_is_handed(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    config = ws.root / "mlops.yaml"
    # Without a finder, config looks for no dataset (it sits below data and imports none).
    assert load_pipeline(config).datasets is None
    with pytest.raises(ConfigError, match="no dataset named 'images'") as info:
        load_pipeline(config, datasets=find_datasets)
    assert info.value.line == 7 and "pin one with `gha-mlops data add" in (info.value.hint or "")
    add(ws, ws.root / "data/images")
    assert set(load_pipeline(config, datasets=find_datasets).datasets or {}) == {"images"}
    code = ("import sys; from pathlib import Path; from gha_mlops.config import load_pipeline; "
            f"load_pipeline(Path({str(config)!r})); "
            "print(sorted(m for m in sys.modules if m.startswith('gha_mlops.data')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
