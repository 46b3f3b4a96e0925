"""predlog_writer beyond the round trip of test_monitor_predlog.py: the fast float encoding
gives back the very values json.dumps would, and the batched FeedbackWriter writes what
read_feedback reads, refusing (and counting) what it would skip."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gha_mlops.monitor import predlog
from gha_mlops.monitor import predlog_writer as pw

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC: an hour boundary
RNG = np.random.default_rng(4)


@pytest.mark.parametrize("value", [
    RNG.standard_normal((1, 16, 16)).astype(np.float32),
    RNG.standard_normal(10).astype(np.float64) * 1e300,
    np.array([0.1, 1.0, -0.0, 3.4028235e38, 1e-45, 7], dtype=np.float32),
    np.array([5e-324, 0.1, 1 / 3], dtype=np.float64),
    np.float32(0.637), np.zeros((0, 3), np.float32), np.zeros((3, 0), np.float64),
    RNG.standard_normal((4, 6)).astype(np.float32)[:, ::2],  # not contiguous
    np.array([1.5, np.nan], np.float32), np.array([np.inf], np.float64),
    np.array([1.0, 2.0], np.float16), np.arange(4).reshape(2, 2), [0.25, 1],
], ids=lambda v: f"{getattr(v, 'dtype', 'list')}{getattr(v, 'shape', '')}")
def test_the_fast_float_encoding_reads_back_as_the_same_values(value: Any) -> None:
    text = pw._value_json(value)
    back = json.loads(text)
    want = value.tolist() if hasattr(value, "tolist") else value
    dtype = getattr(value, "dtype", None)
    if dtype is not None and dtype.kind == "f":  # as the reader casts it
        assert np.shape(back) == np.shape(want)  # as json.dumps: (0, 3) is [] in JSON
        np.testing.assert_array_equal(np.asarray(back, dtype=dtype),
                                      np.asarray(want, dtype=dtype))
    else:
        assert back == want
    if isinstance(want, list) and any(isinstance(v, float) and not math.isfinite(v)
                                      for v in np.ravel(want)):
        assert text == json.dumps(want, separators=(",", ":"))  # NaN/Infinity tokens


def test_rows_from_the_fast_path_round_trip_through_the_reader(tmp_path: Path) -> None:
    schema = {"inputs": {"x": ["FP32", [-1, 2, 3]]}, "outputs": {"y": ["FP64", [-1]]}}
    x = RNG.standard_normal((5, 2, 3)).astype(np.float32)
    y = RNG.standard_normal(5)
    with pw.BatchWriter(tmp_path, "m", "v", schema) as writer:
        for i in range(5):
            writer.add(f"r{i}", {"x": x[i]}, {"y": y[i]}, T0 + i)
    window = predlog.read_window(tmp_path, "m", start=T0, end=T0 + 10)
    np.testing.assert_array_equal(window.inputs["x"], x)
    np.testing.assert_array_equal(window.outputs["y"], y)


def test_feedback_batches_land_where_read_feedback_reads(tmp_path: Path) -> None:
    with pw.FeedbackWriter(tmp_path, "m", max_rows=2) as writer:
        assert writer.add("a", 1, T0 + 1) and writer.add("b", "cat", T0 + 2)
        assert writer.add("c", 2.5, T0 + 3) and writer.add("a", 0, T0 + 3600.5)  # next hour
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.gz"))
    assert [f.rsplit("/", 1)[0] for f in files] == [
        "m/feedback/2027/01/15/08", "m/feedback/2027/01/15/08", "m/feedback/2027/01/15/09"]
    labels = predlog.read_feedback(tmp_path, "m", start=T0, end=T0 + 7200)
    assert dict(labels) == {"a": 0, "b": "cat", "c": 2.5} and labels.skipped == {}
    assert (writer.written_rows, writer.files_written, writer.bad_rows) == (4, 3, 0)


@pytest.mark.parametrize(("rid", "label", "t"), [
    ("", 1, T0), ("x" * 129, 1, T0), (5, 1, T0), ("a", math.nan, T0), ("a", "l" * 1025, T0),
    ("a", None, T0), ("a", [1], T0), ("a", 1, math.inf), ("a", 1, -1.0), ("a", 1, True),
])
def test_a_label_the_reader_would_skip_is_refused_and_counted(tmp_path: Path, rid: Any,
                                                             label: Any, t: float) -> None:
    with pw.FeedbackWriter(tmp_path, "m") as writer:
        assert writer.add(rid, label, t) is False
    assert writer.bad_rows == 1 and not list(tmp_path.rglob("*.gz"))


class _Broken:
    def put(self, key: str, data: bytes) -> None:
        raise OSError("disk on fire")


def test_a_failing_sink_is_counted_never_raised_by_the_feedback_writer() -> None:
    with pw.FeedbackWriter(_Broken(), "m", max_rows=1) as writer:
        assert writer.add("a", 1, T0)
        assert writer.flush(10)
    assert (writer.write_errors, writer.dropped_rows) == (1, 1)
    assert writer.last_error and "disk on fire" in writer.last_error
