"""The drift alarm's hysteresis: the issue's scenarios as sequences of windows (no drift, a
sudden shift, slow drift, noise flapping around the threshold, too few samples, a retraining
then its cooldown, recovery), the order and idempotence of windows, and the state file read
as hostile input."""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.errors import ExitCode, GhaMlopsError
from gha_mlops.monitor.hysteresis import (
    COOLDOWN,
    DRIFT,
    MAX_HISTORY,
    NOT_ENOUGH_DATA,
    OK,
    STATE_FORMAT,
    WATCH,
    AlarmState,
    AlarmStateError,
    HysteresisConfig,
    HysteresisError,
    Verdict,
    Window,
    load_state,
    record_dispatch,
    save_state,
    step,
)

DAY = 86400.0
T0 = 1_780_000_000.0  # 2026-05-28: any fixed time; nothing here reads the clock
CONFIG = HysteresisConfig()  # high 0.5, low 0.3, 2 of 3, 7-day cooldown, 1000 samples, m 1


@dataclass
class Run:
    """What a monitor schedule would have seen over a sequence of daily windows."""

    verdicts: list[Verdict]
    state: AlarmState
    dispatched_at: list[int]  # indexes of the windows whose verdict dispatched a retraining


def simulate(scores: Sequence[float], config: HysteresisConfig = CONFIG, *,
             samples: Sequence[int] | None = None, state: AlarmState | None = None,
             start: float = T0, period: float = DAY) -> Run:
    """Judge one window per period, an hour after it ends, dispatching (and recording the
    dispatch) whenever the verdict says so, as the monitor command will."""
    state = state or AlarmState()
    verdicts, dispatched = [], []
    for i, score in enumerate(scores):
        end = start + i * period
        window = Window(end=end, score=score,
                        samples=samples[i] if samples is not None else 5000)
        state, verdict = step(state, window, config, now=end + 3600)
        if verdict.dispatch:
            dispatched.append(i)
            state = record_dispatch(state, now=end + 3660)
        verdicts.append(verdict)
    return Run(verdicts, state, dispatched)


def statuses(run: Run) -> list[str]:
    return [v.status for v in run.verdicts]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"high": 0.3, "low": 0.3}, "low (0.3) must be below high"),
    ({"high": 0.2, "low": 0.4}, "low (0.4) must be below high"),
    ({"high": 1.5}, "high is 1.5"),
    ({"low": -0.1}, "low is -0.1"),
    ({"high": math.nan}, "high is nan"),
    ({"high": "0.5"}, "high is '0.5'"),
    ({"k": 0}, "k is 0"),
    ({"k": 4, "n": 3}, "k is 4, expected a whole number from 1 to 3"),
    ({"n": 101, "k": 2}, "n is 101"),
    ({"k": True}, "k is True"),
    ({"k": 2.0}, "k is 2.0"),
    ({"m": 4}, "m is 4"),
    ({"cooldown_s": -1}, "cooldown_s is -1"),
    ({"cooldown_s": math.inf}, "cooldown_s is inf"),
    ({"min_samples": 0}, "min_samples is 0"),
])
def test_nonsense_settings_are_refused_naming_the_setting(kwargs: dict[str, Any],
                                                          named: str) -> None:
    with pytest.raises(HysteresisError, match=re.escape(named)):
        HysteresisConfig(**kwargs)


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"score": math.nan}, "drift score is nan"),
    ({"score": math.inf}, "drift score is inf"),
    ({"score": 1.01}, "drift score is 1.01"),
    ({"score": None}, "drift score is None"),
    ({"samples": -1}, "sample count is -1"),
    ({"samples": True}, "sample count is True"),
    ({"samples": 10.0}, "sample count is 10.0"),
    ({"end": math.nan}, "end is nan"),
    ({"end": -5.0}, "end is -5.0"),
])
def test_a_window_without_a_usable_score_or_count_is_an_error_not_a_verdict(
        kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(HysteresisError, match=re.escape(named)) as err:
        Window(**{"end": T0, "score": 0.1, "samples": 5000, **kwargs})
    assert err.value.exit_code == ExitCode.USAGE


# --------------------------------------------------------------------------- scenarios


def test_no_drift_stays_ok_and_never_dispatches() -> None:
    rng = random.Random(1)
    run = simulate([rng.uniform(0.0, 0.25) for _ in range(60)])
    assert set(statuses(run)) == {OK}
    assert run.dispatched_at == []
    assert not run.state.tripped


def test_a_sudden_shift_trips_once_on_the_kth_window_over_high() -> None:
    run = simulate([0.05] * 10 + [0.8] * 20)
    assert statuses(run)[:10] == [OK] * 10
    assert statuses(run)[10] == WATCH  # one window over: not yet
    assert run.verdicts[11].newly_tripped and run.verdicts[11].dispatch
    assert statuses(run)[11:] == [DRIFT] * 19
    assert run.dispatched_at == [11]
    assert sum(v.newly_tripped for v in run.verdicts) == 1


def test_slow_drift_trips_once_when_k_of_the_last_n_windows_are_over() -> None:
    scores = [i / 40 for i in range(41)]  # 0.0 to 1.0, over 0.5 from index 21
    run = simulate(scores)
    first_over = next(i for i, s in enumerate(scores) if s > CONFIG.high)
    assert run.dispatched_at == [first_over + 1]  # the second window over high
    assert statuses(run)[first_over] == WATCH
    assert all(s == DRIFT for s in statuses(run)[first_over + 1:])


def test_k_of_n_counts_over_high_windows_that_are_not_in_a_row() -> None:
    run = simulate([0.6, 0.4, 0.6, 0.4, 0.4, 0.6, 0.4, 0.4])
    # 0.6 0.4 0.6 -> 2 of the last 3 over, the new one among them: trips on the third window.
    assert run.dispatched_at == [2]
    assert run.verdicts[2].reason == "2 of the last 3 windows over 0.50 (0.60, 0.60)"
    # Spread out further (1 of every 3), the same scores never trip.
    run = simulate([0.6, 0.4, 0.4] * 10)
    assert run.dispatched_at == [] and set(statuses(run)) == {WATCH}


def test_old_windows_alone_do_not_trip_a_window_that_shows_no_drift() -> None:
    # Two windows over high inside a cooldown, then the cooldown ends on a quiet window: the
    # quiet window must not trip the alarm on old evidence.
    state = record_dispatch(AlarmState(), now=T0 - 5 * DAY)
    run = simulate([0.7, 0.7, 0.35, 0.1], state=state)  # cooldown ends at T0 + 2 days
    assert statuses(run)[:2] == [WATCH, COOLDOWN]
    assert run.dispatched_at == []


@pytest.mark.parametrize("seed", range(200))
def test_noise_flapping_around_high_dispatches_at_most_once_in_100_windows(seed: int) -> None:
    # Noise around high that crosses it about every other window but stays inside the band
    # between low and high's mirror: hysteresis holds it to one trip. (Noise whose tail dips
    # under low is a recovery the alarm should see: it may clear, and trip again after the
    # cooldown.)
    scores = _noise(random.Random(seed))
    run = simulate(scores)
    assert len(run.dispatched_at) <= 1
    assert sum(v.newly_tripped for v in run.verdicts) <= 1


def _noise(rng: random.Random, windows: int = 100) -> list[float]:
    width = (CONFIG.high - CONFIG.low) * 0.9
    return [rng.uniform(CONFIG.high - width, CONFIG.high + width) for _ in range(windows)]


def test_the_same_noise_without_hysteresis_would_dispatch_again_and_again() -> None:
    # The control for the test above: the noise really flaps across the threshold.
    scores = _noise(random.Random(7))
    bare = HysteresisConfig(high=0.5, low=0.4999, k=1, n=1, cooldown_s=0)
    assert len(simulate(scores, bare).dispatched_at) > 10
    assert len(simulate(scores).dispatched_at) == 1


def test_too_few_samples_say_not_enough_data_and_never_count_towards_k() -> None:
    run = simulate([0.9] * 10, samples=[999] * 10)
    assert set(statuses(run)) == {NOT_ENOUGH_DATA}
    assert run.dispatched_at == [] and not run.state.tripped
    assert run.verdicts[0].reason.startswith("999 samples in the window ending ")
    assert "fewer than the 1000 needed" in run.verdicts[0].reason


def test_too_few_samples_never_clear_a_tripped_alarm() -> None:
    run = simulate([0.9, 0.9, 0.0, 0.0, 0.0], samples=[5000, 5000, 10, 10, 10])
    assert statuses(run) == [WATCH, DRIFT, NOT_ENOUGH_DATA, NOT_ENOUGH_DATA, NOT_ENOUGH_DATA]
    assert all(v.tripped for v in run.verdicts[1:])
    assert not any(v.cleared for v in run.verdicts)


def test_the_last_n_windows_are_those_with_enough_data() -> None:
    # A drift seen before and after a quiet weekend trips the alarm: the weekend hides nothing.
    run = simulate([0.8, 0.8, 0.8, 0.8], samples=[5000, 12, 40, 5000])
    assert statuses(run) == [WATCH, NOT_ENOUGH_DATA, NOT_ENOUGH_DATA, DRIFT]
    assert run.verdicts[3].reason == "2 of the last 2 windows over 0.50 (0.80, 0.80)"


def test_recovery_clears_only_below_low() -> None:
    run = simulate([0.8, 0.8, 0.45, 0.35, 0.31, 0.3, 0.29, 0.1])
    assert statuses(run)[1:6] == [DRIFT] * 5  # 0.45 .. 0.30: between low and high, or on low
    assert [v.cleared for v in run.verdicts] == [False] * 6 + [True, False]
    assert not run.verdicts[6].tripped and statuses(run)[6:] == [OK, OK]
    assert run.verdicts[6].reason.startswith("cleared: the last window under 0.30 (0.29)")


def test_recovery_with_m_windows_needs_m_in_a_row_below_low() -> None:
    config = HysteresisConfig(m=2)
    run = simulate([0.8, 0.8, 0.2, 0.4, 0.2, 0.2], config)
    assert [v.tripped for v in run.verdicts] == [False, True, True, True, True, False]
    assert run.verdicts[5].cleared


def test_a_retraining_starts_a_cooldown_then_the_alarm_may_trip_again() -> None:
    # Drift, a dispatch, the retrained model brings the score down (clear), a new shift
    # within the 7 days is held back; after the cooldown it trips and dispatches again.
    scores = [0.8, 0.8, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    run = simulate(scores)
    # Dispatched an hour after window 1 ended: window 8 is judged an hour after its end,
    # a minute before the 7 days are up; window 9 is the first outside.
    assert run.dispatched_at == [1, 9]
    # After the clear, the windows over high before it still count (watch), not a trip.
    assert statuses(run) == [WATCH, DRIFT, WATCH, WATCH, WATCH, COOLDOWN, COOLDOWN, COOLDOWN,
                             COOLDOWN, DRIFT, DRIFT]
    assert "no new trip before" in run.verdicts[5].reason
    assert not any(v.dispatch for v in run.verdicts[2:9])


def test_an_alarm_that_stays_tripped_dispatches_once() -> None:
    run = simulate([0.9] * 40)  # five cooldowns long
    assert run.dispatched_at == [1]
    assert set(statuses(run)[1:]) == {DRIFT}


def test_a_trip_dispatches_until_the_dispatch_is_recorded() -> None:
    # At least once: a run that crashed between the verdict and the dispatch dispatches next.
    state = AlarmState()
    for i, score in enumerate([0.8, 0.8, 0.8, 0.1]):
        state, verdict = step(state, Window(T0 + i * DAY, score, 5000), CONFIG,
                              now=T0 + i * DAY + 60)
        assert verdict.dispatch == (i in (1, 2))
        assert verdict.newly_tripped == (i == 1)
        if i == 2:
            state = record_dispatch(state, now=T0 + i * DAY + 90)
    assert not state.tripped  # cleared by the 0.1


def test_a_dispatch_recorded_on_a_clock_behind_the_trip_still_counts() -> None:
    state, verdict = step(AlarmState(), Window(T0, 0.9, 5000), HysteresisConfig(k=1),
                          now=T0 + 100)
    assert verdict.dispatch
    state = record_dispatch(state, now=T0 + 99)  # another runner, a second slow
    assert not state.dispatch_pending
    assert state.last_dispatch == T0 + 100


def test_a_dispatch_by_hand_starts_a_cooldown_too() -> None:
    state = record_dispatch(AlarmState(), now=T0 - DAY)
    run = simulate([0.9, 0.9, 0.9], state=state)
    assert statuses(run) == [WATCH, COOLDOWN, COOLDOWN]


# --------------------------------------------------------------------------- order


def test_a_window_older_than_the_last_one_is_refused() -> None:
    state, _ = step(AlarmState(), Window(T0, 0.1, 5000), CONFIG, now=T0)
    with pytest.raises(HysteresisError, match="is older than the last one judged") as err:
        step(state, Window(T0 - 1, 0.1, 5000), CONFIG, now=T0)
    assert err.value.hint and "in order" in err.value.hint


def test_the_same_window_twice_changes_nothing() -> None:
    state = AlarmState()
    state, _ = step(state, Window(T0, 0.9, 5000), CONFIG, now=T0)
    tripped, first = step(state, Window(T0 + DAY, 0.9, 5000), CONFIG, now=T0 + DAY)
    again, second = step(tripped, Window(T0 + DAY, 0.9, 5000), CONFIG, now=T0 + DAY + 5)
    assert again == tripped
    assert (second.status, second.tripped, second.dispatch) == (DRIFT, True, True)
    done = record_dispatch(again, now=T0 + DAY + 6)
    assert step(done, Window(T0 + DAY, 0.9, 5000), CONFIG, now=T0 + DAY + 7)[0] == done
    assert first.newly_tripped


def test_the_same_window_end_with_other_numbers_is_refused() -> None:
    state, _ = step(AlarmState(), Window(T0, 0.1, 5000), CONFIG, now=T0)
    with pytest.raises(HysteresisError, match=re.escape("was judged already with score 0.1")):
        step(state, Window(T0, 0.2, 5000), CONFIG, now=T0)


def test_step_is_pure() -> None:
    state, _ = step(AlarmState(), Window(T0, 0.9, 5000), CONFIG, now=T0)
    before = repr(state)
    one = step(state, Window(T0 + 1, 0.9, 5000), CONFIG, now=T0 + 2)
    two = step(state, Window(T0 + 1, 0.9, 5000), CONFIG, now=T0 + 2)
    assert one == two and repr(state) == before


def test_the_history_is_bounded() -> None:
    run = simulate([0.1] * (MAX_HISTORY + 50), period=3600)
    assert len(run.state.windows) == MAX_HISTORY
    assert run.state.windows[-1].end == T0 + (MAX_HISTORY + 49) * 3600


# --------------------------------------------------------------------------- the state file


def test_the_state_survives_a_save_and_a_load(tmp_path: Path) -> None:
    path = tmp_path / "monitor" / "alarm.json"
    assert load_state(path) == AlarmState()  # never judged: the empty state
    run = simulate([0.8, 0.8, 0.2, 0.6], samples=[5000, 5000, 3, 5000])
    assert run.state.tripped and run.state.last_dispatch is not None
    save_state(path, run.state)
    assert load_state(path) == run.state
    assert os.listdir(path.parent) == ["alarm.json"]  # no temp file left beside it
    assert json.loads(path.read_text())["format"] == STATE_FORMAT
    # A run that picks up the saved state goes on as one that never stopped.
    later = simulate([0.1], state=load_state(path), start=T0 + 4 * DAY)
    assert later.verdicts[0].cleared


def _valid_doc() -> dict[str, Any]:
    return {"format": STATE_FORMAT, "tripped": True, "tripped_at": T0, "last_dispatch": T0,
            "windows": [{"end": T0 - DAY, "score": 0.7, "samples": 5000},
                        {"end": T0, "score": 0.8, "samples": 5000}]}


def _with(**changes: Any) -> str:
    doc = _valid_doc()
    doc.update(changes)
    return json.dumps(doc)


def _window(**changes: Any) -> str:
    doc = _valid_doc()
    doc["windows"][1].update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize(("text", "says"), [
    ("", "is not valid JSON"),
    (_with()[:-40], "is not valid JSON"),  # cut short
    ("[]", "expected a JSON object, found list"),
    ('"tripped"', "expected a JSON object, found str"),
    (_with(format="gha-mlops.monitor.alarm/2"), "format is 'gha-mlops.monitor.alarm/2'"),
    (_with(extra=1), "unexpected or missing keys: 'extra'"),
    (_with(tripped="yes"), "tripped is 'yes', expected true or false"),
    (_with(tripped_at=None), "a tripped alarm needs tripped_at"),
    (_with(tripped=False), "only a tripped one"),
    (_with(tripped_at="2026-01-01"), "tripped_at is '2026-01-01'"),
    (_with(last_dispatch=-1), "last_dispatch is -1"),
    (_with(last_dispatch=1e300), "last_dispatch is 1e+300"),
    (_with().replace(f'"last_dispatch": {T0}', '"last_dispatch": NaN'), "last_dispatch is nan"),
    (_with(windows={"end": 1}), "windows is not a list"),
    (_with(windows=[{"end": T0 + i, "score": 0.1, "samples": 1} for i in range(101)]),
     "windows is not a list of at most 100"),
    (_with(windows=[1]), "windows[0] is not an object"),
    (_window(score="0.8"), "windows[1]: the window's drift score is '0.8'"),
    (_window(score=7), "windows[1]: the window's drift score is 7"),
    (_window(samples=5000.5), "windows[1]: the window's sample count is 5000.5"),
    (_window(samples=False), "windows[1]: the window's sample count is False"),
    (_window(extra=1), "windows[1] is not an object with end, score, samples"),
    (_window(end=T0 - DAY), "windows are not in order"),
    ("[" * 60000, "is not valid JSON"),  # nested deeper than the parser goes
    (" " * (64 * 1024 + 1), "is larger than 65536 bytes"),
])
def test_a_damaged_state_is_an_error_naming_the_file_never_a_reset(
        tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "alarm.json"
    path.write_text(text)
    with pytest.raises(AlarmStateError, match=re.escape(says)) as err:
        load_state(path)
    assert err.value.file == str(path) and str(path) in err.value.message
    assert err.value.hint and "delete it" in err.value.hint and "forgets an active alarm" \
        in err.value.hint
    assert err.value.exit_code == ExitCode.USAGE
    assert isinstance(err.value, GhaMlopsError)


def test_a_state_path_that_is_not_a_readable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AlarmStateError, match="cannot read the drift alarm state"):
        load_state(tmp_path)  # a directory
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(AlarmStateError, match="is not a regular file"):
        load_state(tmp_path / "fifo")  # would block a plain read forever


def test_a_tripped_state_written_by_hand_with_a_bool_for_a_time_is_refused(
        tmp_path: Path) -> None:
    path = tmp_path / "alarm.json"
    path.write_text(_with(tripped_at=True))
    with pytest.raises(AlarmStateError, match="tripped_at is True"):
        load_state(path)
