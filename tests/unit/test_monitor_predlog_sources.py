"""The prediction log read from an object store (the in-memory one: the same port as S3),
the bounds on what a file may cost, the small files beside the log, and the typed fast path
agreeing with the slow one row by row."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gha_mlops.data.stores import LocalStore
from gha_mlops.monitor import predlog
from gha_mlops.monitor.predlog import (
    PredLogError,
    read_feedback,
    read_small,
    read_window,
    write_small,
)
from gha_mlops.monitor.predlog_writer import BatchWriter, hour_path, write_feedback
from gha_mlops.testing.fakes import MemoryStore
from tests.unit.test_monitor_predlog import SCHEMA, T0, header, put, row


def upload(root: Path, store: MemoryStore) -> None:
    """Every file under ``root`` into ``store`` under the same key."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            store.upload_bytes(path.relative_to(root).as_posix(), path.read_bytes())


def same(a: Any, b: Any) -> None:
    assert (a.rows, a.ids, a.skipped, a.files, a.schema, a.versions) == (
        b.rows, b.ids, b.skipped, b.files, b.schema, b.versions)
    for side in ("inputs", "outputs"):
        for name, arr in getattr(a, side).items():
            assert arr.dtype == getattr(b, side)[name].dtype
            assert np.array_equal(arr, getattr(b, side)[name])
    assert np.array_equal(a.times, b.times)


def mixed_log(root: Path) -> None:
    """Good batches over two hours and two versions, and one file of each kind of damage."""
    with BatchWriter(root, "m", "v1", SCHEMA, max_rows=5) as w:
        for i in range(12):
            w.add(f"r{i}", {"x": [i, 2.0, 3.0], "c": f"k{i % 3}"}, {"y": i}, T0 + 1000 * i)
    put(root, [header(version="v2"), row("v2row", version="v2")], version="v2",
        name="0000000000003-0000001-aaaaaaaa-000001.jsonl.gz")
    put(root, [header(), row("a"), b"{nope\n", row(model="other"), row(t=T0 + 9999)],
        name="0000000000004-0000001-aaaaaaaa-000001.jsonl.gz")
    put(root, [], raw=b"not gzip", name="0000000000005-0000001-aaaaaaaa-000001.jsonl.gz")
    put(root, [header(model="other"), row("o")],
        name="0000000000006-0000001-aaaaaaaa-000001.jsonl.gz")


def test_a_store_reads_as_the_directory_does(tmp_path: Path) -> None:
    mixed_log(tmp_path)
    store = MemoryStore()
    upload(tmp_path, store)
    for kw in ({}, {"version": "v1"}, {"start": T0 + 3000, "end": T0 + 7000}):
        args = {"start": T0, "end": T0 + 4 * 3600} | kw
        on_disk = read_window(tmp_path, "m", **args)  # type: ignore[arg-type]
        same(read_window(store, "m", **args), on_disk)  # type: ignore[arg-type]
        same(read_window(LocalStore(tmp_path), "m", **args), on_disk)  # type: ignore[arg-type]
    win = read_window(store, "m", start=T0, end=T0 + 4 * 3600)
    assert win.rows == 14 and win.versions == ("v1", "v2")
    assert win.skipped == {"bad-json": 1, "other-model": 1, "time-outside-file-hour": 1,
                           "file-corrupt": 1, "file-other-model": 1}


def test_a_store_is_listed_by_the_hours_of_the_window_only(tmp_path: Path) -> None:
    with BatchWriter(tmp_path, "m", "v1", SCHEMA, max_pending=1024) as w:
        for day in range(30):  # a month of history, one row an hour
            for h in range(24):
                t = T0 + (day * 24 + h) * 3600 + 1
                w.add(f"d{day}h{h}", {"x": [1.0, 2.0, 3.0], "c": "a"}, {"y": 1}, t)
    store = MemoryStore()
    upload(tmp_path, store)
    store.reset_counters()
    win = read_window(store, "m", start=T0 + 3600, end=T0 + 3 * 3600, version="v1")
    assert win.ids == ("d0h1", "d0h2")
    # Two hours: two LISTs; two GETs, and one ranged GET of the newest file's header.
    assert store.requests == {"list": 2, "get": 3}
    store.reset_counters()
    week = read_window(store, "m", start=T0, end=T0 + 7 * 86400, version="v1")
    assert week.rows == 7 * 24 and store.requests["list"] == 8  # by day: 7 days and a bit
    store.reset_counters()
    year = read_window(store, "m", start=T0, end=T0 + 400 * 86400, version="v1")
    assert year.rows == 30 * 24 and store.requests["list"] == 14  # by month: 2026-03..2027-04
    store.reset_counters()  # without a version, the versions come from one listing of m/
    assert read_window(store, "m", start=T0, end=T0 + 3600).rows == 1
    assert store.requests["list"] == 1 + 1


def test_an_object_over_the_bound_is_counted_and_never_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(tmp_path, [header(), row("a")])
    big = gzip.compress(b"".join(json.dumps(x).encode() + b"\n" for x in
                                 [header()] + [row(f"b{i}", T0 + 2) for i in range(400)]))
    put(tmp_path, [], raw=big, name="0000000000009-0000001-aaaaaaaa-000001.jsonl.gz")
    monkeypatch.setattr(predlog, "MAX_OBJECT_BYTES", len(big) - 1)
    store = MemoryStore()
    upload(tmp_path, store)
    store.reset_counters()
    win = read_window(store, "m", start=T0, end=T0 + 3600)
    assert win.ids == ("a",) and win.skipped == {"file-too-large": 1}
    assert store.bytes_read < len(big)  # its bytes were never asked for
    same(read_window(tmp_path, "m", start=T0, end=T0 + 3600), win)


def test_a_gzip_bomb_is_counted_not_inflated(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [header(), row("a")]
    put(tmp_path, lines)
    bomb = gzip.compress(b"".join(json.dumps(x).encode() + b"\n" for x in lines)
                         + b" " * (4 << 20))
    put(tmp_path, [], raw=bomb, name="0000000000009-0000001-aaaaaaaa-000001.jsonl.gz")
    monkeypatch.setattr(predlog, "MAX_INFLATED_BYTES", 1 << 20)
    win = read_window(tmp_path, "m", start=T0, end=T0 + 3600)
    assert win.ids == ("a",) and win.skipped == {"file-too-large": 1}


def test_feedback_reads_from_a_store_as_from_the_directory(tmp_path: Path) -> None:
    write_feedback(tmp_path, "m", [("a", "cat", T0 + 100), ("b", 1, T0 + 101)])
    folder = tmp_path / "m" / "feedback" / hour_path(T0)
    (folder / "bad.jsonl").write_text(json.dumps({"id": "c", "label": [1], "t": T0})
                                      + "\n{oops\n")
    store = MemoryStore()
    upload(tmp_path, store)
    on_disk = read_feedback(tmp_path, "m", start=T0, end=T0 + 3600)
    in_store = read_feedback(store, "m", start=T0, end=T0 + 3600)
    assert dict(in_store) == dict(on_disk) == {"a": "cat", "b": 1}
    assert in_store.skipped == on_disk.skipped == {"bad-label": 1, "bad-json": 1}
    assert in_store.files == on_disk.files == 2


# ---------------------------------------------------------------------------- row by row


def test_a_nan_anywhere_in_a_big_file_keeps_the_other_rows_and_the_nan(tmp_path: Path) -> None:
    lines: list[Any] = [header()] + [row(f"r{i}", T0 + i) for i in range(50)]
    lines[20] = (b'{"id":"nan","t":%f,"model":"m","version":"v1","inputs":{"x":[NaN,1,2],'
                 b'"c":"a"},"outputs":{"y":1}}\n' % (T0 + 19.5))
    put(tmp_path, lines)
    win = read_window(tmp_path, "m", start=T0, end=T0 + 3600)
    assert win.rows == 50 and win.skipped == {} and win.ids[19] == "nan"
    assert np.isnan(win.inputs["x"][19, 0]) and win.inputs["x"].dtype == np.float32


@pytest.mark.parametrize(("line", "reason"), [
    (row(inputs={"x": [True, 2.0, 3.0], "c": "a"}), "bad-value"),  # a bool is no number
    (row(outputs={"y": True}), "bad-value"),
    (row(inputs={"x": [1e39, 2.0, 3.0], "c": "a"}), "bad-value"),  # past FP32's range
    (row(outputs={"y": 2**63}), "bad-value"),  # past INT64's
    (b'{"id":"r","t":1%s,"model":"m","version":"v1"}\n' % (b"0" * 400), "bad-time"),
    (row(id=""), "bad-id"),
], ids=["bool-in-fp", "bool-in-int", "fp32-overflow", "int64-overflow", "huge-int-time",
        "empty-id"])
def test_a_row_is_judged_alone_not_by_its_neighbours(tmp_path: Path, line: Any,
                                                     reason: str) -> None:
    put(tmp_path, [header(), row("a", T0 + 1), line, row("b", T0 + 2)])
    win = read_window(tmp_path, "m", start=T0, end=T0 + 3600)
    assert win.ids == ("a", "b") and win.skipped == {reason: 1}


def test_scalar_floats_past_their_type_are_refused_not_made_infinite(tmp_path: Path) -> None:
    schema = {"inputs": {"f": ["FP32", [-1]], "h": ["FP16", [-1]]},
              "outputs": {"y": ["FP64", [-1]]}}

    def line(rid: str, f: float, h: float) -> dict[str, Any]:
        return row(rid, inputs={"f": f, "h": h}, outputs={"y": 1e300})

    put(tmp_path, [header(schema=schema), line("a", 3e38, 65504.0), line("f", 1e39, 1.0),
                   line("h", 1.0, 70000.0), line("b", -1.5, -2.5)])
    win = read_window(tmp_path, "m", start=T0, end=T0 + 3600)
    assert win.ids == ("a", "b") and win.skipped == {"bad-value": 2}
    assert win.inputs["f"].dtype == np.float32 and win.inputs["h"].tolist() == [65504.0, -2.5]


def test_a_bad_value_outside_the_window_is_not_counted(tmp_path: Path) -> None:
    put(tmp_path, [header(), row("a", T0 + 1), row("b", T0 + 500, outputs={"y": 1.5})])
    win = read_window(tmp_path, "m", start=T0, end=T0 + 100)
    assert win.ids == ("a",) and win.skipped == {}


def test_tensor_names_need_not_be_identifiers(tmp_path: Path) -> None:
    schema = {"inputs": {"input.1/x:0": ["FP64", [-1]], "in-2": ["INT8", [-1]]},
              "outputs": {"out:0": ["BOOL", [-1]]}}
    with BatchWriter(tmp_path, "m", "v1", schema) as w:
        w.add("a", {"input.1/x:0": 0.5, "in-2": -3}, {"out:0": True}, T0 + 1)
    win = read_window(tmp_path, "m", start=T0, end=T0 + 3600)
    assert win.inputs["input.1/x:0"].tolist() == [0.5] and win.inputs["in-2"].tolist() == [-3]
    assert win.outputs["out:0"].dtype == np.bool_ and win.skipped == {}


def test_a_store_that_is_not_one_is_a_clear_error() -> None:
    with pytest.raises(PredLogError, match="neither a directory nor an object store"):
        read_window(42, "m", start=T0, end=T0 + 1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- small files


@pytest.mark.parametrize("kind", ["dir", "store"])
def test_small_files_round_trip_beside_the_log(tmp_path: Path, kind: str) -> None:
    source: Any = tmp_path if kind == "dir" else MemoryStore()
    key = "m/monitor/alarm.json"
    assert read_small(source, key, 1000) is None
    write_small(source, key, b'{"a": 1}')
    write_small(source, key, b'{"a": 2}')
    assert read_small(source, key, 1000) == b'{"a": 2}'
    with pytest.raises(PredLogError, match="larger than 4 bytes") as err:
        read_small(source, key, 4)
    assert err.value.hint
    for bad in ("../x", "/etc/passwd", "m/.hidden", "m//x", ""):
        with pytest.raises(PredLogError, match="key"):
            read_small(source, bad, 10)
        with pytest.raises(PredLogError, match="key"):
            write_small(source, bad, b"x")
    if kind == "dir":
        assert not list((tmp_path / "m" / "monitor").glob(".*"))  # no temp file left


def test_small_files_never_follow_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "m").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "m" / "alarm.json").symlink_to(outside / "secret")
    with pytest.raises(PredLogError, match="leads out"):
        read_small(root, "m/alarm.json", 100)
    (root / "m" / "monitor").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PredLogError, match="leads out"):
        write_small(root, "m/monitor/alarm.json", b"x")
    assert not (outside / "alarm.json").exists()
    shutil.rmtree(outside)
