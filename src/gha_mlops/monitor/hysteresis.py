"""Hysteresis: a sequence of drift windows becomes one alarm with one verdict per window.

Drift tests flap: a score that wanders around a threshold would open an issue and dispatch a
retraining every other day. The alarm here holds them still:

- it **trips** only when ``k`` of the last ``n`` windows score above ``high``, the window
  just judged among them (a trip needs fresh evidence, never only old windows);
- once tripped it **clears** only when the last ``m`` windows score below ``low`` (``low <
  high``: a score that wanders between the two changes nothing);
- after each retraining dispatch a **cooldown** holds it: no new trip (hence no new dispatch)
  within ``cooldown_s`` seconds of the dispatch;
- a window with fewer than ``min_samples`` samples says "not enough data": it neither counts
  towards ``k`` nor clears. "The last ``n`` windows" are the last ``n`` windows *with enough
  data*: a quiet weekend neither hides a drift seen before and after it nor fakes one;
- one dispatch per trip: :attr:`Verdict.dispatch` is True from the window that trips the
  alarm until :func:`record_dispatch` records that the dispatch was made (at least once: a run
  that crashed between the verdict and the dispatch dispatches at the next run); an alarm
  that stays tripped dispatches nothing more, its open issue says it is still on.

Everything here is pure and reads no clock (``now`` is passed in), as ``runners.policy`` is;
only :func:`load_state` and :func:`save_state` touch a file, the alarm's state between runs,
which is read as hostile input: a damaged file is an error naming it, never a silent reset of
an active alarm.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeGuard

from gha_mlops._fs import JSONFileError, atomic_write_json, read_json_file
from gha_mlops.errors import ExitCode, GhaMlopsError, quoted

STATE_FORMAT = "gha-mlops.monitor.alarm/1"
MAX_N = 100  # the most windows a rule may look back over
MAX_HISTORY = 100  # windows remembered in the state (those with too few samples included)
MAX_STATE_BYTES = 64 * 1024  # 100 windows take about 10 KiB
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: every time here prints as a date

NOT_ENOUGH_DATA = "not enough data"
OK = "ok"
WATCH = "watch"
DRIFT = "drift"
COOLDOWN = "cooldown"
STATUSES = (NOT_ENOUGH_DATA, OK, WATCH, DRIFT, COOLDOWN)


class HysteresisError(GhaMlopsError):
    """A setting, a window or a clock the alarm cannot use (nonsense thresholds, a NaN score,
    a window older than the last one judged)."""

    exit_code = ExitCode.USAGE


class AlarmStateError(HysteresisError):
    """The alarm's state file cannot be read or is not an alarm state; the message names the
    file and the field, the hint says how to recover without losing an active alarm."""


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _time(value: object, what: str) -> None:
    if not _number(value) or not 0 <= value <= MAX_TIME:
        raise HysteresisError(f"{what} is {quoted(value)}, expected unix seconds from 0 to "
                              f"{MAX_TIME:.0f}")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class HysteresisConfig:
    """The alarm's settings, validated on construction (a :class:`HysteresisError` names the
    setting). ``m`` is the number of windows in a row below ``low`` that clear a tripped
    alarm (1: the last window alone)."""

    high: float = 0.5
    low: float = 0.3
    k: int = 2
    n: int = 3
    cooldown_s: float = 7 * 86400
    min_samples: int = 1000
    m: int = 1

    def __post_init__(self) -> None:
        for name in ("high", "low"):
            value = getattr(self, name)
            if not _number(value) or not 0 <= value <= 1:
                raise HysteresisError(f"hysteresis {name} is {quoted(value)}, expected a "
                                      "number from 0 to 1 (a drift score)")
        if not self.low < self.high:
            raise HysteresisError(
                f"hysteresis low ({self.low}) must be below high ({self.high})",
                hint="the alarm trips above high and clears below low; the gap between them "
                     "is what keeps a flapping score from flapping the alarm")
        for name, top in (("n", MAX_N), ("k", self.n), ("m", self.n)):
            value = getattr(self, name)
            if not _integer(value) or not 1 <= value <= top:
                raise HysteresisError(f"hysteresis {name} is {quoted(value)}, expected a whole "
                                      f"number from 1 to {top}" + (" (n)" if name != "n" else ""),
                                      hint="trip when k of the last n windows are over high; "
                                           "clear when the last m are under low")
        if not _number(self.cooldown_s) or not 0 <= self.cooldown_s <= 366 * 86400:
            raise HysteresisError(f"hysteresis cooldown_s is {quoted(self.cooldown_s)}, "
                                  "expected seconds from 0 to a year (31622400)")
        if not _integer(self.min_samples) or not 1 <= self.min_samples <= 10**12:
            raise HysteresisError(f"hysteresis min_samples is {quoted(self.min_samples)}, "
                                  "expected a whole number from 1")


@dataclass(frozen=True)
class Window:
    """One judged window: when it ended (unix seconds), its drift score (0 to 1: the share
    of drifted features, or a distance scaled to it) and the number of samples it held.
    Validated on construction: a NaN score or a negative count is a :class:`HysteresisError`,
    never a verdict."""

    end: float
    score: float
    samples: int

    def __post_init__(self) -> None:
        _time(self.end, "the window's end")
        if not _number(self.score) or not 0 <= self.score <= 1:  # NaN fails both
            raise HysteresisError(f"the window's drift score is {quoted(self.score)}, expected "
                                  "a number from 0 to 1",
                                  hint="a drift test that gives no score has no verdict to "
                                       "give: fix the window's data, not the alarm")
        if not _integer(self.samples) or not 0 <= self.samples <= 10**15:
            raise HysteresisError(f"the window's sample count is {quoted(self.samples)}, "
                                  "expected a whole number from 0")


@dataclass(frozen=True)
class AlarmState:
    """What the alarm remembers between runs: the last windows (oldest first, ends strictly
    increasing, at most ``MAX_HISTORY``), whether it is tripped and since when (the clock at
    the trip), and when a retraining was last dispatched (the clock at the dispatch).
    ``AlarmState()`` is the state of a model never judged."""

    windows: tuple[Window, ...] = ()
    tripped: bool = False
    tripped_at: float | None = None
    last_dispatch: float | None = None

    def __post_init__(self) -> None:
        if len(self.windows) > MAX_HISTORY:
            raise HysteresisError(f"the alarm holds {len(self.windows)} windows, at most "
                                  f"{MAX_HISTORY} are kept")
        for before, after in zip(self.windows, self.windows[1:], strict=False):
            if not before.end < after.end:
                raise HysteresisError("the alarm's windows are not in order: "
                                      f"{_iso(after.end)} follows {_iso(before.end)}")
        if self.tripped != (self.tripped_at is not None):
            raise HysteresisError("a tripped alarm needs tripped_at, and only a tripped one "
                                  f"has it (tripped {self.tripped}, tripped_at "
                                  f"{quoted(self.tripped_at)})")
        if self.tripped_at is not None:
            _time(self.tripped_at, "tripped_at")
        if self.last_dispatch is not None:
            _time(self.last_dispatch, "last_dispatch")

    @property
    def dispatch_pending(self) -> bool:
        """Tripped, and no dispatch recorded since the trip."""
        return self.tripped_at is not None and (self.last_dispatch is None
                                                or self.last_dispatch < self.tripped_at)


@dataclass(frozen=True)
class Verdict:
    """The alarm's answer for one window.

    ``status`` is one of ``STATUSES``: "not enough data" (the window is too small to say
    anything; ``tripped`` still tells the alarm's standing state), "ok" (no counted window
    over high), "watch" (some are, not enough to trip), "drift" (the alarm is tripped),
    "cooldown" (it would trip, but a retraining was dispatched within the cooldown).
    ``dispatch`` is True while the alarm is tripped and its dispatch is not recorded yet.
    ``reason`` is one human line with the numbers.
    """

    status: str
    tripped: bool
    newly_tripped: bool
    cleared: bool
    dispatch: bool
    reason: str
    scores: tuple[float, ...] = field(default=())  # the counted windows' scores, oldest first


def _counted(windows: tuple[Window, ...], config: HysteresisConfig) -> list[Window]:
    """The last ``n`` windows with enough data, oldest first."""
    return [w for w in windows if w.samples >= config.min_samples][-config.n:]


def _list(scores: list[float]) -> str:
    return ", ".join(f"{s:.2f}" for s in scores)


def step(state: AlarmState, window: Window, config: HysteresisConfig, *,
         now: float) -> tuple[AlarmState, Verdict]:
    """Judge ``window`` (the newest) against the alarm ``state`` at clock ``now``: the new
    state to save and the verdict. Pure: the same arguments give the same answer.

    A window older than the last one judged is refused (:class:`HysteresisError`); the very
    same window again changes nothing (the state comes back as it is, with its standing
    verdict: ``dispatch`` still True if the trip's dispatch was not recorded), while a window
    with the last one's end and other numbers is refused, since a window is judged once.
    """
    _time(now, "the clock")
    last = state.windows[-1] if state.windows else None
    if last is not None and window.end <= last.end:
        if window == last:
            return state, _standing(state, config, now)
        if window.end == last.end:
            raise HysteresisError(
                f"the window ending {_iso(window.end)} was judged already with score "
                f"{last.score:.4g} from {last.samples} samples; now it has {window.score:.4g} "
                f"from {window.samples}",
                hint="a window is judged once: give the next window (a later end)")
        raise HysteresisError(
            f"the window ending {_iso(window.end)} is older than the last one judged "
            f"({_iso(last.end)})",
            hint="windows are judged in order: give a window that ends after the last one")
    windows = (*state.windows, window)[-MAX_HISTORY:]
    moved = replace(state, windows=windows)
    if window.samples < config.min_samples:
        verdict = _standing(moved, config, now)
        return moved, replace(verdict, status=NOT_ENOUGH_DATA, reason=(
            f"{window.samples} samples in the window ending {_iso(window.end)}, fewer than the "
            f"{config.min_samples} needed for a verdict; the alarm stays "
            + ("tripped" if moved.tripped else "clear")))
    if state.tripped:
        return _judge_tripped(moved, config, now)
    return _judge_clear(moved, config, now)


def _judge_tripped(state: AlarmState, config: HysteresisConfig,
                   now: float) -> tuple[AlarmState, Verdict]:
    """A tripped alarm with a new counted window: it clears when the last ``m`` are under
    low, and otherwise stays."""
    recent = _counted(state.windows, config)[-config.m:]
    if len(recent) == config.m and all(w.score < config.low for w in recent):
        cleared = replace(state, tripped=False, tripped_at=None)
        after = _standing(cleared, config, now)
        what = ("the last window" if config.m == 1
                else f"the last {config.m} windows")
        return cleared, replace(after, cleared=True, reason=(
            f"cleared: {what} under {config.low:.2f} ({_list([w.score for w in recent])})"
            f"; {after.reason}"))
    return state, _standing(state, config, now)


def _judge_clear(state: AlarmState, config: HysteresisConfig,
                 now: float) -> tuple[AlarmState, Verdict]:
    """A clear alarm with a new counted window: it trips when ``k`` of the last ``n`` counted
    windows, the new one among them, are over high, unless a cooldown holds it."""
    counted = _counted(state.windows, config)
    over = [w.score for w in counted if w.score > config.high]
    if len(over) < config.k or counted[-1].score <= config.high:
        return state, _standing(state, config, now)
    summary = (f"{len(over)} of the last {len(counted)} windows over {config.high:.2f} "
               f"({_list(over)})")
    until = _cooldown_until(state, config, now)
    if until is not None:
        return state, Verdict(
            status=COOLDOWN, tripped=False, newly_tripped=False, cleared=False, dispatch=False,
            reason=(f"{summary}, but a retraining was dispatched at "
                    f"{_iso(state.last_dispatch or 0.0)}: no new trip before {_iso(until)}"),
            scores=tuple(w.score for w in counted))
    tripped = replace(state, tripped=True, tripped_at=now)
    return tripped, Verdict(status=DRIFT, tripped=True, newly_tripped=True, cleared=False,
                            dispatch=True, reason=summary,
                            scores=tuple(w.score for w in counted))


def _cooldown_until(state: AlarmState, config: HysteresisConfig, now: float) -> float | None:
    """When the cooldown of the last dispatch ends, if ``now`` is inside it."""
    if state.last_dispatch is None:
        return None
    until = state.last_dispatch + config.cooldown_s
    return until if now < until else None


def _standing(state: AlarmState, config: HysteresisConfig, now: float) -> Verdict:
    """The verdict that the state stands on, with no trip or clear happening now."""
    counted = _counted(state.windows, config)
    scores = tuple(w.score for w in counted)
    latest = f"latest {scores[-1]:.2f}" if scores else "no window with enough data yet"
    if state.tripped_at is not None:
        return Verdict(status=DRIFT, tripped=True, newly_tripped=False, cleared=False,
                       dispatch=state.dispatch_pending, scores=scores,
                       reason=(f"drift alarm on since {_iso(state.tripped_at)}; it clears "
                               f"under {config.low:.2f} ({latest})"))
    over = [s for s in scores if s > config.high]
    reason = (f"{len(over)} of the last {len(scores)} windows over {config.high:.2f}"
              + (f" ({_list(over)})" if over else f" ({latest})")
              + (f"; it trips at {config.k} of {config.n}" if over else ""))
    until = _cooldown_until(state, config, now)
    if until is not None:
        reason += f"; in the cooldown of a retraining until {_iso(until)}"
    return Verdict(status=WATCH if over else OK, tripped=False, newly_tripped=False,
                   cleared=False, dispatch=False, reason=reason, scores=scores)


def record_dispatch(state: AlarmState, *, now: float) -> AlarmState:
    """The state once a retraining was dispatched at clock ``now``: the trip's dispatch is
    done (``dispatch`` turns False) and the cooldown starts. Also for a retraining
    dispatched by hand (the alarm need not be tripped). A clock behind the trip (another
    runner's clock, a second slow) counts as the trip's time, so the dispatch is never
    taken for one still owed."""
    _time(now, "the clock")
    at = now if state.tripped_at is None else max(now, state.tripped_at)
    return replace(state, last_dispatch=at)


# -- the state file --------------------------------------------------------------------------

_RECOVER = ("this file holds the drift alarm between runs: restore it (from the previous "
            "run's copy), or delete it to start over knowingly: that forgets an active alarm "
            "and its cooldown")


def dumps_state(state: AlarmState) -> bytes:
    """``state`` as the bytes of its file (canonical JSON), for a file or an object store."""
    from gha_mlops._fs import dumps_json

    return dumps_json(_state_doc(state)).encode("utf-8")


def loads_state(data: bytes | None, *, where: str) -> AlarmState:
    """The alarm state in ``data`` (read from ``where``, named in errors); the empty state
    when ``data`` is None (no state stored yet: a model never judged). Anything else that is
    not a valid state is an :class:`AlarmStateError` naming ``where`` and the field, never an
    empty state, which would silently forget an active alarm."""
    import json

    if data is None:
        return AlarmState()
    if len(data) > MAX_STATE_BYTES:
        raise AlarmStateError(f"the drift alarm state {where} is larger than "
                              f"{MAX_STATE_BYTES} bytes", hint=_RECOVER, file=where)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AlarmStateError(f"the drift alarm state {where} is not JSON", hint=_RECOVER,
                              file=where) from None
    try:
        return _state_of(doc)
    except HysteresisError as err:
        raise AlarmStateError(f"the drift alarm state {where} is not one gha-mlops can use: "
                              f"{err.message}", hint=_RECOVER, file=where) from None


def _state_doc(state: AlarmState) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "tripped": state.tripped,
        "tripped_at": state.tripped_at,
        "last_dispatch": state.last_dispatch,
        "windows": [{"end": w.end, "score": w.score, "samples": w.samples}
                    for w in state.windows],
    }


def save_state(path: Path, state: AlarmState) -> None:
    """Write ``state`` to ``path`` atomically and durably (it is the only copy): a reader
    sees the old state or the new one, never a mix."""
    atomic_write_json(path, _state_doc(state), durable=True)


def load_state(path: Path) -> AlarmState:
    """The alarm state in ``path``; the empty state when there is no such file (a model
    never judged). Anything else that is not a valid state (unreadable, not JSON, too large,
    another format, a wrong type or bound, windows out of order) is an
    :class:`AlarmStateError` naming the file and the field: never an empty state, which would
    silently forget an active alarm."""
    try:
        doc = read_json_file(path, max_bytes=MAX_STATE_BYTES)
    except FileNotFoundError:
        return AlarmState()
    except OSError as err:
        raise AlarmStateError(f"cannot read the drift alarm state {path}: {err.strerror}",
                              hint=_RECOVER, file=path) from None
    except JSONFileError as err:
        raise AlarmStateError(f"the drift alarm state {path} {err}", hint=_RECOVER,
                              file=path) from None
    try:
        return _state_of(doc)
    except HysteresisError as err:
        raise AlarmStateError(f"the drift alarm state {path} is not one gha-mlops can use: "
                              f"{err.message}", hint=_RECOVER, file=path) from None


def _state_of(doc: object) -> AlarmState:
    """Validate a decoded state document into an :class:`AlarmState`."""
    keys = {"format", "tripped", "tripped_at", "last_dispatch", "windows"}
    if not isinstance(doc, dict):
        raise HysteresisError(f"expected a JSON object, found {type(doc).__name__}")
    if doc.get("format") != STATE_FORMAT:
        raise HysteresisError(f"format is {quoted(doc.get('format'))}, expected "
                              f"{STATE_FORMAT!r} (written by another version of gha-mlops?)")
    if set(doc) != keys:
        odd = sorted(map(quoted, set(doc) ^ keys))
        raise HysteresisError(f"unexpected or missing keys: {', '.join(odd)}")
    if not isinstance(doc["tripped"], bool):
        raise HysteresisError(f"tripped is {quoted(doc['tripped'])}, expected true or false")
    for key in ("tripped_at", "last_dispatch"):
        if doc[key] is not None:
            _time(doc[key], key)
    raw = doc["windows"]
    if not isinstance(raw, list) or len(raw) > MAX_HISTORY:
        raise HysteresisError(f"windows is not a list of at most {MAX_HISTORY} windows")
    windows = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != {"end", "score", "samples"}:
            raise HysteresisError(f"windows[{i}] is not an object with end, score, samples")
        try:
            windows.append(Window(end=item["end"], score=item["score"],
                                  samples=item["samples"]))
        except HysteresisError as err:
            raise HysteresisError(f"windows[{i}]: {err.message}") from None
    return AlarmState(windows=tuple(windows), tripped=doc["tripped"],
                      tripped_at=doc["tripped_at"], last_dispatch=doc["last_dispatch"])
