"""The reference profile: a compact, deterministic summary of the evaluation data (each input
feature and each prediction column) stored with a packaged model, against which windows of
live data are later tested for drift.

Per column: its kind (``numerical`` or ``categorical``), ``count`` (non-missing values) and
``missing``. A numerical column adds min, max, mean, std (ddof=1), :data:`N_QUANTILES` evenly
spaced quantiles (0 to 1, numpy's default linear interpolation), ``tail_quantiles`` at
probabilities 10**-3.1, 10**-3.2, ... down to 1/count on each side (:func:`tail_probabilities`:
without them a heavy tail, stretched linearly from the 0.999 quantile to the max, moved a
normed Wasserstein distance by up to 0.2) and a :data:`HIST_BINS`-bin equal-width histogram; when it has at most :data:`RAW_LIMIT` values it also keeps them all,
sorted, so small references (where KS and chi-squared p-values depend on every value) are
tested exactly. A categorical column keeps the :data:`TOP_CATEGORIES` most frequent values
with their counts, the rest summed in ``other_count`` with the number of ``distinct`` values.

Kinds follow Evidently's detection (``_get_column_type`` in
``evidently/legacy/utils/data_preprocessing.py``, ``NUMBER_UNIQUE_AS_CATEGORICAL = 5``):
bool and string columns are categorical, integer columns with at most 5 distinct values are
categorical, other numbers are numerical; a prediction column is also categorical when it
is numeric with at most 5 distinct values some of which lie outside [0, 1] (class ids, not
probabilities). ``kinds=`` overrides the rule per column.

:func:`reference_values` turns a column's profile back into a reference array for the drift
tests: exact values when kept, otherwise the quantile function sampled at ``count`` evenly
spaced points (capped at :data:`RECONSTRUCT_CAP`), or the categories repeated by their counts
with the tail as :data:`OTHER`. This module imports only the stdlib at import time; numpy is
imported by the functions that compute (loading and validating a profile needs none).
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from gha_mlops.errors import ExitCode, GhaMlopsError, quoted

FORMAT = "gha-mlops.profile/1"
N_QUANTILES = 1001  # every 0.1 %: KS statistics from the sketch are within ~1e-3 of exact
HIST_BINS = 50  # for the report's plots only; the drift tests use the quantiles
RAW_LIMIT = 5000  # at most this many values are kept exactly (about 100 KB of JSON)
TOP_CATEGORIES = 1000
RECONSTRUCT_CAP = 1_000_000  # reference_values never allocates more than this many rows
MAX_PROFILE_BYTES = 64 * 1024 * 1024
MAX_COLUMNS = 10_000
MAX_ROWS = 10**12
MAX_NAME = 256
MAX_CATEGORY_TEXT = 1024
NUMBER_UNIQUE_AS_CATEGORICAL = 5  # Evidently's constant of the same name
KINDS = ("numerical", "categorical")
OTHER = "__gha_mlops_other__"  # stands for every category outside the top ones

Category = str | int | bool | float


class ProfileError(GhaMlopsError):
    """A profile cannot be built from the given data, or a stored profile is malformed or
    missing: nothing to compare with (exit 2)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class FeatureProfile:
    """One column of the reference data.

    ``count`` is the number of non-missing values, ``missing`` the number of missing ones
    (None, NaN, and for numerical columns also +-inf, as Evidently drops them). The numerical
    fields are ``None`` for a categorical column and the categorical ones empty for a
    numerical one; a numerical column with ``count == 0`` has no statistics at all.
    """

    name: str
    kind: str
    count: int
    missing: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: tuple[float, ...] = ()
    tail_quantiles: tuple[float, ...] = ()  # at tail_probabilities(count), ascending
    hist_edges: tuple[float, ...] = ()
    hist_counts: tuple[int, ...] = ()
    values: tuple[float, ...] | None = None  # all values, sorted, when count <= RAW_LIMIT
    categories: tuple[tuple[Category, int], ...] = ()  # by count desc, then canonical JSON
    other_count: int = 0
    distinct: int = 0


@dataclass(frozen=True)
class Profile:
    """The reference data's profile: its input features, its prediction columns, and the
    number of rows (every column has ``count + missing == rows``)."""

    features: tuple[FeatureProfile, ...]
    predictions: tuple[FeatureProfile, ...]
    rows: int

    def feature(self, name: str) -> FeatureProfile:
        """The input feature ``name``; :class:`ProfileError` when the profile has none."""
        for feat in self.features:
            if feat.name == name:
                return feat
        raise ProfileError(f"the reference profile has no feature {quoted(name)}",
                           hint="compare only features the model was packaged with")


# ---------------------------------------------------------------- building


def features_from_matrix(x: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The columns of a 2-D array as a name -> 1-D array mapping (``f0``..``fN-1`` by
    default), ready for :func:`build_profile`."""
    import numpy as np

    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ProfileError(f"expected a 2-D matrix (rows x features), got {arr.ndim} dimension(s)",
                           hint="reshape the data to (rows, features)")
    if names is None:
        names = [f"f{i}" for i in range(arr.shape[1])]
    if len(names) != arr.shape[1]:
        raise ProfileError(f"{len(names)} names for {arr.shape[1]} columns",
                           hint="give one name per column")
    return {name: arr[:, i] for i, name in enumerate(names)}


def build_profile(features: Mapping[str, Any], *, predictions: Mapping[str, Any] | None = None,
                  kinds: Mapping[str, str] | None = None, seed: int = 0) -> Profile:
    """Profile the reference data: ``features`` and ``predictions`` map a column name to a 1-D
    array-like, all of one length. ``kinds`` forces a column's kind (by name, for features
    and predictions alike). The result is a pure function of the data: no random step, so
    ``seed`` (accepted so callers can pass their run's seed) changes nothing, and the same
    data always gives byte-identical :func:`dump_profile` output.
    """
    del seed  # nothing is sampled: exact values below RAW_LIMIT, exact quantiles above
    kinds = dict(kinds or {})
    unknown = set(kinds) - set(features) - set(predictions or {})
    if unknown:
        raise ProfileError(f"kinds= names unknown column(s): {quoted(sorted(unknown))}",
                           hint="name only columns given in features or predictions")
    rows: int | None = None
    groups: list[tuple[FeatureProfile, ...]] = []
    for group, is_pred in ((features, False), (predictions or {}, True)):
        out = []
        for name, column in group.items():
            feat = _profile_column(name, column, kinds.get(name), is_prediction=is_pred)
            n = feat.count + feat.missing
            if rows is not None and n != rows:
                raise ProfileError(f"column {quoted(name)} has {n} rows, others have {rows}",
                                   hint="give every feature and prediction the same rows")
            rows = n
            out.append(feat)
        groups.append(tuple(out))
    if not groups[0]:
        raise ProfileError("no feature to profile", hint="pass at least one input feature")
    assert rows is not None
    return Profile(features=groups[0], predictions=groups[1], rows=rows)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ProfileError(f"a column name must be a non-empty string of at most {MAX_NAME} "
                           f"characters, got {quoted(name)}", hint="rename the column")
    return name


def _profile_column(name: str, column: Any, kind: str | None, *,
                    is_prediction: bool) -> FeatureProfile:
    import numpy as np

    _check_name(name)
    arr = np.asarray(column)
    if arr.ndim != 1:
        raise ProfileError(f"column {quoted(name)} is not 1-D (shape {arr.shape})",
                           hint="split a matrix with features_from_matrix")
    if arr.dtype.kind in "mMcV":
        raise ProfileError(f"column {quoted(name)} has unsupported type {arr.dtype}",
                           hint="convert datetimes to numbers (e.g. epoch seconds) or drop it")
    if arr.dtype.kind == "O":
        arr = _normalise_objects(name, arr)
    if kind is None:
        kind = _detect_kind(arr, is_prediction=is_prediction)
    if kind not in KINDS:
        raise ProfileError(f"kind of {quoted(name)} must be one of {KINDS}, got {quoted(kind)}",
                           hint="use 'numerical' or 'categorical'")
    if kind == "numerical":
        return _numerical(name, arr)
    return _categorical(name, arr)


def _normalise_objects(name: str, arr: Any) -> Any:
    """An object array of only numbers (and None) becomes float (None -> NaN), as pandas
    makes it; any other mix stays object, each value a str, int, bool or float."""
    import numpy as np

    present = [v for v in arr.tolist() if not _is_missing(v)]
    for v in present:
        if not isinstance(v, (str, bool, numbers.Real)):
            raise ProfileError(f"column {quoted(name)} holds a {type(v).__name__} value",
                               hint="give strings, numbers or booleans")
    if present and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if _is_missing(v) else float(v) for v in arr.tolist()])
    return arr


def _is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _detect_kind(arr: Any, *, is_prediction: bool) -> str:
    """Evidently's rule (see the module docstring)."""
    import numpy as np

    k = arr.dtype.kind
    if k in "bUSO":
        return "categorical"
    finite = arr[np.isfinite(arr)] if k == "f" else arr
    few = np.unique(finite).size <= NUMBER_UNIQUE_AS_CATEGORICAL
    if k in "iu" and few:
        return "categorical"
    if is_prediction and few and finite.size and (finite.max() > 1 or finite.min() < 0):
        return "categorical"
    return "numerical"


def _numerical(name: str, arr: Any) -> FeatureProfile:
    import numpy as np

    try:
        values = arr.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ProfileError(f"column {quoted(name)} is not numeric ({err})",
                           hint=f"pass kinds={{{name!r}: 'categorical'}} or fix its values"
                           ) from err
    finite = np.sort(values[np.isfinite(values)])
    n = int(finite.size)
    missing = int(values.size) - n
    if n == 0:
        return FeatureProfile(name=name, kind="numerical", count=0, missing=missing)
    lo, hi = float(finite[0]), float(finite[-1])
    if not math.isfinite(hi - lo):
        raise ProfileError(f"column {quoted(name)} spans [{lo}, {hi}], wider than float64 "
                           "can subtract", hint="rescale the feature (e.g. a log or a unit)")
    tails = tail_probabilities(n)
    grid = np.concatenate([np.linspace(0.0, 1.0, N_QUANTILES), tails])
    # clip: linear interpolation can round a hair outside [lo, hi] or out of order
    order = np.argsort(grid, kind="stable")
    merged = np.empty_like(grid)
    merged[order] = np.maximum.accumulate(np.clip(np.quantile(finite, grid[order]), lo, hi))
    quantiles, tail_values = merged[:N_QUANTILES], merged[N_QUANTILES:]
    if hi > lo:
        edges = np.linspace(lo, hi, HIST_BINS + 1)
        edges[-1] = hi
        counts, _ = np.histogram(finite, bins=edges)
    else:
        edges, counts = np.array([lo, hi]), np.array([n])
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked just below
        raw_mean = float(finite.mean())
        std = float(finite.std(ddof=1)) if n > 1 else 0.0
    mean = min(max(raw_mean, lo), hi) if math.isfinite(raw_mean) else raw_mean
    if not math.isfinite(mean) or not math.isfinite(std):
        raise ProfileError(f"column {quoted(name)} overflows float64 statistics",
                           hint="rescale the feature")
    return FeatureProfile(
        name=name, kind="numerical", count=n, missing=missing, min=lo, max=hi, mean=mean,
        std=std, quantiles=tuple(float(q) for q in quantiles),
        tail_quantiles=tuple(float(q) for q in tail_values),
        hist_edges=tuple(float(e) for e in edges), hist_counts=tuple(int(c) for c in counts),
        values=tuple(float(v) for v in finite) if n <= RAW_LIMIT else None)


def _categorical(name: str, arr: Any) -> FeatureProfile:
    import numpy as np

    if arr.dtype.kind == "f":
        arr = arr[~np.isnan(arr)]
    if arr.dtype.kind in "biuUS":
        uniq, cnt = np.unique(arr, return_counts=True)
        pairs = zip(uniq.tolist(), cnt.tolist(), strict=True)
        counter = {_canon(_py(v)): (_py(v), int(c)) for v, c in pairs}
        missing = 0
    else:
        items = arr.tolist()
        present = [_py(v) for v in items if not _is_missing(v)]
        missing = len(items) - len(present)
        # keyed by canonical JSON: True, 1 and 1.0 are equal in Python but not as categories
        tally = Counter(_canon(v) for v in present)
        firsts = {_canon(v): v for v in reversed(present)}
        counter = {key: (firsts[key], n) for key, n in tally.items()}
    for value, _ in counter.values():
        if isinstance(value, str) and len(value) > MAX_CATEGORY_TEXT:
            raise ProfileError(f"column {quoted(name)} has a category of {len(value)} characters",
                               hint=f"categories are at most {MAX_CATEGORY_TEXT} characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProfileError(f"column {quoted(name)} has a category {value}",
                               hint="categories must be finite")
    ranked = sorted(counter.values(), key=lambda vc: (-vc[1], _canon(vc[0])))
    top = tuple(ranked[:TOP_CATEGORIES])
    count = sum(c for _, c in ranked)
    kept = sum(c for _, c in top)
    return FeatureProfile(name=name, kind="categorical", count=count, missing=missing,
                          categories=top, other_count=count - kept, distinct=len(counter))


def _py(v: Any) -> Category:
    """A numpy or Python scalar as the JSON-able Python value it stands for."""
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, (bool, str, int, float)):
        return v
    return v.item()  # type: ignore[no-any-return]


def _canon(v: Category) -> str:
    return json.dumps(v, sort_keys=True)


# ---------------------------------------------------------------- JSON


def profile_json(profile: Profile) -> dict[str, Any]:
    """The profile as JSON data: every float a finite JSON number (``repr`` round-trips it
    exactly), categorical values as JSON scalars. Dump it with :func:`dump_profile`."""
    return {
        "format": FORMAT,
        "rows": profile.rows,
        "features": [_feature_json(f) for f in profile.features],
        "predictions": [_feature_json(f) for f in profile.predictions],
    }


def dump_profile(profile: Profile) -> bytes:
    """Canonical bytes of :func:`profile_json` (sorted keys, compact): the same data gives the
    same bytes. Write them with ``gha_mlops._fs.atomic_write_bytes``."""
    return json.dumps(profile_json(profile), sort_keys=True, separators=(",", ":"),
                      allow_nan=False, ensure_ascii=True).encode("ascii")


def _feature_json(f: FeatureProfile) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f.name, "kind": f.kind, "count": f.count,
                           "missing": f.missing}
    if f.kind == "numerical" and f.count:
        out.update(min=f.min, max=f.max, mean=f.mean, std=f.std, quantiles=list(f.quantiles),
                   tail_quantiles=list(f.tail_quantiles),
                   histogram={"edges": list(f.hist_edges), "counts": list(f.hist_counts)},
                   values=None if f.values is None else list(f.values))
    elif f.kind == "categorical":
        out.update(categories=[[v, c] for v, c in f.categories], other_count=f.other_count,
                   distinct=f.distinct)
    return out


# ---------------------------------------------------------------- loading (hostile input)


def load_profile(data: bytes, *, where: str) -> Profile:
    """Parse and validate a stored profile (``where`` names the file in messages).

    Everything is checked against the contract, not trusted: the size (at most
    :data:`MAX_PROFILE_BYTES`), the format tag, integer counts within bounds that add up to
    ``rows``, finite numbers, ``min <= mean <= max``, quantiles sorted from min to max,
    histogram counts that add up, kept values sorted and as many as ``count``, categories
    unique and ranked. Any violation is a :class:`ProfileError` naming ``where`` and the field.
    """
    hint = "re-create the profile by packaging the model again"
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{where}: profile is {len(data)} bytes, over the "
                           f"{MAX_PROFILE_BYTES} limit", hint=hint, file=where)
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ProfileError(f"{where}: not a JSON profile ({err})", hint=hint, file=where) from err
    v = _Validator(where, hint)
    obj = v.mapping(doc, "profile")
    if obj.get("format") != FORMAT:
        v.fail("format", f"{FORMAT!r}", obj.get("format"))
    rows = v.integer(obj.get("rows"), "rows", 0, MAX_ROWS)
    groups = []
    for key in ("features", "predictions"):
        items = obj.get(key)
        if not isinstance(items, list) or len(items) > MAX_COLUMNS:
            v.fail(key, f"a list of at most {MAX_COLUMNS} columns", items)
        feats = tuple(_load_feature(v, item, f"{key}[{i}]", rows) for i, item in enumerate(items))
        names = [f.name for f in feats]
        if len(set(names)) != len(names):
            v.fail(key, "unique column names", sorted(n for n in names if names.count(n) > 1))
        groups.append(feats)
    if not groups[0]:
        v.fail("features", "at least one feature", [])
    return Profile(features=groups[0], predictions=groups[1], rows=rows)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


class _Validator:
    """Typed reads of untrusted JSON; each failure names the file and the field."""

    def __init__(self, where: str, hint: str) -> None:
        self.where, self.hint = where, hint

    def fail(self, field: str, expected: str, got: object) -> NoReturn:
        raise ProfileError(f"{self.where}: {field} must be {expected}, got {quoted(got)}",
                           hint=self.hint, file=self.where)

    def mapping(self, x: object, field: str) -> dict[str, Any]:
        if not isinstance(x, dict):
            self.fail(field, "an object", x)
        return x

    def integer(self, x: object, field: str, lo: int, hi: int) -> int:
        if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
            self.fail(field, f"an integer in [{lo}, {hi}]", x)
        return x

    def number(self, x: object, field: str) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            self.fail(field, "a finite number", x)
        return float(x)

    def numbers(self, x: object, field: str, length: int | None, *,
                ordered: bool) -> tuple[float, ...]:
        if not isinstance(x, list) or (length is not None and len(x) != length):
            self.fail(field, f"a list of {length if length is not None else 'some'} numbers", x)
        out = tuple(self.number(e, f"{field}[{i}]") for i, e in enumerate(x))
        if ordered and any(b < a for a, b in itertools.pairwise(out)):
            self.fail(field, "sorted ascending", "values out of order")
        return out


def _load_feature(v: _Validator, x: object, field: str, rows: int) -> FeatureProfile:
    obj = v.mapping(x, field)
    name = obj.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        v.fail(f"{field}.name", f"a string of 1 to {MAX_NAME} characters", name)
    field = f"{field} ({quoted(name, 40)})"
    kind = obj.get("kind")
    if kind not in KINDS:
        v.fail(f"{field}.kind", f"one of {KINDS}", kind)
    count = v.integer(obj.get("count"), f"{field}.count", 0, rows)
    missing = v.integer(obj.get("missing"), f"{field}.missing", 0, rows)
    if count + missing != rows:
        v.fail(f"{field}.count + missing", f"rows ({rows})", count + missing)
    if kind == "categorical":
        return _load_categorical(v, obj, field, name, count, missing)
    if count == 0:
        return FeatureProfile(name=name, kind="numerical", count=0, missing=missing)
    return _load_numerical(v, obj, field, name, count, missing)


def _load_numerical(v: _Validator, obj: dict[str, Any], field: str, name: str, count: int,
                    missing: int) -> FeatureProfile:
    lo = v.number(obj.get("min"), f"{field}.min")
    hi = v.number(obj.get("max"), f"{field}.max")
    mean = v.number(obj.get("mean"), f"{field}.mean")
    std = v.number(obj.get("std"), f"{field}.std")
    if not lo <= mean <= hi or hi < lo:
        v.fail(f"{field}.mean", f"within [min, max] = [{lo}, {hi}]", mean)
    if std < 0:
        v.fail(f"{field}.std", "non-negative", std)
    qs = v.numbers(obj.get("quantiles"), f"{field}.quantiles", N_QUANTILES, ordered=True)
    if qs[0] != lo or qs[-1] != hi:
        v.fail(f"{field}.quantiles", "from min to max", [qs[0], qs[-1]])
    tails = v.numbers(obj.get("tail_quantiles"), f"{field}.tail_quantiles",
                      len(tail_probabilities(count)), ordered=True)
    if any(b < a for a, b in itertools.pairwise(_quantile_function(qs, tails, count)[1])):
        v.fail(f"{field}.tail_quantiles", "in order with the quantiles", "values out of order")
    hist = v.mapping(obj.get("histogram"), f"{field}.histogram")
    edges = v.numbers(hist.get("edges"), f"{field}.histogram.edges", None, ordered=True)
    if not 2 <= len(edges) <= HIST_BINS + 1 or edges[0] != lo or edges[-1] != hi:
        v.fail(f"{field}.histogram.edges", f"2 to {HIST_BINS + 1} edges from min to max", edges)
    raw_counts = hist.get("counts")
    if not isinstance(raw_counts, list) or len(raw_counts) != len(edges) - 1:
        v.fail(f"{field}.histogram.counts", f"{len(edges) - 1} counts", raw_counts)
    counts = tuple(v.integer(c, f"{field}.histogram.counts[{i}]", 0, count)
                   for i, c in enumerate(raw_counts))
    if sum(counts) != count:
        v.fail(f"{field}.histogram.counts", f"summing to count ({count})", sum(counts))
    values = None
    if obj.get("values") is not None:
        if count > RAW_LIMIT:
            v.fail(f"{field}.values", f"absent above {RAW_LIMIT} values", count)
        values = v.numbers(obj["values"], f"{field}.values", count, ordered=True)
        if values[0] != lo or values[-1] != hi:
            v.fail(f"{field}.values", "from min to max", [values[0], values[-1]])
    return FeatureProfile(name=name, kind="numerical", count=count, missing=missing, min=lo,
                          max=hi, mean=mean, std=std, quantiles=qs, tail_quantiles=tails, hist_edges=edges,
                          hist_counts=counts, values=values)


def _load_categorical(v: _Validator, obj: dict[str, Any], field: str, name: str, count: int,
                      missing: int) -> FeatureProfile:
    raw = obj.get("categories")
    if not isinstance(raw, list) or len(raw) > TOP_CATEGORIES:
        v.fail(f"{field}.categories", f"a list of at most {TOP_CATEGORIES} pairs", raw)
    cats: list[tuple[Category, int]] = []
    for i, pair in enumerate(raw):
        at = f"{field}.categories[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            v.fail(at, "a [value, count] pair", pair)
        value, n = pair
        if isinstance(value, float):
            v.number(value, at)
        elif not isinstance(value, (str, int, bool)) or (
                isinstance(value, str) and len(value) > MAX_CATEGORY_TEXT):
            v.fail(at, f"a string (at most {MAX_CATEGORY_TEXT} characters), number or boolean",
                   value)
        cats.append((value, v.integer(n, at, 1, count)))
    keys = [(-c, _canon(val)) for val, c in cats]
    if keys != sorted(keys) or len({_canon(val) for val, _ in cats}) != len(cats):
        v.fail(f"{field}.categories", "unique values ranked by count", "duplicates or disorder")
    other = v.integer(obj.get("other_count"), f"{field}.other_count", 0, count)
    distinct = v.integer(obj.get("distinct"), f"{field}.distinct", len(cats), count)
    if sum(c for _, c in cats) + other != count:
        v.fail(f"{field}.categories + other_count", f"count ({count})",
               sum(c for _, c in cats) + other)
    if (other > 0) != (distinct > len(cats)) or (other > 0 and len(cats) < TOP_CATEGORIES):
        v.fail(f"{field}.other_count", "non-zero exactly when categories were cut", other)
    return FeatureProfile(name=name, kind="categorical", count=count, missing=missing,
                          categories=tuple(cats), other_count=other, distinct=distinct)


# ---------------------------------------------------------------- reconstruction


def reference_values(feature: FeatureProfile, *, size: int | None = None) -> Any:
    """A reference sample for the drift tests, as a numpy array.

    Numerical: the kept values when the profile has them and no ``size`` is asked (exact:
    a small reference tests as the raw data would); a column of at most ``FEW_VALUES``
    distinct values that the histogram pins down exactly, those values by their counts
    (scaled to ``RECONSTRUCT_CAP``); otherwise ``size`` points
    (default ``min(count, RECONSTRUCT_CAP)``) of the quantile function, interpolated
    linearly between the stored quantiles at the mid-points ``(i + 0.5) / size``; the KS
    statistic against it is within about ``1 / (N_QUANTILES - 1)`` of the one against the
    full data, and its normed Wasserstein distance within a few thousandths (tested).
    Categorical: each top category repeated by its count (scaled to ``size`` by largest
    remainders when the count is larger) and the tail as :data:`OTHER`; map the current
    window's values with :func:`bucket_categories` before testing. Empty when ``count == 0``.
    """
    import numpy as np

    target = min(feature.count, RECONSTRUCT_CAP) if size is None else size
    if target < 0:
        raise ProfileError(f"size must be >= 0, got {target}", hint="ask for a positive size")
    if feature.kind == "numerical":
        if feature.count == 0:
            return np.empty(0, dtype=np.float64)
        if feature.values is not None and size is None:
            return np.array(feature.values, dtype=np.float64)
        few = _few_values(feature) if size is None else None
        if few is not None:
            return few
        grid, values = _quantile_function(feature.quantiles, feature.tail_quantiles,
                                          feature.count)
        return np.interp((np.arange(target) + 0.5) / max(target, 1), np.array(grid),
                         np.array(values, dtype=np.float64))
    labels: list[Category] = [val for val, _ in feature.categories]
    counts = [c for _, c in feature.categories]
    if feature.other_count:
        labels.append(OTHER)
        counts.append(feature.other_count)
    scaled = _scale_counts(counts, target) if target != feature.count else counts
    out = np.empty(sum(scaled), dtype=object)
    out[:] = [lab for lab, n in zip(labels, scaled, strict=True) for _ in range(n)]
    return out


def _few_values(fp: FeatureProfile) -> Any:
    """The exact reference of a numerical column of at most ``FEW_VALUES`` distinct values
    whose values the profile did not keep (a numpy array), or None for any other column.

    Why: the quantile function interpolates between knots, so a column of the values 0, 1,
    2 comes back with values in between; tested as continuous (Wasserstein) where the data
    is tested as a few values (Jensen-Shannon), as Evidently does. The quantiles name the
    values (a value held by a single row could hide between two knots: then the histogram
    has counts elsewhere and this gives up); each lies in its own histogram bin, whose count
    is its exact count."""
    import numpy as np

    from gha_mlops.monitor.drift import FEW_VALUES

    if fp.kind != "numerical" or fp.values is not None or not fp.count or not fp.hist_edges:
        return None
    values = sorted(set(fp.quantiles) | set(fp.tail_quantiles))
    if len(values) > FEW_VALUES:
        return None
    edges = np.asarray(fp.hist_edges)
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(fp.hist_counts) - 1)
    counts = [fp.hist_counts[b] for b in bins]
    if len(set(bins.tolist())) != len(values) or sum(counts) != fp.count:
        return None
    scale = min(1.0, RECONSTRUCT_CAP / fp.count)
    return np.repeat(np.asarray(values, dtype=np.float64),
                     [round(c * scale) for c in counts])


def tail_probabilities(count: int) -> list[float]:
    """The probabilities of a column's ``tail_quantiles``, ascending: ``10**-(3 + j/10)`` for
    j = 1, 2, ... while at least one value in ``count`` lies below it, then their mirrors
    ``1 - p`` (30 a side for a million values, 90 at most)."""
    lows: list[float] = []
    j = 1
    while (p := 10.0 ** (-3 - j / 10)) * count >= 1:
        lows.append(p)
        j += 1
    return lows[::-1] + [1.0 - p for p in lows]


def _quantile_function(quantiles: Sequence[float], tails: Sequence[float],
                       count: int) -> tuple[list[float], list[float]]:
    """The merged (probability, value) knots of the uniform and the tail quantiles."""
    probs = tail_probabilities(count)
    half = len(probs) // 2
    step = 1.0 / (len(quantiles) - 1)
    uniform = [i * step for i in range(len(quantiles))]
    grid = [uniform[0], *probs[:half], *uniform[1:-1], *probs[half:], uniform[-1]]
    values = [quantiles[0], *tails[:half], *quantiles[1:-1], *tails[half:], quantiles[-1]]
    return grid, values


def _scale_counts(counts: list[int], target: int) -> list[int]:
    """``counts`` scaled to sum to ``target`` (largest remainder, ties by position)."""
    total = sum(counts)
    if total == 0:
        return [0] * len(counts)
    exact = [c * target / total for c in counts]
    floors = [int(e) for e in exact]
    order = sorted(range(len(counts)), key=lambda i: (floors[i] - exact[i], i))
    for i in order[: target - sum(floors)]:
        floors[i] += 1
    return floors


def bucket_categories(feature: FeatureProfile, values: Any) -> Any:
    """``values`` (a current window of a categorical column) as an object array where every
    value outside the profile's kept categories is :data:`OTHER`, when the profile cut its
    tail (so reference and current share one alphabet); otherwise unchanged. Missing values
    (None, NaN) are dropped."""
    import numpy as np

    items = [_py(v) for v in np.asarray(values, dtype=object).tolist() if not _is_missing(v)]
    if feature.other_count:
        known = {_canon(val) for val, _ in feature.categories}
        items = [v if _canon(v) in known else OTHER for v in items]
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
