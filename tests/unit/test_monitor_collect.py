"""monitor collect: labelled rows of a window into a directory dataset, once each, nothing lost."""

from __future__ import annotations

import calendar
import csv
import gzip
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.config.model import MonitorModel, Remote
from gha_mlops.data import service
from gha_mlops.data.ports import ObjectStore
from gha_mlops.data.service import Workspace, add
from gha_mlops.data.stores import MemoryStore
from gha_mlops.errors import RemoteError, WorkspaceBusyError
from gha_mlops.monitor.collect import CollectError, collect
from gha_mlops.monitor.predlog_writer import BatchWriter, hour_path, write_feedback
from gha_mlops.store.lock import WorkspaceLock

SCHEMA: dict[str, Any] = {"inputs": {"x": ["FP32", [-1, 2]], "c": ["BYTES", [-1]]},
                          "outputs": {"y": ["INT64", [-1]]}}
T0 = float(calendar.timegm((2026, 3, 10, 12, 0, 0)))
MODEL = MonitorModel(name="m", log="logs")
PIPELINE = ("remotes:\n  shared:\n    url: ../remote\nstages:\n  noop:\n    cmd: \"true\"\n"
            "    outs: [o.txt]\n")


class _Opener:
    """A StoreOpener over one MemoryStore; ``fail`` opens that fail (a remote that is down)."""

    def __init__(self, fail: int = 0) -> None:
        self.store = MemoryStore("memory://shared")
        self.fail = fail

    def __call__(self, remote: Remote, *, root: Path) -> ObjectStore:
        if self.fail:
            self.fail -= 1
            raise RemoteError(f"remote {remote.name} cannot be reached")
        store = MemoryStore(self.store.url)
        store.objects = self.store.objects
        return store


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    (root / "data/feedback").mkdir(parents=True)
    (root / "mlops.yaml").write_text(PIPELINE)
    workspace = Workspace(root)
    add(workspace, root / "data/feedback")
    return workspace


def log(root: Path, rows: list[tuple[str, float]], *, version: str = "v1",
        schema: dict[str, Any] = SCHEMA) -> None:
    with BatchWriter(root, "m", version, schema, max_rows=1000) as w:
        for rid, t in rows:  # values follow from the row: the same row, the same values
            n = int(rid[1:]) if rid[1:].isdigit() else len(rid)
            w.add(rid, {"x": [float(n), 0.5], "c": f"k{n % 3}"}, {"y": n % 2}, t)


def labels(root: Path, items: list[tuple[str, Any]], t: float) -> None:
    write_feedback(root, "m", [(rid, label, t) for rid, label in items])


def run(ws: Workspace, root: Path, *, opener: _Opener | None = None, **kw: Any) -> Any:
    kw.setdefault("start", T0)
    kw.setdefault("end", T0 + 3600)
    kw.setdefault("labels_until", T0 + 7 * 86400)
    return collect(ws, MODEL, root / "logs", into="feedback", opener=opener or _Opener(),
                   **kw)


def rows_of(ws: Workspace) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for path in sorted((ws.root / "data/feedback").glob("*.csv")):
        with path.open(newline="") as fh:
            out += list(csv.DictReader(fh))
    return out


def test_labelled_rows_become_one_csv_file_and_a_pushed_dataset_version(
        ws: Workspace, tmp_path: Path) -> None:
    log(tmp_path / "logs", [(f"r{i}", T0 + 10 * i) for i in range(10)])
    labels(tmp_path / "logs", [("r3", "cat"), ("r1", 1), ("r7", 2.5), ("zz", "no row")],
           T0 + 5000)
    before = ws.datasets()["feedback"].version
    opener = _Opener()
    res = run(ws, tmp_path, opener=opener)
    assert (res.rows, res.window_rows, res.labelled, res.already, res.left) == (3, 10, 3, 0, 0)
    assert res.file == "data/feedback/m-20260310T120000Z-20260310T130000Z-" + \
        res.file.rsplit("-", 1)[1]
    text = (ws.root / res.file).read_text()
    assert text.splitlines() == [
        "id,t,version,x[0],x[1],c,label",
        f"r1,{T0 + 10!r},v1,1.0,0.5,k1,1",
        f"r3,{T0 + 30!r},v1,3.0,0.5,k0,cat",
        f"r7,{T0 + 70!r},v1,7.0,0.5,k1,2.5"]
    # The pointer names the new version, and the remote has every object of it.
    assert res.previous == before != res.version == ws.datasets()["feedback"].version
    assert res.remote == "shared" and res.uploaded >= 2
    [status] = service.status_named(ws, ["feedback"], remote="", opener=opener)
    assert status.remote_missing == 0 and status.workspace == "ok"


def test_a_second_collect_of_the_window_adds_nothing(ws: Workspace, tmp_path: Path) -> None:
    log(tmp_path / "logs", [(f"r{i}", T0 + i) for i in range(5)])
    labels(tmp_path / "logs", [(f"r{i}", i) for i in range(5)], T0 + 100)
    opener = _Opener()
    first = run(ws, tmp_path, opener=opener)
    again = run(ws, tmp_path, opener=opener)
    assert (first.rows, again.rows, again.already, again.file) == (5, 0, 5, None)
    assert again.version == first.version and again.uploaded == 0
    assert len(list((ws.root / "data/feedback").glob("*.csv"))) == 1


def test_labels_that_arrive_late_are_collected_by_a_later_collect(
        ws: Workspace, tmp_path: Path) -> None:
    log(tmp_path / "logs", [(f"r{i}", T0 + i) for i in range(6)])
    labels(tmp_path / "logs", [("r0", "a"), ("r1", "b")], T0 + 3700)  # after the window
    first = run(ws, tmp_path, labels_until=T0 + 4000)
    labels(tmp_path / "logs", [("r4", "e"), ("r1", "B")], T0 + 90000)  # a day later
    second = run(ws, tmp_path, labels_until=T0 + 100000)
    assert (first.rows, second.rows, second.already) == (2, 1, 2)
    assert [(r["id"], r["label"]) for r in rows_of(ws)] == [("r0", "a"), ("r1", "b"),
                                                            ("r4", "e")]


def test_the_same_rows_give_the_same_bytes(tmp_path: Path) -> None:
    bodies = []
    for n in range(2):
        root = tmp_path / f"w{n}"
        (root / "data/feedback").mkdir(parents=True)
        (root / "mlops.yaml").write_text(PIPELINE)
        workspace = Workspace(root)
        add(workspace, root / "data/feedback")
        # Two writers, in two orders: the file sorts its rows by time and id.
        rows = [(f"r{i}", T0 + i // 2) for i in range(8)]
        log(root / "logs", rows[::-1] if n else rows)
        labels(root / "logs", [(f"r{i}", i) for i in range(8)], T0 + 10)
        res = run(workspace, root)
        bodies.append((res.file.rsplit("/", 1)[1], (root / res.file).read_bytes(),
                       res.version))
    assert bodies[0] == bodies[1]


def test_hostile_log_and_feedback_are_skipped_counted_and_labels_round_trip(
        ws: Workspace, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    log(logs, [("a", T0 + 1), ("b", T0 + 2), ("c", T0 + 3)])
    folder = logs / "m/v1" / hour_path(T0)
    good = next(folder.iterdir()).read_bytes()
    lines = gzip.decompress(good).splitlines(keepends=True)
    (folder / "0000000000002-0000001-bbbbbbbb-000001.jsonl.gz").write_bytes(gzip.compress(
        lines[0] + b"{not json\n" + b'{"id": 5}\n' + lines[1].replace(b'"a"', b'"d"')))
    (folder / "0000000000003-0000001-cccccccc-000001.jsonl.gz").write_bytes(b"not gzip")
    fb = logs / "m/feedback" / hour_path(T0 + 100)
    fb.mkdir(parents=True)
    hostile = 'x,"y"\nz\r\x00=cmd()'
    (fb / "h.jsonl").write_text(
        json.dumps({"id": "a", "label": hostile, "t": T0 + 100}) + "\n"
        + "garbage\n" + '{"id": "b", "label": {"no": 1}, "t": %r}\n' % (T0 + 100)
        + '{"id": "d", "label": 7, "t": %r}\n' % (T0 + 100))
    res = run(ws, tmp_path)
    assert res.log_skipped == {"bad-json": 1, "bad-id": 1, "file-corrupt": 1}
    assert res.feedback_skipped == {"bad-json": 1, "bad-label": 1}
    assert [(r["id"], r["label"]) for r in rows_of(ws)] == [("a", hostile), ("d", "7")]
    assert run(ws, tmp_path).rows == 0  # the hostile label's file reads back for the dedupe


def test_only_directory_datasets_that_exist_take_rows(ws: Workspace, tmp_path: Path) -> None:
    (ws.root / "data/one.csv").write_text("a,b\n")
    add(ws, ws.root / "data/one.csv")
    with pytest.raises(CollectError, match=r"'one'.*single file") as info:
        collect(ws, MODEL, tmp_path / "logs", start=T0, end=T0 + 1, into="one")
    assert "data add" in (info.value.hint or "")
    with pytest.raises(CollectError, match="no dataset named 'nope'") as info:
        collect(ws, MODEL, tmp_path / "logs", start=T0, end=T0 + 1, into="nope")
    assert "mkdir -p data/nope && gha-mlops data add data/nope" in (info.value.hint or "")


def test_a_failed_add_keeps_the_rows_and_a_rerun_finishes(
        ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log(tmp_path / "logs", [(f"r{i}", T0 + i) for i in range(4)])
    labels(tmp_path / "logs", [(f"r{i}", i) for i in range(4)], T0 + 10)
    before = ws.datasets()["feedback"].version
    monkeypatch.setattr(service, "LOCK_WAIT", 0.0)
    with WorkspaceLock(ws.open_state(), what="run"), \
            pytest.raises(WorkspaceBusyError) as info:
        run(ws, tmp_path)
    assert any("kept in data/feedback/m-" in n for n in info.value.notes)
    assert len(rows_of(ws)) == 4 and ws.datasets()["feedback"].version == before
    done = run(ws, tmp_path)
    assert (done.rows, done.already) == (0, 4) and done.version != before
    assert done.version == ws.datasets()["feedback"].version


def test_a_failed_push_keeps_the_rows_and_a_rerun_pushes(ws: Workspace,
                                                         tmp_path: Path) -> None:
    log(tmp_path / "logs", [(f"r{i}", T0 + i) for i in range(4)])
    labels(tmp_path / "logs", [(f"r{i}", i) for i in range(4)], T0 + 10)
    opener = _Opener(fail=1)
    with pytest.raises(RemoteError) as info:
        run(ws, tmp_path, opener=opener)
    assert any("push failed" in n for n in info.value.notes)
    pinned = ws.datasets()["feedback"].version
    assert not opener.store.objects and len(rows_of(ws)) == 4
    done = run(ws, tmp_path, opener=opener)
    assert (done.rows, done.version, done.remote) == (0, pinned, "shared")
    assert done.uploaded >= 2 and opener.store.objects


def test_no_push_leaves_the_remote_alone(ws: Workspace, tmp_path: Path) -> None:
    log(tmp_path / "logs", [("r", T0)])
    labels(tmp_path / "logs", [("r", 1)], T0)
    opener = _Opener()
    res = run(ws, tmp_path, opener=opener, push=False)
    assert (res.rows, res.remote, res.uploaded) == (1, None, 0) and not opener.store.objects


def test_max_rows_bounds_a_collect_and_the_next_takes_the_rest(
        ws: Workspace, tmp_path: Path) -> None:
    log(tmp_path / "logs", [(f"r{i:02d}", T0 + i) for i in range(10)])
    labels(tmp_path / "logs", [(f"r{i:02d}", i) for i in range(10)], T0 + 20)
    first = run(ws, tmp_path, max_rows=4)
    second = run(ws, tmp_path, max_rows=4)
    third = run(ws, tmp_path, max_rows=4)
    assert [(r.rows, r.left) for r in (first, second, third)] == [(4, 6), (4, 2), (2, 0)]
    assert sorted(r["id"] for r in rows_of(ws)) == [f"r{i:02d}" for i in range(10)]
    with pytest.raises(Exception, match="out of range"):
        run(ws, tmp_path, max_rows=0)


def test_every_version_is_collected_and_named_per_row(ws: Workspace, tmp_path: Path) -> None:
    log(tmp_path / "logs", [("a", T0 + 1), ("b", T0 + 3)], version="v1")
    log(tmp_path / "logs", [("c", T0 + 2), ("a", T0 + 4)], version="v2")
    labels(tmp_path / "logs", [("a", 0), ("b", 1), ("c", 2)], T0 + 10)
    res = run(ws, tmp_path)
    assert res.versions == ("v1", "v2")
    # "a" was logged twice (a retried request): once is kept, the first.
    assert [(r["id"], r["version"]) for r in rows_of(ws)] == [("a", "v1"), ("c", "v2"),
                                                              ("b", "v1")]
    assert (res.rows, res.already) == (3, 1)


def test_a_damaged_file_of_an_earlier_collect_stops_the_collect(
        ws: Workspace, tmp_path: Path) -> None:
    log(tmp_path / "logs", [("r", T0)])
    labels(tmp_path / "logs", [("r", 1)], T0)
    bad = ws.root / "data/feedback/m-20260101T000000Z-20260102T000000Z-0123456789ab.csv"
    bad.write_text("not,a,header\nr,1\n")
    with pytest.raises(CollectError, match="does not start with the header") as info:
        run(ws, tmp_path)
    assert "restore" in (info.value.hint or "")
    bad.write_text('id,t\n"r\n')  # an unterminated quote
    with pytest.raises(CollectError, match="not a readable CSV"):
        run(ws, tmp_path)
    assert not list((ws.root / "data/feedback").glob("m-2026031*.csv"))


def test_a_missing_folder_is_fetched_before_rows_are_appended(
        ws: Workspace, tmp_path: Path) -> None:
    log(tmp_path / "logs", [("a", T0 + 1), ("b", T0 + 2)])
    labels(tmp_path / "logs", [("a", 1)], T0 + 5)
    opener = _Opener()
    run(ws, tmp_path, opener=opener)
    # A fresh clone: the pointer, no data, an empty cache.
    shutil.rmtree(ws.root / "data/feedback")
    shutil.rmtree(ws.state / "cache")
    ws = Workspace(ws.root)
    labels(tmp_path / "logs", [("b", 2)], T0 + 6)
    res = run(ws, tmp_path, opener=opener)
    assert (res.rows, res.already) == (1, 1)
    assert [r["id"] for r in rows_of(ws)] == ["a", "b"]


def test_a_feature_named_like_a_fixed_column_is_renamed(ws: Workspace,
                                                        tmp_path: Path) -> None:
    schema = {"inputs": {"t": ["FP64", [-1]], "label": ["BOOL", [-1]]},
              "outputs": {"y": ["INT64", [-1]]}}
    with BatchWriter(tmp_path / "logs", "m", "v1", schema) as w:
        w.add("r", {"t": 1.5, "label": True}, {"y": 1}, T0)
    labels(tmp_path / "logs", [("r", False)], T0)
    res = run(ws, tmp_path)
    text = (ws.root / res.file).read_text()
    assert list(csv.reader(io.StringIO(text))) == [
        ["id", "t", "version", "input:t", "input:label", "label"],
        ["r", repr(T0), "v1", "1.5", "True", "False"]]


def test_a_folder_older_than_its_pointer_gets_the_pinned_files_back_first(
        ws: Workspace, tmp_path: Path) -> None:
    log(tmp_path / "logs", [("a", T0 + 1), ("b", T0 + 2), ("c", T0 + 3)])
    labels(tmp_path / "logs", [("a", 1)], T0 + 5)
    opener = _Opener()
    first = run(ws, tmp_path, opener=opener)
    labels(tmp_path / "logs", [("b", 2)], T0 + 6)
    second = run(ws, tmp_path, opener=opener)
    # Another machine collected `second`; here the folder still has the first file only.
    (ws.root / second.file).unlink()
    labels(tmp_path / "logs", [("a", 9), ("c", 3)], T0 + 7)
    third = run(ws, tmp_path, opener=opener)
    assert (third.rows, third.already) == (1, 2)  # b's row came back, and counted as there
    assert sorted(r["id"] for r in rows_of(ws)) == ["a", "b", "c"]
    assert (ws.root / first.file).exists() and (ws.root / second.file).exists()
