"""``monitor check`` as a service: one window of the prediction log against the reference
profile, with drift per feature, the dataset's drift, the predictions' drift, performance
where labels arrived, and the drift alarm's verdict.

:func:`check` is a function of (config, profile, log, window, alarm state, clock): it reads
the log and returns a :class:`CheckResult` holding the new alarm state; it writes nothing.
The caller saves the state only once the check succeeded, so a failed check never moves the
alarm.

Bad input never becomes a verdict:

- a window with no rows, fewer than ``alarm.min_samples``, or with no feature left to test
  says "not enough data" (the window is still recorded in the state, with its row count, and
  never counts towards a trip);
- a feature in the log that the reference does not know is listed, not tested; a reference
  feature (or one named in ``features``) absent from the log is listed; a feature with no
  values left in the window (all missing) is listed;
- rows of another version or schema and corrupt lines or files are skipped by the reader and
  counted by reason in :attr:`CheckResult.skipped`.

Labels arrive late: performance is measured on the predictions of this window *and the one
before it* (``[start - (end - start), end)``), joined with every label whose ``t`` lies from
that span's start up to ``now``; so a label that arrives up to one window after its
prediction is counted by the next check. This is read only when ``label`` is configured.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops.errors import ExitCode, GhaMlopsError, quoted
from gha_mlops.monitor.drift import EmptyColumnError, FeatureDrift, feature_drift
from gha_mlops.monitor.hysteresis import (
    AlarmState,
    HysteresisConfig,
    Verdict,
    Window,
    step,
)

if TYPE_CHECKING:
    import numpy as np

    from gha_mlops.config.model import MonitorModel
    from gha_mlops.monitor.predlog import LogWindow, Source
    from gha_mlops.monitor.profile import FeatureProfile, Profile

MAX_CATEGORY_BARS = 20  # the categories a histogram shows; the rest are summed as "other"
NOT_IN_REFERENCE = "not in the reference profile"
NOT_IN_LOG = "not in the log"
NO_VALUES = "no values in the window"


class CheckError(GhaMlopsError):
    """The check cannot run as asked (a window that is not an interval, a log whose
    schema does not give the configured label)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Untested:
    """A column that got no test, and why (one of ``NOT_IN_REFERENCE``, ``NOT_IN_LOG``,
    ``NO_VALUES``)."""

    name: str
    reason: str


@dataclass(frozen=True)
class Histogram:
    """A drifted column, reference against current, for the report's plot: numerical
    columns on the profile's bin ``edges`` (``labels`` empty), categorical ones on
    ``labels`` (the reference's most frequent categories, then "other"); ``reference`` and
    ``current`` are shares (each sums to 1, or 0 when empty)."""

    name: str
    kind: str
    edges: tuple[float, ...]
    labels: tuple[str, ...]
    reference: tuple[float, ...]
    current: tuple[float, ...]


@dataclass(frozen=True)
class Performance:
    """Accuracy on the labelled rows of the performance span (see the module docstring):
    ``labelled`` of its ``rows`` had a label, ``correct`` of those were predicted right;
    ``window_labelled`` of the check window's own rows had one. ``accuracy`` is None when
    no row was labelled."""

    start: float
    end: float
    rows: int
    labelled: int
    correct: int
    window_labelled: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check. ``features`` and ``predictions`` are the tests that ran
    (in the reference's order); ``share`` is the share of drifted features (None when no
    verdict: not enough data); ``dataset_drifted`` whether ``share >= share_threshold``;
    ``state`` is the alarm state to save, ``verdict`` its answer for ``window``."""

    model: str
    version: str
    start: float
    end: float
    now: float
    rows: int
    files: int
    skipped: Mapping[str, int]
    features: tuple[FeatureDrift, ...]
    predictions: tuple[FeatureDrift, ...]
    untested: tuple[Untested, ...]
    share: float | None
    share_threshold: float
    dataset_drifted: bool
    enough_data: bool
    performance: Performance | None
    histograms: tuple[Histogram, ...]
    window: Window
    verdict: Verdict
    state: AlarmState
    alarm: HysteresisConfig


def hysteresis_config(model_cfg: MonitorModel) -> HysteresisConfig:
    """The alarm settings of ``model_cfg`` (validated: a bad one names the setting)."""
    a = model_cfg.alarm
    return HysteresisConfig(high=a.high, low=a.low, k=a.k, n=a.n, m=a.m,
                            cooldown_s=a.cooldown_s, min_samples=a.min_samples)


def check(model_cfg: MonitorModel, profile: Profile, source: Source, *, start: float,
          end: float, version: str, state: AlarmState, now: float,
          features: Sequence[str] | None = None) -> CheckResult:
    """Check the window ``[start, end)`` of ``version``'s rows in the log ``source`` (a
    folder, or an object store where the reader takes one) against ``profile``.

    ``features`` (else ``model_cfg.features``, else every feature of the profile) are the
    columns tested. The alarm is stepped with ``Window(end, share of drifted features,
    rows)`` at clock ``now``; the new state is in the result, nothing is written.
    Raises :class:`CheckError` for a bad window, and the alarm's ``HysteresisError`` for a
    window older than the last one judged.
    """
    from gha_mlops.monitor.features import tensor_columns

    if not (math.isfinite(start) and math.isfinite(end) and start < end):
        raise CheckError(f"the window [{start}, {end}) is not an interval",
                         hint="give a window that ends after it starts (--window 24h)")
    alarm = hysteresis_config(model_cfg)
    span_start = start - (end - start) if model_cfg.label is not None else start
    win = _read(source, model_cfg.name, span_start, end, version)
    in_window = _in_window(win, start)
    every = in_window.size == win.rows  # no lookback for labels: take the arrays as they are
    columns = tensor_columns(win.inputs if every else _take(win.inputs, in_window)
                             ) if in_window.size else {}
    outputs = tensor_columns(win.outputs if every else _take(win.outputs, in_window)
                             ) if in_window.size else {}
    rows = int(in_window.size)
    wanted = list(features if features is not None else model_cfg.features
                  or [f.name for f in profile.features])
    known = {f.name: f for f in profile.features}
    untested = [Untested(n, NOT_IN_REFERENCE) for n in wanted if n not in known]
    if rows:
        untested += [Untested(n, NOT_IN_LOG) for n in wanted if n in known and n not in columns]
        untested += [Untested(n, NOT_IN_REFERENCE) for n in columns
                     if n not in known and n not in wanted]
    judged = rows >= alarm.min_samples  # below it no test runs: no verdict is claimed
    tested, empty = _drift(judged, [known[n] for n in wanted if n in known and n in columns],
                           columns)
    untested += [Untested(n, NO_VALUES) for n in empty]
    preds, _ = _drift(judged, [p for p in profile.predictions if p.name in outputs], outputs)
    enough = bool(tested)
    share = sum(f.drifted for f in tested) / len(tested) if enough else None
    # Enough rows but no feature to test is no verdict either: recorded as 0 samples, so
    # it neither trips nor clears the alarm.
    window = Window(end=end, score=share if share is not None else 0.0,
                    samples=rows if enough or not judged else 0)
    new_state, verdict = step(state, window, alarm, now=now)
    return CheckResult(
        model=model_cfg.name, version=version, start=start, end=end, now=now, rows=rows,
        files=win.files, skipped=dict(sorted(win.skipped.items())), features=tuple(tested),
        predictions=tuple(preds), untested=tuple(untested), share=share,
        share_threshold=model_cfg.share,
        dataset_drifted=share is not None and share >= model_cfg.share, enough_data=enough,
        performance=_performance(model_cfg, win, in_window, span_start, end, now, source),
        histograms=tuple(_histogram(known[f.name], columns[f.name])
                         for f in tested if f.drifted) if enough else (),
        window=window, verdict=verdict, state=new_state, alarm=alarm)


def _read(source: Source, model: str, start: float, end: float, version: str) -> LogWindow:
    from gha_mlops.monitor.predlog import read_window

    return read_window(source, model, start=start, end=end, version=version)


def _in_window(win: LogWindow, start: float) -> np.ndarray:
    import numpy as np

    if not win.rows:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(win.times >= start)


def _take(tensors: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: arr[rows] for name, arr in tensors.items()}


def _drift(judged: bool, profiles: list[FeatureProfile],
           columns: Mapping[str, np.ndarray]) -> tuple[list[FeatureDrift], list[str]]:
    """The drift test of each profiled column against the window's column, and the names
    of those with no values on either side (no verdict)."""
    from gha_mlops.monitor.profile import reference_values

    tested: list[FeatureDrift] = []
    empty: list[str] = []
    if not judged:
        return tested, empty
    for fp in profiles:
        current: Any = columns[fp.name]
        ref: Any = None
        if fp.kind == "categorical":
            ref, current = _categories(fp, current)
        try:
            tested.append(feature_drift(fp.name, reference_values(fp) if ref is None else ref,
                                        current, kind=fp.kind))
        except EmptyColumnError:
            empty.append(fp.name)
    return tested, empty


def _categories(fp: FeatureProfile, values: np.ndarray) -> tuple[np.ndarray | None, Any]:
    """The reference (None: :func:`reference_values`'s) and the current sample of a
    categorical column, the current one with every value outside the profile's kept
    categories as ``OTHER`` when the profile cut its tail.

    Why not always ``bucket_categories``: its Python objects make the tests walk and sort
    a million strings one by one (20 s for 15 columns of 1M rows); a column of strings
    whose reference categories are all strings stays a numpy string array (vectorised)."""
    import numpy as np

    from gha_mlops.monitor.profile import OTHER, RECONSTRUCT_CAP, bucket_categories

    labels = [v for v, _ in fp.categories]
    if (values.dtype.kind != "U" or not all(isinstance(v, str) for v in labels)
            or fp.count > RECONSTRUCT_CAP):
        return None, bucket_categories(fp, values)
    counts = [c for _, c in fp.categories]
    if fp.other_count:
        labels.append(OTHER)
        counts.append(fp.other_count)
        values = np.where(np.isin(values, np.asarray(labels[:-1], dtype=str)), values, OTHER)
    return np.repeat(np.asarray(labels, dtype=str), counts), values


def _histogram(fp: FeatureProfile, values: np.ndarray) -> Histogram:
    """Reference against current shares of one drifted column (see :class:`Histogram`)."""
    import numpy as np

    from gha_mlops.monitor.profile import OTHER, bucket_categories

    if fp.kind == "numerical" and fp.hist_edges:
        cur = np.asarray(values, dtype=np.float64)
        cur = cur[np.isfinite(cur)]
        edges = np.asarray(fp.hist_edges, dtype=np.float64)
        counts, _ = np.histogram(np.clip(cur, edges[0], edges[-1]), bins=edges)
        return Histogram(fp.name, fp.kind, tuple(float(e) for e in edges), (),
                         _shares(list(fp.hist_counts)), _shares(counts.tolist()))
    top = [v for v, _ in fp.categories[:MAX_CATEGORY_BARS]]
    ref = [c for _, c in fp.categories[:MAX_CATEGORY_BARS]]
    ref.append(fp.count - sum(ref))
    arr = np.asarray(values)
    items = arr.tolist() if arr.dtype.kind in "Ubi" else bucket_categories(fp, arr).tolist()
    seen = Counter(items)  # counted in C: a million values in about 0.1 s
    current = [seen.get(v, 0) if v != OTHER else 0 for v in top]
    current.append(len(items) - sum(current))
    labels = (*(str(v) for v in top), "other")
    return Histogram(fp.name, fp.kind, (), labels, _shares(ref), _shares(current))


def _shares(counts: Sequence[int]) -> tuple[float, ...]:
    total = sum(counts)
    return tuple(c / total if total else 0.0 for c in counts)


def _performance(model_cfg: MonitorModel, win: LogWindow, in_window: np.ndarray,
                 span_start: float, end: float, now: float,
                 source: Source) -> Performance | None:
    """Accuracy of ``model_cfg.label`` against the labels that arrived by ``now``."""
    if model_cfg.label is None:
        return None
    import numpy as np

    from gha_mlops.monitor import predlog

    if win.rows and model_cfg.label not in win.outputs:
        raise CheckError(
            f"the log of {quoted(model_cfg.name)} has no output {quoted(model_cfg.label)} "
            f"(outputs: {', '.join(map(quoted, win.outputs)) or 'none'})",
            hint=f"set monitor.models.{model_cfg.name}.label to the output tensor that holds "
                 "the predicted class, or remove it")
    labels = predlog.read_feedback(source, model_cfg.name, start=span_start,
                                   end=max(now, end) + 1e-6)
    joined = predlog.join_feedback(win, labels)
    if not win.rows or not joined.rows.size:
        return Performance(span_start, end, win.rows, 0, 0, 0)
    predicted = np.asarray(win.outputs[model_cfg.label])[joined.rows]
    if predicted.ndim > 1:  # scores per class: the predicted class is the largest
        flat = predicted.reshape(predicted.shape[0], -1)
        predicted = flat.argmax(axis=1) if flat.shape[1] > 1 else flat[:, 0]
    correct = sum(_same(p, t) for p, t in zip(predicted.tolist(), joined.labels.tolist(),
                                              strict=True))
    window_labelled = int(np.isin(joined.rows, in_window).sum())
    return Performance(span_start, end, win.rows, int(joined.rows.size), correct,
                       window_labelled)


def _same(predicted: object, label: object) -> bool:
    """A prediction equals a label as values (1 == 1.0), else as text ("1" == 1)."""
    if isinstance(predicted, (int, float)) and isinstance(label, (int, float)):
        return predicted == label
    return str(predicted) == str(label)


# -- the service around check(): where the log and the alarm state live ------------------

STATE_KEY = "{model}/monitor/alarm.json"  # the alarm state, beside the model's log


def open_log(location: str, workspace: Path) -> Any:
    """The log at ``location`` (``monitor.models.<name>.log`` or ``--log``): a folder
    (relative to ``workspace``) as a Path, ``s3://bucket/prefix`` as an object store (the
    AWS environment gives the endpoint and credentials)."""
    if location.startswith("s3://"):
        from gha_mlops.data.stores import open_store

        return open_store(location)
    path = Path(location).expanduser()
    return path if path.is_absolute() else workspace / path


@dataclass(frozen=True)
class StateLocation:
    """Where the alarm state of ``model`` lives: ``file`` (``--state FILE``), else ``key``
    beside the log ``log`` (a folder or an object store: the reader's small files)."""

    model: str
    file: Path | None = None
    log: Any = None
    key: str | None = None

    @classmethod
    def of(cls, model: str, log: Any, state_file: Path | None) -> StateLocation:
        """``state_file`` when given, else ``<log>/<model>/monitor/alarm.json``."""
        if state_file is not None:
            return cls(model, file=state_file, log=log)
        return cls(model, log=log, key=STATE_KEY.format(model=model))

    @property
    def where(self) -> str:
        if self.file is not None:
            return str(self.file)
        if isinstance(self.log, Path):
            return str(self.log / str(self.key))
        return f"{getattr(self.log, 'url', 'the log store')}/{self.key}"

    def load(self) -> AlarmState:
        """The stored state; the empty state when none is stored yet; a damaged one is an
        ``AlarmStateError`` naming it (never a silent reset)."""
        from gha_mlops.monitor.hysteresis import MAX_STATE_BYTES, load_state, loads_state
        from gha_mlops.monitor.predlog import read_small

        if self.file is not None:
            return load_state(self.file)
        return loads_state(read_small(self.log, str(self.key), MAX_STATE_BYTES),
                           where=self.where)

    def close(self) -> None:
        """Close the log's object store, if it is one."""
        if self.log is not None:
            _close(self.log)

    def save(self, state: AlarmState) -> None:
        """Store ``state`` whole or not at all (a file through a rename, an object in one
        put)."""
        from gha_mlops.monitor.hysteresis import dumps_state, save_state
        from gha_mlops.monitor.predlog import write_small

        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            save_state(self.file, state)
        else:
            write_small(self.log, str(self.key), dumps_state(state))


@dataclass(frozen=True)
class CheckRequest:
    """One ``monitor check``: the model's config, the version and its reference profile,
    the window ``[end - window_s, end)``, the log (``log`` overrides the config's) and the
    alarm state file (None: beside the log)."""

    workspace: Path
    model: MonitorModel
    version: str
    profile: Profile
    end: float
    window_s: float
    log: str | None = None
    state_file: Path | None = None


def run_check(request: CheckRequest, *, now: float) -> tuple[CheckResult, StateLocation]:
    """Check the request's window and save the new alarm state, only once the check has
    succeeded (an error leaves the stored state as it was). The result, and where its
    state lives (to save what acting on it records); the caller closes it
    (:meth:`StateLocation.close`: an object store holds connections)."""
    log = open_log(request.log or request.model.log, request.workspace)
    try:
        location = StateLocation.of(request.model.name, log, request.state_file)
        state = location.load()
        result = check(request.model, request.profile, log,
                       start=request.end - request.window_s, end=request.end,
                       version=request.version, state=state, now=now)
        if result.state != state:
            location.save(result.state)
    except BaseException:
        _close(log)
        raise
    return result, location


def _close(log: Any) -> None:
    if not isinstance(log, Path):
        log.close()


__all__ = [
    "CheckError",
    "CheckRequest",
    "CheckResult",
    "Histogram",
    "Performance",
    "StateLocation",
    "Untested",
    "check",
    "hysteresis_config",
    "open_log",
    "run_check",
]
