"""Per-feature and dataset drift with Evidently's default tests, in numpy alone.

The reference is Evidently 0.7 (``evidently/legacy/calculations/stattests/registry.py``,
``_get_default_stattest``; ``legacy/calculations/data_drift.py``, ``get_one_column_drift``
and ``get_dataset_drift``; ``core/datasets.py``, ``infer_column_type``):

- NaN, None and +-inf are dropped from both samples first; an empty sample is an error
  (:class:`EmptyColumnError`), never a verdict.
- ``n_values`` = distinct values of reference and current together.
- reference rows <= 1000: numerical -> ``ks`` (p <= 0.05 drifts), but ``chisquare`` (p < 0.05)
  when n_values in 3..5 and ``z`` (p < 0.05) when n_values <= 2; categorical -> ``chisquare``,
  or ``z`` when n_values <= 2.
- reference rows > 1000: numerical -> ``wasserstein`` normed by the reference's population
  std (at least 0.001; >= 0.1 drifts), but ``jensenshannon`` when n_values <= 5; categorical
  -> ``jensenshannon`` (natural log; >= 0.1 drifts).
- dataset drift: share of drifted features >= 0.5.

Differences from Evidently, on purpose: the KS p-value is exact (lattice paths, as scipy's
``ks_2samp`` ``method='auto'``) when both samples have <= 10,000 rows, and above that the
asymptotic Kolmogorov distribution (``kstwobign``) where scipy uses ``kstwo(round(en))``:
p-values differ there by a relative few percent at en ~ 1000, so only verdicts within that
distance of 0.05 can differ. String columns are categorical (Evidently calls a string column
with more distinct values than half its rows "text" and runs a classifier on it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gha_mlops.errors import GhaMlopsError, missing_extra, quoted

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

KINDS = ("numerical", "categorical")
TESTS = ("ks", "wasserstein", "chisquare", "z", "jensenshannon")
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
}
_P_VALUE_TESTS = frozenset({"ks", "chisquare", "z"})
_NUMERICAL_ONLY = frozenset({"ks", "wasserstein"})
SMALL_SAMPLE_ROWS = 1000  # Evidently: reference rows above this switch to distances
FEW_VALUES = 5  # Evidently: a numerical feature with <= 5 distinct values is tested as categories
INTEGER_CATEGORIES = 10  # Evidently's INTEGER_CARDINALITY_LIMIT for inferring categorical ints
EXACT_KS_MAX_ROWS = 10_000  # scipy's MAX_AUTO_N: exact p-value up to here


class DriftError(GhaMlopsError):
    """A drift test cannot run on the data given (wrong kind, unknown test, mismatched features)."""


class EmptyColumnError(DriftError):
    """A sample has no value left once NaN, None and infinities are dropped: not enough data.

    The caller (the hysteresis layer) turns this into a "not enough data" window, never a verdict.
    """


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's verdict. ``value`` is a p-value for ks/chisquare/z (drift when below the
    threshold) or a distance for wasserstein/jensenshannon (drift when at or above it).
    Row counts are after NaN/None/inf were dropped."""

    name: str
    kind: str
    test: str
    value: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int


@dataclass(frozen=True)
class DatasetDrift:
    """Every feature's verdict and the dataset's: drifted when ``share`` >= ``threshold``."""

    features: tuple[FeatureDrift, ...]
    share: float
    drifted: bool
    threshold: float


def feature_drift(
    name: str,
    reference: Any,
    current: Any,
    *,
    kind: str | None = None,
    test: str | None = None,
    threshold: float | None = None,
) -> FeatureDrift:
    """Test one feature's current sample against its reference sample.

    ``kind`` is inferred from the reference when None (float -> numerical; integer ->
    categorical when it has <= 10 distinct values; bool, str and other objects ->
    categorical); ``test`` and ``threshold`` default to Evidently's choice (module docstring).
    Raises :class:`EmptyColumnError` when either sample is empty after dropping missing
    values, :class:`DriftError` for an unknown kind or test, a numerical test on categories, or
    a threshold that is not a finite number in [0, 1] (p-values) or >= 0 (distances).
    """
    _require_numpy()
    ref = _clean(name, "reference", reference)
    cur = _clean(name, "current", current)
    kind = _infer_kind(ref) if kind is None else kind
    if kind not in KINDS:
        raise DriftError(
            f"feature {quoted(name)}: unknown kind {quoted(kind)}",
            hint=f"use one of {', '.join(KINDS)}",
        )
    if kind == "numerical":
        ref, cur = _as_float(name, "reference", ref), _as_float(name, "current", cur)
        ref, cur = _drop_inf(ref), _drop_inf(cur)
    _require_rows(name, "reference", ref)
    _require_rows(name, "current", cur)
    test = _default_test(kind, ref, cur) if test is None else test
    _check_test(name, kind, test)
    limit = (
        DEFAULT_THRESHOLDS[test] if threshold is None else _check_threshold(name, test, threshold)
    )
    value = _run_test(test, kind, ref, cur)
    if test in _P_VALUE_TESTS:
        # Evidently: KS drifts at p <= threshold, chi-squared and Z at p < threshold.
        drifted = value <= limit if test == "ks" else value < limit
    else:
        drifted = value >= limit
    return FeatureDrift(name, kind, test, value, limit, drifted, int(ref.size), int(cur.size))


def dataset_drift(
    reference: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    share: float = 0.5,
    kinds: Mapping[str, str] | None = None,
) -> DatasetDrift:
    """Test every feature with Evidently's defaults; the dataset drifts when the share of
    drifted features is >= ``share``. Both mappings must name the same features (a
    :class:`DriftError` names the first one missing on either side); features come back in
    the reference's order. An empty feature raises :class:`EmptyColumnError`."""
    if not (isinstance(share, (int, float)) and math.isfinite(share) and 0.0 <= share <= 1.0):
        raise DriftError(f"drift share {share!r} is not in [0, 1]", hint="use e.g. 0.5")
    for names, other, side in ((current, reference, "reference"), (reference, current, "current")):
        for feature in names:
            if feature not in other:
                raise DriftError(
                    f"feature {quoted(feature)} is not in the {side} data",
                    hint="compare data with the same features (retrain or rebuild the "
                    "reference profile after a schema change)",
                )
    if not reference:
        raise EmptyColumnError("no features to compare", hint="give at least one feature")
    kinds = kinds or {}
    features = tuple(
        feature_drift(n, reference[n], current[n], kind=kinds.get(n)) for n in reference
    )
    drifted_share = sum(f.drifted for f in features) / len(features)
    return DatasetDrift(features, drifted_share, drifted_share >= share, float(share))


# -- cleaning and routing ------------------------------------------------------------------


def _require_numpy() -> None:
    # numpy is not a core dependency; name the extra instead of an ImportError traceback.
    try:
        import numpy  # noqa: F401
    except ImportError as err:
        raise missing_extra("numpy", "monitor") from err


def _clean(name: str, side: str, values: Any) -> npt.NDArray[Any]:
    import numpy as np

    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DriftError(
            f"feature {quoted(name)}: the {side} sample has shape {arr.shape}, not 1-D",
            hint="pass one column per feature",
        )
    if arr.dtype.kind == "f":
        kept: npt.NDArray[Any] = arr[~np.isnan(arr)]
        return kept
    if arr.dtype.kind == "O":
        keep = np.fromiter((not _missing(v) for v in arr), dtype=bool, count=arr.size)
        kept = arr[keep]
        return kept
    if arr.dtype.kind in "biuU":
        return arr
    raise DriftError(
        f"feature {quoted(name)}: the {side} sample has dtype {arr.dtype}",
        hint="use numbers, booleans or strings",
    )


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _drop_inf(arr: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    import numpy as np

    finite = np.isfinite(arr)
    return arr if finite.all() else arr[finite]


def _as_float(name: str, side: str, arr: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    import numpy as np

    try:
        return np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DriftError(
            f"feature {quoted(name)}: the {side} sample is not numerical",
            hint="declare it categorical (kinds={name: 'categorical'})",
        ) from err


def _require_rows(name: str, side: str, arr: npt.NDArray[Any]) -> None:
    if arr.size == 0:
        raise EmptyColumnError(
            f"feature {quoted(name)}: the {side} sample has no values (empty or all missing)",
            hint="not enough data for a verdict: widen the window or check the logging",
        )


def _infer_kind(ref: npt.NDArray[Any]) -> str:
    import numpy as np

    if ref.dtype.kind == "f":
        return "numerical"
    if ref.dtype.kind in "iu":
        return "categorical" if np.unique(ref).size <= INTEGER_CATEGORIES else "numerical"
    return "categorical"


def _default_test(kind: str, ref: npt.NDArray[Any], cur: npt.NDArray[Any]) -> str:
    import numpy as np

    if kind == "numerical":
        # Only a union's size <= 5 matters: avoid sorting a million values twice when the
        # reference alone has more.
        few = not _more_values_than(ref, FEW_VALUES) and np.union1d(ref, cur).size <= FEW_VALUES
        if ref.size > SMALL_SAMPLE_ROWS:
            return "jensenshannon" if few else "wasserstein"
        if not few:
            return "ks"
        return "z" if np.union1d(ref, cur).size <= 2 else "chisquare"
    if ref.size > SMALL_SAMPLE_ROWS:
        return "jensenshannon"
    return "z" if _union_size(ref, cur) <= 2 else "chisquare"


def _more_values_than(arr: npt.NDArray[Any], limit: int) -> bool:
    import numpy as np

    # A prefix with more distinct values settles it without sorting a million values.
    return bool(np.unique(arr[:4096]).size > limit or np.unique(arr).size > limit)


def _union_size(ref: npt.NDArray[Any], cur: npt.NDArray[Any]) -> int:
    keys, _, _ = _category_counts(ref, cur)
    return int(keys.size)


def _check_test(name: str, kind: str, test: str) -> None:
    if test not in TESTS:
        raise DriftError(
            f"feature {quoted(name)}: unknown drift test {quoted(test)}",
            hint=f"use one of {', '.join(TESTS)}",
        )
    if test in _NUMERICAL_ONLY and kind != "numerical":
        raise DriftError(
            f"feature {quoted(name)}: {test} needs a numerical feature, this one is {kind}",
            hint="use chisquare, z or jensenshannon for categories",
        )


def _check_threshold(name: str, test: str, threshold: float) -> float:
    ok = isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0
    if ok and test in _P_VALUE_TESTS:
        ok = threshold <= 1
    if not ok:
        bound = "in [0, 1]" if test in _P_VALUE_TESTS else ">= 0"
        raise DriftError(
            f"feature {quoted(name)}: threshold {threshold!r} for {test} is not a number {bound}",
            hint=f"Evidently's default is {DEFAULT_THRESHOLDS[test]}",
        )
    return float(threshold)


def _run_test(test: str, kind: str, ref: npt.NDArray[Any], cur: npt.NDArray[Any]) -> float:
    if test == "ks":
        return ks_pvalue(ref, cur)
    if test == "wasserstein":
        return wasserstein_normed(ref, cur)
    if test == "jensenshannon":
        return jensenshannon(ref, cur, numerical=kind == "numerical")
    if test == "z":
        return z_pvalue(ref, cur)
    return chisquare_pvalue(ref, cur)


# -- the tests -----------------------------------------------------------------------------


def _category_counts(
    ref: npt.NDArray[Any], cur: npt.NDArray[Any]
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Sorted union of categories, and each sample's count of each (0 where absent)."""
    import numpy as np

    try:
        ref_keys, ref_counts = np.unique(ref, return_counts=True)
        cur_keys, cur_counts = np.unique(cur, return_counts=True)
        keys = np.union1d(ref_keys, cur_keys)
    except TypeError as err:
        raise DriftError(
            "a categorical sample mixes value types that cannot be ordered (e.g. str and int)",
            hint="log one type per feature (e.g. all strings)",
        ) from err
    ref_full = np.zeros(keys.size, dtype=np.int64)
    cur_full = np.zeros(keys.size, dtype=np.int64)
    ref_full[np.searchsorted(keys, ref_keys)] = ref_counts
    cur_full[np.searchsorted(keys, cur_keys)] = cur_counts
    return keys, ref_full, cur_full


def chisquare_pvalue(ref: npt.NDArray[Any], cur: npt.NDArray[Any]) -> float:
    """Pearson's chi-squared goodness of fit of current counts to reference frequencies scaled
    to the current size (Evidently's ``_chi_stat_test``). A category the reference never saw
    has expected count 0: the statistic is infinite and the p-value 0 (drift), as in scipy."""
    import numpy as np

    _, ref_counts, cur_counts = _category_counts(ref, cur)
    if ref_counts.size < 2:
        return 1.0  # one category on both sides: nothing can differ
    expected = ref_counts * (cur.size / ref.size)
    if np.any((expected == 0) & (cur_counts > 0)):
        return 0.0
    stat = float(np.sum((cur_counts - expected) ** 2 / expected))
    return chi2_sf(stat, ref_counts.size - 1)


def z_pvalue(ref: npt.NDArray[Any], cur: npt.NDArray[Any]) -> float:
    """Two-sided Z-test for two proportions: the share of values other than the smallest
    category (Evidently's ``_z_stat_test``; 1.0 when both samples hold one and the same value)."""
    import numpy as np

    keys, ref_counts, cur_counts = _category_counts(ref, cur)
    if keys.size == 1:
        return 1.0
    n1, n2 = float(ref.size), float(cur.size)
    p1 = (n1 - ref_counts[0]) / n1
    p2 = (n2 - cur_counts[0]) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(np.clip(math.erfc(abs(z) / math.sqrt(2.0)), 0.0, 1.0))


def jensenshannon(ref: npt.NDArray[Any], cur: npt.NDArray[Any], *, numerical: bool) -> float:
    """Jensen-Shannon distance (natural log, as scipy's ``jensenshannon`` with base None) of
    the two samples' shares: per category, or for a numerical feature whose reference has more
    than 20 distinct values, per bin of ``np.histogram_bin_edges(both, 'sturges')``
    (Evidently's ``get_binned_data`` without zero filling)."""
    import numpy as np

    if numerical and np.unique(ref).size > 20:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        p = np.histogram(ref, edges)[0].astype(np.float64)
        q = np.histogram(cur, edges)[0].astype(np.float64)
    else:
        _, ref_counts, cur_counts = _category_counts(ref, cur)
        p, q = ref_counts.astype(np.float64), cur_counts.astype(np.float64)
    p /= p.sum()
    q /= q.sum()
    m = (p + q) / 2
    js = _rel_entr(p, m) + _rel_entr(q, m)
    return float(math.sqrt(max(js, 0.0) / 2))


def _rel_entr(p: npt.NDArray[np.float64], m: npt.NDArray[np.float64]) -> float:
    import numpy as np

    nz = p > 0  # 0 * log(0 / m) is 0
    return float(np.sum(p[nz] * np.log(p[nz] / m[nz])))


def wasserstein_normed(ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64]) -> float:
    """First Wasserstein distance (area between the two empirical CDFs, as scipy's
    ``wasserstein_distance``) divided by max(population std of the reference, 0.001)."""
    return wasserstein(ref, cur) / max(float(ref.std()), 0.001)


def wasserstein(ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64]) -> float:
    """W1 as the integral over t in (0, 1] of |Q_ref(t) - Q_cur(t)|, Q the empirical quantile
    functions. Both are steps at multiples of 1/n and 1/m: in units of 1/(n m) the steps are
    integers, so merging them is an integer sort and no value is searched for (4-9x faster
    than the CDF form with two searchsorted calls at a million rows)."""
    import numpy as np

    u, v = np.sort(ref), np.sort(cur)
    n, m = u.size, v.size
    if n == m:
        return float(np.mean(np.abs(u - v)))
    steps = np.concatenate(
        [np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1, dtype=np.int64) * n]
    )
    steps.sort(kind="stable")  # two sorted runs: a merge
    widths = np.diff(steps, prepend=0)
    at_u = (steps + m - 1) // m - 1  # index of the quantile of u on each step's interval
    at_v = (steps + n - 1) // n - 1
    return float(np.sum(np.abs(u[at_u] - v[at_v]) * widths)) / (n * m)


def ks_statistic(ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64]) -> float:
    """Two-sample KS statistic: the largest gap between the empirical CDFs."""
    import numpy as np

    u, v = np.sort(ref), np.sort(cur)
    both = np.concatenate([u, v])
    gaps = (
        np.searchsorted(u, both, side="right") / u.size
        - np.searchsorted(v, both, side="right") / v.size
    )
    return float(np.max(np.abs(gaps)))


def ks_pvalue(ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64]) -> float:
    """Two-sided two-sample KS p-value: exact when both samples have <= 10,000 rows (scipy's
    ``method='auto'``), else the asymptotic Kolmogorov distribution at sqrt(n m / (n + m)) D."""
    d = ks_statistic(ref, cur)
    n1, n2 = int(ref.size), int(cur.size)
    if max(n1, n2) <= EXACT_KS_MAX_ROWS:
        return ks_exact_sf(n1, n2, d)
    en = n1 * n2 / (n1 + n2)
    return kolmogorov_sf(math.sqrt(en) * d)


def ks_exact_sf(n1: int, n2: int, d: float) -> float:
    """P(D >= d) under the null: the share of monotone lattice paths from (0, 0) to (m, n)
    that leave the band |x/m - y/n| < d (Hodges 1958; complement recursion of Viehmann 2021,
    as scipy). Walks anti-diagonals so each step is one vectorised update of the band."""
    import numpy as np

    m, n = max(n1, n2), min(n1, n2)
    g = math.gcd(m, n)
    mg, ng = m // g, n // g
    h = round(d * mg * n)  # d in units of 1/lcm(m, n), rounded as scipy does
    if h == 0:
        return 1.0
    s = mg + ng
    # buf[x + 1]: probability that a path reaching (x, k - x) has left the band already; 1 for
    # every cell outside the current window (left behind, or not reached yet), buf[0] too.
    buf = np.ones(m + 2)
    buf[1] = 0.0  # (0, 0)
    xs = np.arange(m + 1, dtype=np.float64)
    lo_prev = 0
    for k in range(1, m + n + 1):
        # Inside the band on diagonal k: |ng x - mg (k - x)| < h, and on the grid. Both ends
        # only move right as k grows.
        lo = max((mg * k - h) // s + 1, k - n, 0)
        hi = min(-(-(mg * k + h) // s) - 1, k, m)
        if hi < lo:
            return 1.0
        x = xs[lo : hi + 1]
        new = (x * buf[lo : hi + 1] + (k - x) * buf[lo + 1 : hi + 2]) / k
        buf[lo_prev + 1 : lo + 1] = 1.0  # cells the window left behind: outside the band
        buf[lo + 1 : hi + 2] = new
        lo_prev = lo
    return float(min(max(buf[m + 1], 0.0), 1.0))


def kolmogorov_sf(t: float) -> float:
    """Survival function of the Kolmogorov distribution: 2 sum_k (-1)^(k-1) exp(-2 k^2 t^2)."""
    if t <= 0:
        return 1.0
    if t < 0.2:
        return 1.0  # the series converges slowly here and the value is 1 - 1e-30
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * t * t)
        total += term if k % 2 else -term
        if term < 1e-18:
            break
    return min(max(2.0 * total, 0.0), 1.0)


def chi2_sf(x: float, dof: int) -> float:
    """Upper tail of the chi-squared distribution: the regularized upper incomplete gamma
    Q(dof / 2, x / 2), by its series below a + 1 and its continued fraction above."""
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    a, z = dof / 2.0, x / 2.0
    log_front = a * math.log(z) - z - math.lgamma(a)
    if z < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return min(max(1.0 - total * math.exp(log_front), 0.0), 1.0)
    # Lentz's continued fraction for Q(a, z).
    tiny = 1e-300
    b = z + 1.0 - a
    c = 1.0 / tiny
    dd = 1.0 / b
    frac = dd
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        dd = an * dd + b
        dd = tiny if abs(dd) < tiny else dd
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        dd = 1.0 / dd
        delta = dd * c
        frac *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return min(max(math.exp(log_front) * frac, 0.0), 1.0)
