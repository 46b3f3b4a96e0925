"""``monitor check`` as a service: synthetic scenarios written through the real log format
(BatchWriter into a temp folder), checked against a profile built from reference data."""

from __future__ import annotations

import calendar
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gha_mlops.config.model import MonitorAlarm, MonitorModel
from gha_mlops.monitor.check import (
    NO_VALUES,
    NOT_IN_LOG,
    NOT_IN_REFERENCE,
    CheckError,
    CheckResult,
    check,
)
from gha_mlops.monitor.hysteresis import (
    DRIFT,
    NOT_ENOUGH_DATA,
    OK,
    WATCH,
    AlarmState,
    HysteresisError,
    record_dispatch,
)
from gha_mlops.monitor.predlog_writer import FORMAT, BatchWriter, hour_path, write_feedback
from gha_mlops.monitor.profile import Profile, build_profile

SCHEMA: dict[str, Any] = {"inputs": {"x": ["FP64", [-1, 3]], "c": ["BYTES", [-1]]},
                          "outputs": {"y": ["INT64", [-1]]}}
T0 = float(calendar.timegm((2026, 3, 10, 0, 0, 0)))
HOUR = 3600.0
ROWS = 1000
CATS = np.array(["a", "b", "c", "d"])


def cfg(**over: Any) -> MonitorModel:
    alarm = MonitorAlarm(min_samples=300, k=2, n=3, high=0.5, low=0.3)
    return MonitorModel(**{"name": "m", "log": "log", "alarm": alarm, **over})


def reference(seed: int = 0, rows: int = 2000) -> Profile:
    gen = np.random.default_rng(seed)
    x = gen.normal(size=(rows, 3))
    c = gen.choice(CATS, size=rows, p=[0.4, 0.3, 0.2, 0.1])
    return build_profile({"x[0]": x[:, 0], "x[1]": x[:, 1], "x[2]": x[:, 2], "c": c},
                         predictions={"y": (x[:, 0] > 0).astype(np.int64) * 7})


def write(root: Path, start: float, *, rows: int = ROWS, shift: float = 0.0, seed: int = 1,
          version: str = "v1", schema: dict[str, Any] | None = None, prefix: str = "r",
          ) -> list[str]:
    """``rows`` logged rows spread over the hour from ``start``; ``shift`` moves every
    feature (the numbers by ``shift``, the categories towards "d")."""
    gen = np.random.default_rng(seed)
    x = gen.normal(loc=shift, size=(rows, 3))
    tilt = min(shift / 2, 0.5)
    c = gen.choice(CATS, size=rows, p=[0.4 - tilt * 0.6, 0.3 - tilt * 0.2, 0.2, 0.1 + tilt * 0.8])
    ids = [f"{prefix}-{int(start)}-{i}" for i in range(rows)]
    with BatchWriter(root, "m", version, schema or SCHEMA, max_rows=100_000, max_age_s=3600,
                     sample=1.0) as writer:
        for i, rid in enumerate(ids):
            inputs: dict[str, Any] = {"x": x[i].tolist(), "c": str(c[i])}
            if schema is not None:
                inputs = {k: inputs.get(k, 1.0) for k in schema["inputs"]}
            writer.add(rid, inputs, {"y": int(x[i, 0] > 0) * 7},
                       t=start + i * (HOUR - 1) / rows)
    return ids


def run(root: Path, start: float, state: AlarmState | None = None, *,
        model: MonitorModel | None = None, profile: Profile | None = None,
        now: float | None = None, **kw: Any) -> CheckResult:
    return check(model or cfg(), profile or reference(), root, start=start, end=start + HOUR,
                 version="v1", state=state or AlarmState(),
                 now=now if now is not None else start + HOUR, **kw)


def test_no_drift_is_ok(tmp_path: Path) -> None:
    write(tmp_path, T0)
    result = run(tmp_path, T0)
    assert result.rows == ROWS and result.enough_data
    assert [f.name for f in result.features] == ["x[0]", "x[1]", "x[2]", "c"]
    # Normed Wasserstein on 1,000 rows wanders up to ~0.08 by chance (threshold 0.1).
    assert result.share is not None and result.share <= 0.25 and not result.dataset_drifted
    assert [f.name for f in result.predictions] == ["y"]
    assert result.verdict.status == OK and not result.verdict.dispatch
    assert result.state.windows[-1].samples == ROWS
    assert result.untested == () and result.skipped == {}
    assert result.histograms == tuple(h for h in result.histograms
                                      if h.name in {f.name for f in result.features if f.drifted})


def test_sudden_shift_watches_then_trips_once(tmp_path: Path) -> None:
    state = AlarmState()
    statuses, dispatches = [], 0
    for i in range(4):
        write(tmp_path, T0 + i * HOUR, shift=1.5, seed=i)
        result = run(tmp_path, T0 + i * HOUR, state)
        state = result.state
        statuses.append(result.verdict.status)
        if result.verdict.dispatch:
            dispatches += 1
            state = record_dispatch(state, now=result.now)
    assert result.share == 1.0 and result.dataset_drifted
    assert statuses == [WATCH, DRIFT, DRIFT, DRIFT] and dispatches == 1
    drifted = {h.name for h in result.histograms}
    assert drifted == {"x[0]", "x[1]", "x[2]", "c"}
    numeric = next(h for h in result.histograms if h.name == "x[0]")
    assert len(numeric.edges) == len(numeric.reference) + 1
    assert sum(numeric.current) == pytest.approx(1.0)
    cat = next(h for h in result.histograms if h.name == "c")
    assert cat.labels[-1] == "other" and sum(cat.reference) == pytest.approx(1.0)


def test_slow_drift_trips_after_k_of_n(tmp_path: Path) -> None:
    state = AlarmState()
    trips = []
    shifts = [0.0, 0.0, 0.1, 0.2, 0.6, 0.9, 1.2, 1.5]
    for i, shift in enumerate(shifts):
        write(tmp_path, T0 + i * HOUR, shift=shift, seed=10 + i)
        result = run(tmp_path, T0 + i * HOUR, state)
        state = result.state
        trips.append(result.verdict.newly_tripped)
    scores = [w.score for w in state.windows]
    first_over = next(i for i, s in enumerate(scores) if s > 0.5)
    assert trips.index(True) == first_over + 1  # the second window over high trips (k=2)
    assert trips.count(True) == 1


def test_flapping_noise_dispatches_at_most_once(tmp_path: Path) -> None:
    state = AlarmState()
    dispatches, statuses = 0, []
    for i in range(12):
        write(tmp_path, T0 + i * HOUR, shift=1.5 if i % 2 else 0.0, seed=20 + i)
        result = run(tmp_path, T0 + i * HOUR, state)
        state, verdict = result.state, result.verdict
        statuses.append(verdict.status)
        if verdict.dispatch:
            dispatches += 1
            state = record_dispatch(state, now=result.now)  # as `--act` records it
    assert dispatches == 1
    assert statuses.count(DRIFT) >= 1 and "cooldown" in statuses  # held, not re-tripped


def test_too_few_samples_claims_no_verdict(tmp_path: Path) -> None:
    write(tmp_path, T0, rows=50)
    result = run(tmp_path, T0)
    assert result.rows == 50 and not result.enough_data
    assert result.features == () and result.share is None and not result.dataset_drifted
    assert result.verdict.status == NOT_ENOUGH_DATA
    assert result.state.windows[-1].samples == 50  # the window is still recorded


def test_window_with_no_data(tmp_path: Path) -> None:
    write(tmp_path, T0)
    result = run(tmp_path, T0 + 5 * HOUR)  # nothing logged then
    assert result.rows == 0 and result.files == 0
    assert result.verdict.status == NOT_ENOUGH_DATA and result.untested == ()
    assert result.state.windows[-1].samples == 0


def test_a_tripped_alarm_is_not_cleared_by_an_empty_window(tmp_path: Path) -> None:
    state = AlarmState()
    for i in range(2):
        write(tmp_path, T0 + i * HOUR, shift=1.5, seed=i)
        state = run(tmp_path, T0 + i * HOUR, state).state
    assert state.tripped
    result = run(tmp_path, T0 + 2 * HOUR, state)
    assert result.rows == 0 and result.state.tripped and result.verdict.status == NOT_ENOUGH_DATA


def _put(root: Path, name: str, lines: list[Any], *, raw: bytes | None = None) -> None:
    folder = root / "m" / "v1" / hour_path(T0)
    folder.mkdir(parents=True, exist_ok=True)
    body = b"".join(x if isinstance(x, bytes) else json.dumps(x).encode() + b"\n"
                    for x in lines)
    (folder / name).write_bytes(raw if raw is not None else gzip.compress(body))


def test_other_versions_schemas_and_corrupt_lines_are_counted(tmp_path: Path) -> None:
    write(tmp_path, T0)
    write(tmp_path, T0, version="v2", seed=5, prefix="v2")  # another version's folder
    header = {"format": FORMAT, "model": "m", "version": "v1", "sample": 1.0, "schema": SCHEMA}
    good = {"id": "ok-1", "t": T0 + 5, "model": "m", "version": "v1",
            "inputs": {"x": [0.0, 0.0, 0.0], "c": "a"}, "outputs": {"y": 0}}
    _put(tmp_path, "0000000000000-0000001-aaaaaaaa-000001.jsonl.gz",
         [header, good, {**good, "id": "v2-row", "version": "v2"}, b"{not json\n",
          {**good, "id": "odd", "inputs": {"x": [1.0, 2.0, 3.0]}}])
    other = {**header, "schema": {"inputs": {"q": ["FP32", [-1]]}, "outputs": SCHEMA["outputs"]}}
    _put(tmp_path, "0000000000000-0000001-aaaaaaaa-000002.jsonl.gz", [other])
    _put(tmp_path, "0000000000000-0000001-aaaaaaaa-000003.jsonl.gz", [], raw=b"not gzip")
    result = run(tmp_path, T0)
    assert result.rows == ROWS + 1 and result.version == "v1"
    assert result.skipped == {"bad-json": 1, "file-corrupt": 1, "file-other-schema": 1,
                              "other-schema": 1, "other-version": 1}
    assert result.verdict.status == OK


def test_unknown_and_missing_features_are_listed_not_tested(tmp_path: Path) -> None:
    schema = {"inputs": {"x": ["FP64", [-1, 3]], "z": ["FP64", [-1]]},
              "outputs": {"y": ["INT64", [-1]]}}
    write(tmp_path, T0, schema=schema)
    result = run(tmp_path, T0, model=cfg(features=("x[0]", "c", "z", "nope")))
    assert [f.name for f in result.features] == ["x[0]"]
    assert sorted((u.name, u.reason) for u in result.untested) == sorted({
        ("c", NOT_IN_LOG), ("z", NOT_IN_REFERENCE), ("nope", NOT_IN_REFERENCE)})
    everything = run(tmp_path, T0, model=cfg())
    assert ("z", NOT_IN_REFERENCE) in {(u.name, u.reason) for u in everything.untested}
    assert [f.name for f in everything.features] == ["x[0]", "x[1]", "x[2]"]


def test_a_feature_with_no_values_gets_no_verdict(tmp_path: Path) -> None:
    with BatchWriter(tmp_path, "m", "v1", SCHEMA, max_rows=10_000, max_age_s=3600) as writer:
        for i in range(400):
            writer.add(f"n{i}", {"x": [float("nan"), float(i), 0.5], "c": "a"}, {"y": 0},
                       t=T0 + i)
    result = run(tmp_path, T0)
    assert ("x[0]", NO_VALUES) in {(u.name, u.reason) for u in result.untested}
    assert "x[0]" not in {f.name for f in result.features} and result.enough_data


def test_labels_arriving_late_appear_on_the_next_check(tmp_path: Path) -> None:
    model = cfg(label="y")
    ids = write(tmp_path, T0)
    first = run(tmp_path, T0, model=model)
    assert first.performance is not None and first.performance.labelled == 0
    assert first.performance.accuracy is None
    # The labels of the first window arrive during the second one; half are right.
    gen = np.random.default_rng(1)
    x0 = gen.normal(size=(ROWS, 3))[:, 0]
    truth = [(rid, int(x0[i] > 0) * 7 if i % 2 == 0 else 3, T0 + HOUR + 10 + i)
             for i, rid in enumerate(ids)]
    for h in range(2):  # one feedback file per hour of 't'
        part = [r for r in truth if int(r[2] // HOUR) == int((T0 + HOUR) // HOUR) + h]
        if part:
            write_feedback(tmp_path, "m", part)
    write(tmp_path, T0 + HOUR, seed=2, prefix="w2")
    second = run(tmp_path, T0 + HOUR, first.state, model=model)
    perf = second.performance
    assert perf is not None and perf.labelled == ROWS and perf.window_labelled == 0
    assert perf.accuracy == pytest.approx(0.5)
    assert perf.start == T0 and second.rows == ROWS  # drift judged on the window alone


def test_a_missing_label_output_is_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path, T0)
    with pytest.raises(CheckError, match="no output 'proba'"):
        run(tmp_path, T0, model=cfg(label="proba"))


def test_windows_are_judged_in_order(tmp_path: Path) -> None:
    write(tmp_path, T0)
    write(tmp_path, T0 + HOUR, seed=3)
    later = run(tmp_path, T0 + HOUR)
    with pytest.raises(HysteresisError, match="older than the last one judged"):
        run(tmp_path, T0, later.state)
    again = run(tmp_path, T0 + HOUR, later.state)  # the same window twice changes nothing
    assert again.state == later.state


def test_a_window_that_is_not_an_interval(tmp_path: Path) -> None:
    with pytest.raises(CheckError, match="not an interval"):
        check(cfg(), reference(), tmp_path, start=T0, end=T0, version="v1",
              state=AlarmState(), now=T0)


def test_few_valued_features_keep_their_values_past_the_raw_limit(tmp_path: Path) -> None:
    # 6,000 reference rows: more than the profile keeps raw, so it holds only quantiles;
    # the check must still test {0, 1, 2} as few values (Jensen-Shannon), as Evidently does.
    gen = np.random.default_rng(4)
    ref = gen.choice([0.0, 1.0, 2.0], size=6000, p=[0.5, 0.3, 0.2])
    profile = build_profile({"x[0]": ref, "x[1]": gen.normal(size=6000),
                             "x[2]": gen.normal(size=6000), "c": gen.choice(CATS, size=6000)})
    assert profile.feature("x[0]").values is None
    with BatchWriter(tmp_path, "m", "v1", SCHEMA, max_rows=10_000, max_age_s=3600) as writer:
        for i, v in enumerate(gen.choice([0.0, 1.0, 2.0], size=1000, p=[0.5, 0.3, 0.2])):
            writer.add(f"f{i}", {"x": [float(v), 0.0, 0.0], "c": "a"}, {"y": 0}, t=T0 + i)
    result = run(tmp_path, T0, profile=profile)
    few = next(f for f in result.features if f.name == "x[0]")
    assert few.test == "jensenshannon" and not few.drifted and few.reference_rows == 6000


def test_the_state_lives_beside_the_log_in_a_store(tmp_path: Path) -> None:
    from gha_mlops.data.stores import LocalStore
    from gha_mlops.errors import GhaMlopsError
    from gha_mlops.monitor.check import StateLocation
    from gha_mlops.monitor.hysteresis import AlarmStateError, Window, dumps_state

    store = LocalStore(tmp_path)
    where = StateLocation.of("m", store, None)
    assert where.key == "m/monitor/alarm.json" and where.load() == AlarmState()
    state = AlarmState(windows=(Window(T0, 0.5, 10),), tripped=True, tripped_at=T0)
    where.save(state)
    assert where.load() == state
    assert (tmp_path / "m" / "monitor" / "alarm.json").read_bytes() == dumps_state(state)
    (tmp_path / "m" / "monitor" / "alarm.json").write_bytes(b"x" * 70_000)
    with pytest.raises(GhaMlopsError, match="larger than 65536 bytes"):
        where.load()
    (tmp_path / "m" / "monitor" / "alarm.json").write_bytes(b'{"format": 1}')
    with pytest.raises(AlarmStateError, match=r"alarm\.json is not one gha-mlops can use"):
        where.load()
    assert StateLocation.of("m", tmp_path, None).where == str(tmp_path / "m/monitor/alarm.json")
    assert StateLocation.of("m", store, tmp_path / "s.json").file == tmp_path / "s.json"


def test_a_failed_check_leaves_the_stored_state_as_it_was(tmp_path: Path) -> None:
    from gha_mlops.monitor.check import CheckRequest, run_check

    write(tmp_path / "logs", T0)
    state_file = tmp_path / "logs" / "m" / "monitor" / "alarm.json"

    def request(model: MonitorModel, end: float) -> CheckRequest:
        return CheckRequest(workspace=tmp_path, model=model, version="v1",
                            profile=reference(), end=end, window_s=HOUR, log="logs")

    result, where = run_check(request(cfg(), T0 + HOUR), now=T0 + HOUR)
    assert where.where == str(state_file) and result.verdict.status == OK
    before = state_file.read_bytes()
    with pytest.raises(CheckError):  # the log has no output "proba"
        run_check(request(cfg(label="proba"), T0 + 2 * HOUR), now=T0 + 2 * HOUR)
    assert state_file.read_bytes() == before


def test_enough_rows_but_nothing_to_test_is_no_verdict(tmp_path: Path) -> None:
    write(tmp_path, T0)
    result = run(tmp_path, T0, model=cfg(features=("nope",)))
    assert result.rows == ROWS and result.features == () and not result.enough_data
    assert result.verdict.status == NOT_ENOUGH_DATA  # an empty test is not a clean window
    assert result.state.windows[-1].samples == 0


def test_a_cut_category_tail_tests_as_the_profile_buckets_it(tmp_path: Path) -> None:
    from gha_mlops.monitor.drift import feature_drift
    from gha_mlops.monitor.profile import bucket_categories, reference_values

    gen = np.random.default_rng(6)
    many = np.array([f"k{i}" for i in range(1500)])  # more than the profile keeps
    ref_c = gen.choice(many, size=6000)
    profile = build_profile({"c": ref_c})
    fp = profile.feature("c")
    assert fp.other_count > 0
    cur = np.concatenate([many[np.minimum(gen.zipf(1.2, size=1000), 1500) - 1],
                          np.array(["never-seen"] * 50)])
    with BatchWriter(tmp_path, "m", "v1", {"inputs": {"c": ["BYTES", [-1]]},
                                            "outputs": {"y": ["INT64", [-1]]}},
                     max_rows=10_000, max_age_s=3600) as writer:
        for i, v in enumerate(cur):
            writer.add(f"k{i}", {"c": str(v)}, {"y": 0}, t=T0 + i)
    [got] = run(tmp_path, T0, profile=profile).features
    slow = feature_drift("c", reference_values(fp), bucket_categories(fp, cur),
                         kind="categorical")
    assert (got.test, got.value, got.drifted) == (slow.test, slow.value, slow.drifted)
    assert got.reference_rows == slow.reference_rows and got.current_rows == 1050
