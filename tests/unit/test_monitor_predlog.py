"""The prediction log: the writer's format and behaviour, the reader's hostility rules."""

from __future__ import annotations

import ast
import calendar
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gha_mlops.monitor import predlog_writer
from gha_mlops.monitor.predlog import (
    MAX_LINE_BYTES,
    PredLogError,
    join_feedback,
    read_feedback,
    read_window,
)
from gha_mlops.monitor.predlog_writer import FORMAT, BatchWriter, hour_path, write_feedback

SCHEMA: dict[str, Any] = {"inputs": {"x": ["FP32", [-1, 3]], "c": ["BYTES", [-1]]},
                          "outputs": {"y": ["INT64", [-1]]}}
T0 = float(calendar.timegm((2026, 3, 10, 12, 0, 0)))  # the start of an hour


def row(rid: str = "r", t: float = T0 + 1, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": rid, "t": t, "model": "m", "version": "v1",
                           "inputs": {"x": [1.0, 2.0, 3.0], "c": "a"}, "outputs": {"y": 1}}
    doc.update(over)
    return doc


def header(**over: Any) -> dict[str, Any]:
    doc = {"format": FORMAT, "model": "m", "version": "v1", "sample": 1.0, "schema": SCHEMA}
    doc.update(over)
    return doc


def put(root: Path, lines: list[Any], *, t: float = T0, version: str = "v1",
        name: str = "0000000000001-0000001-aaaaaaaa-000001.jsonl.gz", raw: bytes | None = None,
        ) -> Path:
    """Write one batch file by hand: dicts become JSON lines, bytes are written as they are."""
    folder = root / "m" / version / hour_path(t)
    folder.mkdir(parents=True, exist_ok=True)
    body = b"".join(x if isinstance(x, bytes) else json.dumps(x).encode() + b"\n"
                    for x in lines)
    path = folder / name
    path.write_bytes(raw if raw is not None else gzip.compress(body))
    return path


def window(root: Path, **kw: Any) -> Any:
    return read_window(root, "m", start=kw.pop("start", T0), end=kw.pop("end", T0 + 3600), **kw)


# ---------------------------------------------------------------------------- round trip


def test_round_trip_keeps_ids_times_values_and_dtypes(tmp_path: Path) -> None:
    with BatchWriter(tmp_path, "m", "v1", SCHEMA, max_rows=7) as w:
        for i in range(20):
            w.add(f"r{i}", {"x": np.arange(3, dtype=np.float32) + i, "c": f"k{i % 2}"},
                  {"y": np.int64(i)}, T0 + i)
    assert (w.written_rows, w.dropped_rows, w.files_written) == (20, 0, 3)
    win = window(tmp_path)
    assert win.rows == 20 and win.files == 3 and win.skipped == {}
    assert win.ids == tuple(f"r{i}" for i in range(20))
    assert win.inputs["x"].dtype == np.float32 and win.inputs["x"].shape == (20, 3)
    assert win.inputs["x"][5].tolist() == [5.0, 6.0, 7.0]
    assert win.inputs["c"].tolist()[:3] == ["k0", "k1", "k0"]
    assert win.outputs["y"].dtype == np.int64 and win.outputs["y"].tolist() == list(range(20))
    assert win.times.tolist() == [T0 + i for i in range(20)]
    assert win.versions == ("v1",) and win.schema == SCHEMA
    first = sorted((tmp_path / "m" / "v1").rglob("*.jsonl.gz"))[0]
    head = json.loads(gzip.decompress(first.read_bytes()).splitlines()[0])
    assert head == header()


def test_window_bounds_are_half_open(tmp_path: Path) -> None:
    put(tmp_path, [header(), row("a", T0), row("b", T0 + 10), row("c", T0 + 20)])
    assert window(tmp_path, start=T0, end=T0 + 20).ids == ("a", "b")


def test_empty_window_and_missing_model_give_zero_rows(tmp_path: Path) -> None:
    assert window(tmp_path).rows == 0
    put(tmp_path, [header(), row("a", T0 + 5)])
    empty = window(tmp_path, start=T0 + 10, end=T0 + 20)
    assert (empty.rows, empty.ids, empty.times.shape, empty.files) == (0, (), (0,), 1)


def test_window_spanning_hours_days_and_a_year_opens_only_its_hours(tmp_path: Path) -> None:
    eve = float(calendar.timegm((2025, 12, 31, 22, 30, 0)))
    times = [eve + k * 1800 for k in range(8)]  # 22:30 Dec 31 .. 02:00 Jan 1
    with BatchWriter(tmp_path, "m", "v1", SCHEMA, max_pending=8) as w:
        for i, t in enumerate(times):
            w.add(f"r{i}", {"x": [0.0, 0.0, 0.0], "c": "a"}, {"y": i}, t)
    hours = sorted(p.parent.relative_to(tmp_path / "m" / "v1").as_posix()
                   for p in tmp_path.rglob("*.jsonl.gz"))
    assert hours == ["2025/12/31/22", "2025/12/31/23", "2026/01/01/00", "2026/01/01/01",
                     "2026/01/01/02"]  # a batch is cut at each new hour
    # A corrupt file in an hour outside the window is never opened, so never counted.
    put(tmp_path, [], t=eve - 7200, raw=b"not gzip")
    win = read_window(tmp_path, "m", start=eve + 1800, end=eve + 3 * 3600)
    assert win.ids == ("r1", "r2", "r3", "r4", "r5") and win.files == 3 and win.skipped == {}


def test_versions_are_read_together_or_one_by_one(tmp_path: Path) -> None:
    put(tmp_path, [header(), row("a")])
    put(tmp_path, [header(version="v2"), row("b", version="v2")], version="v2",
        name="0000000000002-0000001-aaaaaaaa-000001.jsonl.gz")
    assert window(tmp_path).ids == ("a", "b")
    assert window(tmp_path, version="v2").ids == ("b",)


# ---------------------------------------------------------------------------- bad input

BAD_LINES: list[tuple[str, Any, str]] = [
    ("not json", b"{nope\n", "bad-json"),
    ("not an object", [1, 2], "bad-row"),
    ("id not a string", row() | {"id": 7}, "bad-id"),
    ("id too long", row("x" * 129), "bad-id"),
    ("time a string", row() | {"t": "soon"}, "bad-time"),
    ("time NaN", b'{"id":"n","t":NaN,"model":"m","version":"v1"}\n', "bad-time"),
    ("time a bool", row() | {"t": True}, "bad-time"),
    ("another model", row(model="other"), "other-model"),
    ("another version", row(version="v9"), "other-version"),
    ("a time outside the file's hour", row(t=T0 + 3600 + 5), "time-outside-file-hour"),
    ("missing input", row(inputs={"x": [1.0, 2.0, 3.0]}), "other-schema"),
    ("extra output", row(outputs={"y": 1, "z": 2}), "other-schema"),
    ("NaN in an INT64", b'{"id":"n","t":%f,"model":"m","version":"v1","inputs":{"x":[1,2,3],'
     b'"c":"a"},"outputs":{"y":NaN}}\n' % (T0 + 1), "bad-value"),
    ("float in an INT64", row(outputs={"y": 1.5}), "bad-value"),
    ("string in an FP32", row(inputs={"x": ["1", "2", "3"], "c": "a"}), "bad-value"),
    ("number in BYTES", row(inputs={"x": [1, 2, 3], "c": 5}), "bad-value"),
    ("wrong shape", row(inputs={"x": [1.0, 2.0], "c": "a"}), "bad-value"),
    ("ragged nesting", row(inputs={"x": [[1.0], 2.0, 3.0], "c": "a"}), "bad-value"),
    ("nested too deep", b"[" * 100_000 + b"\n", "bad-json"),
]


@pytest.mark.parametrize(("line", "reason"), [(b[1], b[2]) for b in BAD_LINES],
                         ids=[b[0] for b in BAD_LINES])
def test_a_bad_line_is_skipped_and_counted_the_rest_kept(tmp_path: Path, line: Any,
                                                         reason: str) -> None:
    put(tmp_path, [header(), row("a", T0 + 1), line, row("b", T0 + 2)])
    win = window(tmp_path)
    assert win.ids == ("a", "b") and win.skipped == {reason: 1}


def test_out_of_range_ints_are_refused_not_wrapped(tmp_path: Path) -> None:
    schema = {"inputs": {"b": ["UINT8", [-1]]}, "outputs": {"y": ["INT8", [-1]]}}
    ok = row("a", inputs={"b": 255}, outputs={"y": -128})
    put(tmp_path, [header(schema=schema), ok, row("b", inputs={"b": 256}, outputs={"y": 0}),
                   row("c", inputs={"b": 1}, outputs={"y": 128})])
    win = window(tmp_path)
    assert win.ids == ("a",) and win.skipped == {"bad-value": 2}
    assert win.inputs["b"].tolist() == [255] and win.inputs["b"].dtype == np.uint8


def test_nan_is_allowed_in_float_tensors(tmp_path: Path) -> None:
    line = (b'{"id":"n","t":%f,"model":"m","version":"v1","inputs":{"x":[NaN,1,Infinity],'
            b'"c":"a"},"outputs":{"y":1}}\n' % (T0 + 1))
    put(tmp_path, [header(), line])
    win = window(tmp_path)
    assert win.rows == 1 and np.isnan(win.inputs["x"][0, 0]) and np.isinf(win.inputs["x"][0, 2])


def test_oversized_line_is_skipped_without_losing_the_next(tmp_path: Path) -> None:
    big = row("big", inputs={"x": [1.0, 2.0, 3.0], "c": "z" * MAX_LINE_BYTES})
    put(tmp_path, [header(), row("a"), big, row("b")])
    win = window(tmp_path)
    assert win.ids == ("a", "b") and win.skipped == {"oversized-line": 1}


def test_rows_disagreeing_on_a_dynamic_dimension_keep_the_first_shape(tmp_path: Path) -> None:
    schema = {"inputs": {"s": ["INT32", [-1, -1]]}, "outputs": {"y": ["INT64", [-1]]}}
    put(tmp_path, [header(schema=schema), row("a", inputs={"s": [1, 2]}),
                   row("b", inputs={"s": [1, 2, 3]}), row("c", inputs={"s": [3, 4]})])
    win = window(tmp_path)
    assert win.ids == ("a", "c") and win.skipped == {"bad-value": 1}


@pytest.mark.parametrize(("raw", "kept"), [
    (b"this is not gzip at all", 0),
    ("truncated", 2),
], ids=["garbage", "truncated"])
def test_a_corrupt_gzip_file_is_skipped_and_counted(tmp_path: Path, raw: Any,
                                                    kept: int) -> None:
    good = gzip.compress(b"".join(json.dumps(x).encode() + b"\n" for x in
                                  [header(), row("a"), row("b")] * 1) + b" " * 50_000)
    put(tmp_path, [], raw=good[:-20] if raw == "truncated" else raw)
    put(tmp_path, [header(), row("z", T0 + 9)], name="0000000000009-0000001-aaaaaaaa-000001"
                                                      ".jsonl.gz")
    win = window(tmp_path)
    assert win.skipped == {"file-corrupt": 1} and win.rows == kept + 1 and win.ids[-1] == "z"


@pytest.mark.parametrize(("head", "reason"), [
    (b"{oops\n", "file-bad-header"),
    (header(format="gha-mlops.predlog/99"), "file-bad-header"),
    (header(schema={"inputs": {}, "outputs": {}}), "file-bad-header"),
    (header(model="other"), "file-other-model"),
    (header(version="v2"), "file-other-version"),
    (header(schema={"inputs": {"x": ["FP64", [-1, 3]], "c": ["BYTES", [-1]]},
                    "outputs": {"y": ["INT64", [-1]]}}), "file-other-schema"),
], ids=["not-json", "other-format", "bad-schema", "other-model", "other-version",
        "other-schema"])
def test_a_file_with_a_bad_or_foreign_header_is_skipped_whole(tmp_path: Path, head: Any,
                                                              reason: str) -> None:
    put(tmp_path, [head, row("old")])
    put(tmp_path, [header(), row("new", T0 + 9)],
        name="0000000000009-0000001-aaaaaaaa-000001.jsonl.gz")  # the newest sets the schema
    win = window(tmp_path)
    assert win.ids == ("new",) and win.skipped == {reason: 1}


def test_a_given_schema_wins_over_the_newest_file(tmp_path: Path) -> None:
    put(tmp_path, [header(), row("a")])
    other = {"inputs": {"q": ["FP64", [-1]]}, "outputs": {"y": ["INT64", [-1]]}}
    win = window(tmp_path, schema=other)
    assert win.rows == 0 and win.skipped == {"file-other-schema": 1}


def test_symlinks_leading_out_of_root_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    root = tmp_path / "root"
    put(outside, [header(), row("evil")])
    put(root, [header(), row("a")])
    hour = root / "m" / "v1" / hour_path(T0)
    evil = next((outside / "m" / "v1" / hour_path(T0)).iterdir())
    (hour / "0000000000005-0000001-aaaaaaaa-000001.jsonl.gz").symlink_to(evil)
    (root / "m" / "v2").symlink_to(outside / "m" / "v1", target_is_directory=True)
    win = window(root)
    assert win.ids == ("a",) and win.skipped == {"file-outside-root": 2}


def test_a_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    path = put(tmp_path, [header(), row("a")])
    (path.parent / "0000000000005-0000001-aaaaaaaa-000001.jsonl.gz").symlink_to(path)
    assert window(tmp_path).ids == ("a", "a")


def test_fifos_and_hidden_temp_files_are_not_read(tmp_path: Path) -> None:
    path = put(tmp_path, [header(), row("a")])
    os.mkfifo(path.parent / "0000000000005-0000001-aaaaaaaa-000001.jsonl.gz")
    shutil.copy(path, path.parent / ".0000000000006-x.jsonl.gz.1234.tmp")
    win = window(tmp_path)
    assert win.ids == ("a",) and win.skipped == {"file-not-regular": 1}


def test_max_rows_reads_the_oldest_files_and_counts_the_rest(tmp_path: Path) -> None:
    for k in range(3):
        put(tmp_path, [header()] + [row(f"{k}-{i}", T0 + k * 10 + i) for i in range(4)],
            name=f"000000000000{k}-0000001-aaaaaaaa-000001.jsonl.gz")
    win = window(tmp_path, max_rows=6)
    assert win.ids == ("0-0", "0-1", "0-2", "0-3", "1-0", "1-1")
    assert win.skipped == {"over-max-rows": 2, "file-over-max-rows": 1}


@pytest.mark.parametrize("kw", [{"start": T0 + 5, "end": T0}, {"start": float("nan")},
                                {"end": float("inf")}, {"version": "../x"},
                                {"version": "feedback"}, {"max_rows": 0}])
def test_a_bad_call_raises_a_clear_error(tmp_path: Path, kw: dict[str, Any]) -> None:
    with pytest.raises(PredLogError) as err:
        window(tmp_path, **kw)
    assert err.value.hint


def test_a_bad_model_name_raises(tmp_path: Path) -> None:
    with pytest.raises(PredLogError, match="model"):
        read_window(tmp_path, "../etc", start=T0, end=T0 + 1)


# ---------------------------------------------------------------------------- the writer


def test_sampling_rate_is_kept_and_seeded(tmp_path: Path) -> None:
    def run(seed: int, sample: float) -> BatchWriter:
        w = BatchWriter(tmp_path / str(seed) / str(sample), "m", "v1", SCHEMA,
                        sample=sample, seed=seed, max_rows=100_000)
        for i in range(20_000):
            w.add(f"r{i}", {}, {}, T0 + 1)
        w.close()
        return w

    a, b = run(1, 0.1), run(1, 0.1)
    assert a.rows_seen == 20_000 and abs(a.rows_sampled - 2000) < 4 * 42  # 4 sigma
    assert a.rows_sampled == b.rows_sampled == a.written_rows
    assert run(2, 0.0).rows_sampled == 0 and run(3, 1.0).rows_sampled == 20_000


class StuckSink:
    """A sink as slow as a dead disk: every put waits until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.keys: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.release.wait(30)
        self.keys.append(key)


def test_a_slow_sink_never_blocks_add_rows_are_dropped_and_counted() -> None:
    sink = StuckSink()
    w = BatchWriter(sink, "m", "v1", SCHEMA, max_rows=10, max_pending=2)

    def burst() -> None:
        for i in range(5000):
            w.add(f"r{i}", {}, {}, T0 + 1)

    adder = threading.Thread(target=burst, daemon=True)
    adder.start()
    try:
        adder.join(20)  # with a blocking add() this thread would hang on the stuck sink
        assert not adder.is_alive()
        assert w.dropped_rows >= 5000 - 10 * 4  # one being written, two queued, one open
    finally:
        sink.release.set()
    w.close()
    assert w.written_rows + w.dropped_rows == w.rows_sampled == 5000
    assert w.written_rows == 10 * len(sink.keys)


def test_add_never_raises_a_row_it_cannot_log_is_counted(tmp_path: Path) -> None:
    loop: list[Any] = []
    loop.append(loop)
    w = BatchWriter(tmp_path, "m", "v1", SCHEMA)
    w.add("a", {"x": [1.0, 2.0, 3.0], "c": "a"}, {"y": 1}, T0 + 1)
    w.add("loop", {"x": loop}, {}, T0 + 1)
    w.add("key", {("t", "uple"): 1}, {}, T0 + 1)  # type: ignore[dict-item]
    w.add("x" * 129, {}, {}, T0 + 1)
    w.add(7, {}, {}, T0 + 1)  # type: ignore[arg-type]
    w.add("nan", {}, {}, float("nan"))
    w.add("str", {}, {}, "noon")  # type: ignore[arg-type]
    w.add("before-1970", {}, {}, -1.0)
    w.close()
    assert (w.bad_rows, w.written_rows, w.rows_sampled) == (7, 1, 8)
    assert window(tmp_path).ids == ("a",)


class BrokenSink:
    def put(self, key: str, data: bytes) -> None:
        raise OSError("disk full")


def test_a_failing_sink_is_counted_and_the_writer_goes_on() -> None:
    w = BatchWriter(BrokenSink(), "m", "v1", SCHEMA, max_rows=2)
    for i in range(6):
        w.add(f"r{i}", {}, {}, T0 + 1)
    w.close()
    assert (w.write_errors, w.dropped_rows, w.written_rows) == (3, 6, 0)
    assert w.last_error is not None and "disk full" in w.last_error


def test_a_batch_older_than_max_age_is_written_without_more_traffic(tmp_path: Path) -> None:
    w = BatchWriter(tmp_path, "m", "v1", SCHEMA, max_age_s=0.05)
    w.add("a", {"x": [1.0, 2.0, 3.0], "c": "a"}, {"y": 1}, T0 + 1)
    deadline = time.monotonic() + 10
    while w.files_written == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.files_written == 1
    w.close()
    w.add("late", {}, {}, T0 + 2)  # after close: dropped, counted, no error
    assert w.dropped_rows == 1 and window(tmp_path).ids == ("a",)


def test_file_names_sort_in_time_order(tmp_path: Path) -> None:
    ts = [T0 + 0.001, T0 + 0.5, T0 + 9.999, T0 + 10, T0 + 100, T0 + 1000]
    writers = [BatchWriter(tmp_path, "m", "v1", SCHEMA, max_rows=1) for _ in range(2)]
    for i, t in enumerate(ts):
        writers[i % 2].add(f"r{i}", {"x": [0.0, 0.0, 0.0], "c": "a"}, {"y": i}, t)
    for w in writers:
        w.close()
    names = [p.name for p in (tmp_path / "m" / "v1" / hour_path(T0)).iterdir()]
    assert len(names) == 6 and len({len(n) for n in names}) == 1  # fixed width
    assert [int(n.split("-")[0]) for n in sorted(names)] == [int(t * 1000) for t in ts]
    assert window(tmp_path).ids == tuple(f"r{i}" for i in range(6))


@pytest.mark.parametrize(("args", "match"), [
    (("../m", "v1", SCHEMA), "model"), (("m", "feedback", SCHEMA), "reserved"),
    (("m", "v/1", SCHEMA), "version"), (("m", "v1", {"inputs": {}}), "schema"),
    (("m", "v1", {"inputs": {"x": ["FP99", [-1]]}, "outputs": {"y": ["FP32", [-1]]}}),
     "datatype"),
])
def test_the_writer_refuses_bad_names_and_schemas(tmp_path: Path, args: tuple[Any, ...],
                                                  match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BatchWriter(tmp_path, *args)


def test_the_writer_imports_only_the_standard_library(tmp_path: Path) -> None:
    source = Path(predlog_writer.__file__)
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    # And it works copied alone, as in the serving image: no site-packages, no gha_mlops.
    shutil.copy(source, tmp_path / "predlog_writer.py")
    script = (
        "import sys; sys.path.insert(0, sys.argv[2]); import predlog_writer as p\n"
        "w = p.BatchWriter(sys.argv[1], 'm', 'v1', {'inputs': {'x': ['FP32', [-1]]},"
        " 'outputs': {'y': ['INT64', [-1]]}})\n"
        f"w.add('a', {{'x': 1.5}}, {{'y': 2}}, {T0 + 1}); w.close()\n"
        "assert not {'numpy', 'gha_mlops'} & set(sys.modules), sys.modules.keys()\n")
    subprocess.run([sys.executable, "-I", "-S", "-c", script, str(tmp_path / "log"),
                    str(tmp_path)],
                   cwd=tmp_path, check=True, timeout=60)
    win = read_window(tmp_path / "log", "m", start=T0, end=T0 + 60)
    assert win.ids == ("a",) and win.inputs["x"].tolist() == [1.5]


# ---------------------------------------------------------------------------- feedback


def test_feedback_latest_label_wins_and_joins_the_window(tmp_path: Path) -> None:
    put(tmp_path, [header(), row("a", T0 + 1), row("b", T0 + 2), row("a", T0 + 3),
                   row("c", T0 + 4)])
    write_feedback(tmp_path, "m", [("a", "cat", T0 + 100), ("b", "dog", T0 + 101)],
                   name="0001.jsonl")
    write_feedback(tmp_path, "m", [("a", "cow", T0 + 200), ("z", "eel", T0 + 201)])
    labels = read_feedback(tmp_path, "m", start=T0, end=T0 + 3600)
    assert dict(labels) == {"a": "cow", "b": "dog", "z": "eel"} and labels.files == 2
    joined = join_feedback(window(tmp_path), labels)
    assert joined.ids == ("a", "b", "a") and joined.rows.tolist() == [0, 1, 2]
    assert joined.labels.tolist() == ["cow", "dog", "cow"]
    early = read_feedback(tmp_path, "m", start=T0, end=T0 + 150)
    assert dict(early) == {"a": "cat", "b": "dog"}


def test_feedback_bad_lines_and_files_are_skipped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "m" / "feedback" / hour_path(T0)
    folder.mkdir(parents=True)
    good = {"id": "a", "label": 1, "t": T0 + 1}
    lines = [good, {"id": 5, "label": 1, "t": T0}, {"id": "b", "label": [1], "t": T0},
             {"id": "c", "label": 1, "t": "x"}, {"id": "d", "label": 1, "t": T0 + 7200}]
    (folder / "a.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines)
                                    + f'{{"id":"e","label":NaN,"t":{T0 + 5}}}\n{{oops\n')
    (folder / "b.jsonl.gz").write_bytes(b"garbage")
    (folder / "c.jsonl").symlink_to("/etc/passwd")
    labels = read_feedback(tmp_path, "m", start=T0, end=T0 + 3600)
    assert dict(labels) == {"a": 1}
    assert labels.skipped == {"bad-id": 1, "bad-label": 2, "bad-time": 1,
                              "time-outside-file-hour": 1, "bad-json": 1,
                              "file-corrupt": 1, "file-outside-root": 1}


def test_labels_of_mixed_types_are_not_turned_into_strings(tmp_path: Path) -> None:
    put(tmp_path, [header(), row("a"), row("b")])
    joined = join_feedback(window(tmp_path), {"a": 1, "b": "cat"})
    assert joined.labels.tolist() == [1, "cat"]


def test_with_no_readable_header_each_file_is_counted_by_its_reason(tmp_path: Path) -> None:
    put(tmp_path, [header(model="other"), row("a")])
    put(tmp_path, [], raw=b"garbage", name="0000000000009-0000001-aaaaaaaa-000001.jsonl.gz")
    win = window(tmp_path)
    assert win.rows == 0 and win.skipped == {"file-other-model": 1, "file-corrupt": 1}


def test_join_with_no_labels_is_empty(tmp_path: Path) -> None:
    put(tmp_path, [header(), row("a")])
    joined = join_feedback(window(tmp_path), {})
    assert joined.ids == () and joined.labels.shape == (0,) and joined.rows.shape == (0,)
