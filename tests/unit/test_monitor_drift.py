"""Drift tests with Evidently's defaults (gha_mlops.monitor.drift): the routing table, the
p-values and distances against hand-computed cases and scipy, the thresholds at their
boundaries, missing data, hostile input, and verdicts side by side with Evidently."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from gha_mlops.errors import GhaMlopsError
from gha_mlops.monitor import drift
from gha_mlops.monitor.drift import (
    DriftError,
    EmptyColumnError,
    dataset_drift,
    feature_drift,
)

RNG_SEED = 20261205


def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


# -- routing: which test Evidently's defaults pick -------------------------------------------


@pytest.mark.parametrize(
    ("reference", "current", "kind", "test"),
    [
        (np.linspace(0, 1, 1000), np.linspace(0, 1, 500), "numerical", "ks"),
        (np.linspace(0, 1, 1001), np.linspace(0, 1, 500), "numerical", "wasserstein"),
        # a numerical feature with <= 5 distinct values is tested as categories
        (np.tile([0.0, 1.0, 2.0], 300), np.tile([0.0, 1.0, 2.0], 100), "numerical", "chisquare"),
        (np.tile([0.0, 1.0], 300), np.tile([0.0, 1.0], 100), "numerical", "z"),
        (np.tile([0.0, 1.0, 2.0], 400), np.tile([0.0, 1.0], 100), "numerical", "jensenshannon"),
        (np.tile([0.0, 1, 2, 3], 100), np.array([4.0, 1.0]), "numerical", "chisquare"),  # 5
        # n_values counts both samples: 5 in the reference plus a 6th in current -> KS
        (np.tile([0.0, 1, 2, 3, 4], 100), np.array([5.0, 1.0]), "numerical", "ks"),
        (np.array(["a", "b", "c"] * 10), np.array(["a", "b"]), "categorical", "chisquare"),
        (np.array(["a", "b"] * 10), np.array(["a"]), "categorical", "z"),
        (np.array(["a"] * 10), np.array(["b"]), "categorical", "z"),  # union of 2
        (np.array(["a", "b"] * 501), np.array(["a"]), "categorical", "jensenshannon"),
    ],
)
def test_default_test_follows_evidently(reference: Any, current: Any, kind: str, test: str) -> None:
    result = feature_drift("f", reference, current)
    assert (result.kind, result.test) == (kind, test)
    assert result.threshold == drift.DEFAULT_THRESHOLDS[test]


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (np.array([0.5, 1.5]), "numerical"),
        (np.arange(10), "categorical"),  # <= 10 distinct integers
        (np.arange(11), "numerical"),
        (np.array([True, False]), "categorical"),
        (np.array(["x", "y"]), "categorical"),
        (np.array(["x", None, "y"], dtype=object), "categorical"),
    ],
)
def test_kind_is_inferred_from_the_reference(values: Any, kind: str) -> None:
    assert feature_drift("f", values, values).kind == kind


# -- hand-computed values ----------------------------------------------------------------------


def test_ks_hand_computed() -> None:
    # disjoint samples of 3: D = 1, and 2 of the C(6, 3) = 20 orderings reach it
    assert drift.ks_statistic(np.array([1.0, 2, 3]), np.array([4.0, 5, 6])) == 1.0
    assert drift.ks_pvalue(np.array([1.0, 2, 3]), np.array([4.0, 5, 6])) == pytest.approx(0.1)
    assert drift.ks_pvalue(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])) == 1.0


def test_chi2_sf_closed_form() -> None:
    for x in (0.1, 1.0, 5.99146, 40.0):  # dof 2: Q = exp(-x / 2)
        assert drift.chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)
    assert drift.chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)


def test_z_hand_computed() -> None:
    # 30 % vs 50 % of 100 each: pooled 0.4, z = -0.2 / sqrt(0.24 * 0.02)
    ref = np.array(["a"] * 70 + ["b"] * 30)
    cur = np.array(["a"] * 50 + ["b"] * 50)
    z = 0.2 / math.sqrt(0.4 * 0.6 * (1 / 100 + 1 / 100))
    assert drift.z_pvalue(ref, cur) == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)


def test_jensenshannon_of_disjoint_categories_is_sqrt_ln2() -> None:
    value = drift.jensenshannon(np.array(["a"] * 5), np.array(["b"] * 7), numerical=False)
    assert value == pytest.approx(math.sqrt(math.log(2)))


def test_jensenshannon_bins_a_numerical_feature_only_above_20_distinct_values() -> None:
    # 10 distinct values: one share per value, so moving every 9 to 8 is seen (Sturges bins
    # would put 8 and 9 in one bin and see nothing)
    ref = np.repeat(np.arange(10.0), 3)  # 60 rows in all: 7 Sturges bins, 8 and 9 share one
    cur = np.where(ref == 9.0, 8.0, ref)
    assert drift.jensenshannon(ref, cur, numerical=True) == pytest.approx(
        drift.jensenshannon(ref, cur, numerical=False)
    )
    assert drift.jensenshannon(ref, cur, numerical=True) > 0.1


def test_wasserstein_is_normed_by_the_reference_std_at_least_0_001() -> None:
    ref, cur = np.array([0.0, 2.0]), np.array([1.0, 3.0])  # W = 1, std = 1
    assert drift.wasserstein_normed(ref, cur) == pytest.approx(1.0)
    # unequal sizes: {0, 1} against {0, 1, 2} differ by 1 on (1/3, 1/2] and (2/3, 1]: W = 1/2
    assert drift.wasserstein(np.array([1.0, 0.0]), np.array([2.0, 0.0, 1.0])) == pytest.approx(0.5)
    # a constant reference: std 0 is replaced by 0.001, so any move is a large drift
    assert drift.wasserstein_normed(np.zeros(5), np.ones(5)) == pytest.approx(1000.0)


def test_a_category_the_reference_never_saw_is_drift() -> None:
    ref = np.array(["a", "b", "c"] * 100)
    cur = np.array(["a", "b", "c"] * 100 + ["new"])
    result = feature_drift("f", ref, cur)
    assert (result.test, result.value, result.drifted) == ("chisquare", 0.0, True)


# -- against scipy (the reference implementation Evidently calls) ------------------------------


@pytest.mark.parametrize(
    ("n1", "n2", "shift"),
    [
        (3, 3, 1.0),
        (50, 50, 0.3),
        (100, 70, 0.2),
        (7, 13, 1.0),
        (1000, 1000, 0.05),
        (300, 1000, 0.2),
        (1000, 4000, 0.05),
        (20, 10000, 0.3),
    ],
)
def test_ks_matches_scipy_exact(n1: int, n2: int, shift: float) -> None:
    import scipy.stats as stats
    gen = rng()
    ref = gen.normal(size=n1)
    cur = np.round(gen.normal(shift, size=n2), 1)  # ties too
    expected = stats.ks_2samp(ref, cur, method="exact").pvalue
    assert drift.ks_pvalue(ref, cur) == pytest.approx(expected, abs=1e-6)


def test_ks_above_10000_rows_is_the_asymptotic_kolmogorov_distribution() -> None:
    import scipy.stats as stats
    for t in (0.3, 0.8, 1.22, 1.36, 2.5):
        assert drift.kolmogorov_sf(t) == pytest.approx(stats.kstwobign.sf(t), abs=1e-9)
    gen = rng()
    ref, cur = gen.normal(size=900), gen.normal(0.07, size=20000)
    d = drift.ks_statistic(ref, cur)
    en = 900 * 20000 / 20900
    assert drift.ks_pvalue(ref, cur) == pytest.approx(stats.kstwobign.sf(d * math.sqrt(en)))
    # scipy's own 'asymp' uses kstwo(round(en)): close, not equal (module docstring)
    assert drift.ks_pvalue(ref, cur) == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=0.1)


@pytest.mark.parametrize(
    ("x", "dof"),
    [(0.5, 1), (3.84, 1), (10, 5), (100, 50), (1e-3, 3), (50, 3), (400, 300), (1e4, 9999)],
)
def test_chi2_sf_matches_scipy(x: float, dof: int) -> None:
    import scipy.stats as stats
    assert drift.chi2_sf(x, dof) == pytest.approx(stats.chi2.sf(x, dof), rel=1e-9, abs=1e-15)


def test_distances_and_chisquare_match_scipy() -> None:
    import scipy.spatial.distance as distance
    import scipy.stats as stats
    gen = rng()
    ref, cur = gen.normal(size=5000), gen.normal(0.1, 1.2, size=7000)
    expected = stats.wasserstein_distance(ref, cur) / np.std(ref)
    assert drift.wasserstein_normed(ref, cur) == pytest.approx(expected, rel=1e-12)
    for n1, n2 in ((1000, 1000), (999, 1000), (3, 1001)):  # with ties
        tied_ref, tied_cur = np.round(ref[:n1], 1), np.round(cur[:n2] * 2, 1)
        assert drift.wasserstein(tied_ref, tied_cur) == pytest.approx(
            stats.wasserstein_distance(tied_ref, tied_cur), rel=1e-12
        )
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    p, q = np.histogram(ref, edges)[0] / ref.size, np.histogram(cur, edges)[0] / cur.size
    assert drift.jensenshannon(ref, cur, numerical=True) == pytest.approx(
        distance.jensenshannon(p, q), rel=1e-12
    )
    cats_ref, cats_cur = gen.choice(list("abcd"), 800), gen.choice(list("abcd"), 300)
    f_obs = [np.sum(cats_cur == k) for k in "abcd"]
    f_exp = [np.sum(cats_ref == k) * 300 / 800 for k in "abcd"]
    assert drift.chisquare_pvalue(cats_ref, cats_cur) == pytest.approx(
        stats.chisquare(f_obs, f_exp).pvalue, rel=1e-9
    )


# -- synthetic data: no drift stays quiet, a shift is caught -------------------------------


def _categories(gen: np.random.Generator, n: int, probs: list[float]) -> Any:
    return gen.choice(np.array(["a", "b", "c", "d"][: len(probs)]), size=n, p=probs)


def _exact(n: int, probs: list[float]) -> Any:
    """Categories in exactly these proportions: "no drift" that no seed can make look drifted."""
    counts = [round(n * p) for p in probs]
    return np.repeat(np.array(["a", "b", "c", "d"][: len(probs)]), counts)


@pytest.mark.parametrize(
    ("test", "same", "shifted"),
    [
        (
            "ks",
            lambda g: (g.normal(size=800), g.normal(size=600)),
            lambda g: (g.normal(size=800), g.normal(0.5, size=600)),
        ),
        (
            "wasserstein",
            lambda g: (g.normal(size=50_000), g.normal(size=50_000)),
            lambda g: (g.normal(size=50_000), g.normal(0.3, size=50_000)),
        ),
        (
            "chisquare",
            lambda g: (_exact(900, [0.5, 0.3, 0.2]), _exact(500, [0.5, 0.3, 0.2])),
            lambda g: (_categories(g, 900, [0.5, 0.3, 0.2]), _categories(g, 500, [0.3, 0.3, 0.4])),
        ),
        (
            "z",
            lambda g: (_exact(900, [0.6, 0.4]), _exact(500, [0.6, 0.4])),
            lambda g: (_categories(g, 900, [0.6, 0.4]), _categories(g, 500, [0.45, 0.55])),
        ),
        (
            "jensenshannon",
            lambda g: (
                _categories(g, 50_000, [0.5, 0.3, 0.2]),
                _categories(g, 50_000, [0.5, 0.3, 0.2]),
            ),
            lambda g: (
                _categories(g, 50_000, [0.5, 0.3, 0.2]),
                _categories(g, 50_000, [0.2, 0.3, 0.5]),
            ),
        ),
    ],
)
def test_no_drift_is_quiet_and_a_shift_is_caught(test: str, same: Any, shifted: Any) -> None:
    gen = rng()
    quiet = feature_drift("f", *same(gen))
    loud = feature_drift("f", *shifted(gen))
    assert (quiet.test, quiet.drifted) == (test, False)
    assert (loud.test, loud.drifted) == (test, True)


# -- thresholds at their boundaries ----------------------------------------------------------


def test_thresholds_at_the_boundary_follow_evidently() -> None:
    gen = rng()
    ref, cur = gen.normal(size=300), gen.normal(0.2, size=300)
    p = feature_drift("f", ref, cur).value
    assert feature_drift("f", ref, cur, threshold=p).drifted  # KS: p <= threshold
    assert not feature_drift("f", ref, cur, threshold=np.nextafter(p, 0)).drifted
    cats_ref, cats_cur = _categories(gen, 400, [0.5, 0.5]), _categories(gen, 400, [0.4, 0.6])
    pz = feature_drift("f", cats_ref, cats_cur).value
    assert not feature_drift("f", cats_ref, cats_cur, threshold=pz).drifted  # Z: p < threshold
    assert feature_drift("f", cats_ref, cats_cur, threshold=np.nextafter(pz, 1)).drifted
    big_ref, big_cur = gen.normal(size=2000), gen.normal(0.1, size=2000)
    w = feature_drift("f", big_ref, big_cur).value
    assert feature_drift("f", big_ref, big_cur, threshold=w).drifted  # distance >= threshold
    assert not feature_drift("f", big_ref, big_cur, threshold=np.nextafter(w, 1)).drifted


def test_dataset_drift_at_exactly_the_share_drifts() -> None:
    gen = rng()
    reference = {name: gen.normal(size=500) for name in "abcd"}
    current = {
        "a": gen.normal(2.0, size=500),
        "b": gen.normal(2.0, size=500),
        "c": gen.normal(size=500),
        "d": gen.normal(size=500),
    }
    result = dataset_drift(reference, current)
    assert [f.name for f in result.features] == list("abcd")
    assert [f.drifted for f in result.features] == [True, True, False, False]
    assert (result.share, result.drifted, result.threshold) == (0.5, True, 0.5)
    assert not dataset_drift(reference, current, share=0.51).drifted


# -- missing data and bad input ------------------------------------------------------------


def test_missing_values_are_dropped_and_counted() -> None:
    ref = np.array([1.0, np.nan, 2.0, np.inf, 3.0, -np.inf] * 20)
    cur = np.array([1.0, 2.0, np.nan] * 10)
    result = feature_drift("f", ref, cur)
    assert (result.reference_rows, result.current_rows) == (60, 20)
    cats = feature_drift(
        "g", np.array(["a", None, float("nan"), "b"], dtype=object), np.array(["a", "b"])
    )
    assert (cats.reference_rows, cats.current_rows) == (2, 2)


@pytest.mark.parametrize(
    ("reference", "current", "side"),
    [
        (np.array([np.nan, np.nan]), np.array([1.0]), "reference"),
        (np.array([1.0, 2.0]), np.array([], dtype=float), "current"),
        (np.array([1.0, 2.0]), np.array([np.inf, -np.inf]), "current"),
        (np.array([None, None], dtype=object), np.array(["a"]), "reference"),
    ],
)
def test_an_empty_sample_is_not_enough_data(reference: Any, current: Any, side: str) -> None:
    with pytest.raises(EmptyColumnError, match=f"the {side} sample has no values") as err:
        feature_drift("income", reference, current)
    assert "income" in err.value.message and err.value.hint


def test_a_feature_on_one_side_only_is_named() -> None:
    ref = {"a": np.ones(3), "b": np.ones(3)}
    with pytest.raises(DriftError, match="'b' is not in the current data"):
        dataset_drift(ref, {"a": np.ones(3)})
    with pytest.raises(DriftError, match="'c' is not in the reference data"):
        dataset_drift(ref, {"a": np.ones(3), "b": np.ones(3), "c": np.ones(3)})
    with pytest.raises(EmptyColumnError):
        dataset_drift({}, {})


@pytest.mark.parametrize(
    ("kwargs", "reference", "message"),
    [
        ({"kind": "text"}, np.ones(3), "unknown kind 'text'"),
        ({"test": "psi"}, np.ones(3), "unknown drift test 'psi'"),
        ({"test": "ks"}, np.array(["a", "b"]), "ks needs a numerical feature"),
        ({"kind": "numerical"}, np.array(["a", "b"]), "is not numerical"),
        ({"threshold": float("nan")}, np.ones(3), "threshold nan"),
        ({"threshold": 1.5, "test": "ks"}, np.ones(3), r"not a number in \[0, 1\]"),
        ({"threshold": -0.1, "test": "wasserstein"}, np.ones(3), "not a number >= 0"),
        ({}, np.ones((2, 2)), "not 1-D"),
        ({}, np.array(["a", 1], dtype=object), "cannot be ordered"),
        ({}, np.array([1 + 2j]), "dtype complex128"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: Any, reference: Any, message: str) -> None:
    with pytest.raises(GhaMlopsError, match=message) as err:
        feature_drift(
            "f",
            reference,
            np.asarray(reference)[:1].reshape(-1) if np.ndim(reference) == 1 else reference,
            **kwargs,
        )
    assert err.value.hint


def test_dataset_share_must_be_a_fraction() -> None:
    for share in (-0.1, 1.1, float("nan")):
        with pytest.raises(DriftError, match="drift share"):
            dataset_drift({"a": np.ones(3)}, {"a": np.ones(3)}, share=share)


# Side by side with Evidently (its verdicts on the same data): benchmarks/bench_monitor_drift.py,
# run by hand, since Evidently is not a dependency of the tests (it pins pandas < 3 and brings
# a web framework, nltk and statsmodels).
