"""The reference profile (gha_mlops.monitor.profile): Evidently's kind rule, the statistics,
determinism, hostile stored profiles, and how close drift statistics computed from the
reconstructed reference are to those from the full data."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from gha_mlops.monitor import profile as P
from gha_mlops.monitor.profile import (
    OTHER,
    ProfileError,
    bucket_categories,
    build_profile,
    dump_profile,
    features_from_matrix,
    load_profile,
    reference_values,
)

RNG = np.random.default_rng(7)


def _one(column: Any, *, prediction: bool = False, kind: str | None = None) -> P.FeatureProfile:
    kinds = {"x": kind} if kind else None
    if prediction:
        return build_profile({"f": np.zeros(len(column))}, predictions={"x": column},
                             kinds=kinds).predictions[0]
    return build_profile({"x": column}, kinds=kinds).features[0]


# ---------------------------------------------------------------- kinds (Evidently's rule)

@pytest.mark.parametrize(("column", "prediction", "kind"), [
    (np.array([0.5, 1.5, 2.5]), False, "numerical"),            # floats: numerical
    (np.array([1.0, 2.0, 1.0]), False, "numerical"),            # even with few values
    (np.array([0, 1, 2, 3, 4] * 3), False, "categorical"),      # int, 5 distinct
    (np.arange(6), False, "numerical"),                         # int, 6 distinct
    (np.array([True, False, True]), False, "categorical"),      # bool
    (np.array(["a", "b", "a"]), False, "categorical"),          # strings
    (np.array([1, None, 2.5], dtype=object), False, "numerical"),  # pandas makes it float
    (np.array(["a", 1, None], dtype=object), False, "categorical"),
    (np.array([0.0, 1.0, 2.0, 3.0]), True, "categorical"),      # prediction: class ids
    (np.array([0.0, 0.5, 1.0]), True, "numerical"),             # prediction: probabilities
    (np.array([0.0, 1.0, 2.0, 3.0]), False, "numerical"),       # the same as a feature
])
def test_kind_follows_evidentlys_detection(column: Any, prediction: bool, kind: str) -> None:
    assert _one(column, prediction=prediction).kind == kind


def test_kinds_override_and_its_mistakes() -> None:
    assert _one(np.arange(100), kind="categorical").distinct == 100
    assert _one(np.array([1, 2, 1]), kind="numerical").quantiles[-1] == 2.0
    with pytest.raises(ProfileError, match="must be one of"):
        _one(np.arange(3), kind="ordinal")
    with pytest.raises(ProfileError, match="not numeric"):
        _one(np.array(["a", "b"]), kind="numerical")
    with pytest.raises(ProfileError, match="unknown column"):
        build_profile({"x": [1.0]}, kinds={"y": "numerical"})


# ---------------------------------------------------------------- statistics

def test_numerical_statistics_match_numpy_and_missing_counts_nan_and_inf() -> None:
    data = RNG.lognormal(size=20_000)
    col = data.copy()
    col[:10] = np.nan
    col[10:13] = np.inf
    f = _one(col)
    kept = data[13:]
    assert (f.count, f.missing) == (kept.size, 13)
    assert (f.min, f.max) == (kept.min(), kept.max())
    assert f.mean == pytest.approx(kept.mean(), rel=1e-12)
    assert f.std == pytest.approx(kept.std(ddof=1), rel=1e-12)
    np.testing.assert_allclose(f.quantiles, np.quantile(kept, np.linspace(0, 1, 1001)), rtol=1e-12)
    assert len(f.quantiles) == P.N_QUANTILES and sum(f.hist_counts) == f.count
    assert len(f.hist_edges) == P.HIST_BINS + 1 and f.values is None  # above RAW_LIMIT


def test_small_columns_keep_every_value_so_reference_values_are_exact() -> None:
    data = RNG.normal(size=P.RAW_LIMIT)
    f = _one(data)
    assert f.values is not None
    np.testing.assert_array_equal(reference_values(f), np.sort(data))
    constant = _one(np.full(10, 3.0))
    assert constant.hist_counts == (10,) and constant.std == 0.0
    empty = _one(np.full(4, np.nan))
    assert (empty.count, empty.missing, empty.quantiles) == (0, 4, ())
    assert reference_values(empty).size == 0


def test_categorical_keeps_the_top_categories_and_sums_the_rest() -> None:
    col = np.concatenate([np.repeat(np.arange(1500), 2), np.repeat([7], 50)]).astype(str)
    f = _one(col)
    assert f.categories[0] == ("7", 52)
    assert len(f.categories) == P.TOP_CATEGORIES and f.distinct == 1500
    assert f.other_count == col.size - sum(c for _, c in f.categories) == 500 * 2
    # ties are ranked by value, so the cut is deterministic
    assert [v for v, _ in f.categories[1:4]] == ["0", "1", "10"]
    mixed = _one(np.array(["a", 1, True, None, "a", float("nan")], dtype=object))
    assert (mixed.count, mixed.missing) == (4, 2)
    # True and 1 are equal in Python, not as categories
    assert sorted((json.dumps(v), c) for v, c in mixed.categories) == [
        ('"a"', 2), ("1", 1), ("true", 1)]


def test_reference_values_of_a_categorical_column_and_the_other_bucket() -> None:
    f = _one(np.array(["a"] * 6 + ["b"] * 3 + ["c"]))
    assert sorted(reference_values(f).tolist()) == ["a"] * 6 + ["b"] * 3 + ["c"]
    scaled = reference_values(f, size=4)  # largest remainders: 2.4, 1.2, 0.4 -> 2, 1, 1
    assert sorted(scaled.tolist()) == ["a", "a", "b", "c"]
    cut = _one(np.arange(1200).astype(str), kind="categorical")
    ref = reference_values(cut)
    assert (ref == OTHER).sum() == 200 and ref.size == 1200
    window = bucket_categories(cut, np.array(["5", "999", "new", None], dtype=object))  # "999" ranks last
    assert window.tolist() == ["5", OTHER, OTHER]


# ---------------------------------------------------------------- determinism and JSON

def _mixed_data(n: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    rng = np.random.default_rng(seed)
    feats = {"age": rng.normal(40, 12, n), "city": rng.choice(["x", "y", "z"], n),
             "k": rng.integers(0, 4, n), "tiny": rng.random(n) * 1e-300}
    return feats, {"score": rng.random(n)}


def test_same_data_gives_byte_identical_json_whatever_the_row_order_or_seed() -> None:
    feats, preds = _mixed_data(8000, 1)
    one = dump_profile(build_profile(feats, predictions=preds, seed=0))
    assert one == dump_profile(build_profile(feats, predictions=preds, seed=99))
    perm = np.random.default_rng(3).permutation(8000)
    shuffled = dump_profile(build_profile({k: v[perm] for k, v in feats.items()},
                                          predictions={k: v[perm] for k, v in preds.items()}))
    assert one == shuffled
    assert one != dump_profile(build_profile(_mixed_data(8000, 2)[0]))
    doc = json.loads(one)
    assert doc["format"] == P.FORMAT and list(doc) == sorted(doc)


def test_round_trip_is_lossless() -> None:
    feats, preds = _mixed_data(3000, 5)
    prof = build_profile(feats, predictions=preds)
    assert load_profile(dump_profile(prof), where="p.json") == prof


def test_size_does_not_grow_with_rows_and_50_features_fit_in_2_mb() -> None:
    # Above RAW_LIMIT a numerical column is 1001 quantiles + a 50-bin histogram whatever the
    # number of rows but for the tail quantiles (30 a side at 1M rows, 90 at most); measured:
    # 1.11 MB for 50 numerical features of 1,000,000 rows.
    x = RNG.normal(size=(20_000, 50)) * np.pi
    size = len(dump_profile(build_profile(features_from_matrix(x))))
    assert size < 2_000_000, size


def test_build_refuses_inconsistent_input() -> None:
    with pytest.raises(ProfileError, match="rows"):
        build_profile({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ProfileError, match="not 1-D"):
        build_profile({"a": np.zeros((2, 2))})
    with pytest.raises(ProfileError, match="datetime"):
        build_profile({"a": np.array(["2024-01-01"], dtype="datetime64[D]")})
    with pytest.raises(ProfileError, match="column name"):
        build_profile({"": [1.0]})
    with pytest.raises(ProfileError, match="no feature"):
        build_profile({})
    with pytest.raises(ProfileError, match="holds a dict"):
        build_profile({"a": np.array([{}, "x"], dtype=object)})
    with pytest.raises(ProfileError, match="wider than float64"):
        build_profile({"a": [-1.7e308, 1.7e308]})
    with pytest.raises(ProfileError, match="overflows"):
        build_profile({"a": [-1e300, 1e300, 0.0]})  # the variance is not a float64
    with pytest.raises(ProfileError, match="2 names for 3"):
        features_from_matrix(np.zeros((2, 3)), ["a", "b"])
    assert list(features_from_matrix(np.zeros((2, 3)))) == ["f0", "f1", "f2"]


# ---------------------------------------------------------------- hostile stored profiles

def _stored() -> dict[str, Any]:
    return P.profile_json(build_profile(
        {"num": RNG.normal(size=6000), "cat": np.array(["a", "b", "b"] * 2000)},
        predictions={"small": RNG.random(6000)[:6000]}))


def _set(path: str, value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value
    return mutate


@pytest.mark.parametrize(("mutate", "field"), [
    (_set("format", "gha-mlops.profile/2"), "format"),
    (_set("rows", -1), "rows"),
    (_set("rows", True), "rows"),
    (_set("features", {}), "features"),
    (_set("features", []), "features"),
    (_set("features.0.name", "x" * 300), "name"),
    (_set("features.1.name", "num"), "unique column names"),
    (_set("features.0.kind", "text"), "kind"),
    (_set("features.0.count", 5999), "count + missing"),
    (_set("features.0.mean", 1e9), "mean"),
    (_set("features.0.std", -1.0), "std"),
    (_set("features.0.quantiles.500", 1e9), "quantiles"),
    (_set("features.0.quantiles", [0.0] * 10), "quantiles"),
    (_set("features.0.quantiles.3", "1"), "quantiles[3]"),
    (_set("features.0.tail_quantiles", [0.0] * 3), "tail_quantiles"),
    (_set("features.0.tail_quantiles", [1e3] * 14), "in order with the quantiles"),
    (_set("features.0.histogram.counts.0", 10**6), "histogram.counts"),
    (_set("features.0.values", [0.0] * 6000), "values"),
    (_set("features.1.categories.0", [{"x": 1}, 4000]), "categories[0]"),
    (_set("features.1.categories", [["b", 4000], ["b", 2000]]), "categories"),
    (_set("features.1.categories", [["a", 2000], ["b", 4000]]), "categories"),
    (_set("features.1.other_count", 1), "other_count"),
    (_set("features.1.categories", [["b", 4000]]), "other_count"),  # sum holds, cut at 1 < 1000
    (_set("features.1.distinct", 3), "other_count"),  # a third value, yet nothing cut
    (_set("predictions.0.values", None), None),  # allowed: the values are optional
])
def test_load_refuses_each_malformed_field_naming_the_file_and_field(mutate: Any,
                                                                     field: str | None) -> None:
    doc = _stored()
    mutate(doc)
    data = json.dumps(doc).encode()
    if field is None:
        load_profile(data, where="models/m/profile.json")
        return
    with pytest.raises(ProfileError) as err:
        load_profile(data, where="models/m/profile.json")
    assert "models/m/profile.json" in err.value.message and field in err.value.message
    assert err.value.hint


@pytest.mark.parametrize("data", [
    b"\xff\xfe", b"{", b"[]", b'{"rows": NaN}', b'{"rows": Infinity}', b'{"rows": -Infinity}',
    b"[" * 100_000, b'{"format": "gha-mlops.profile/1", "rows": 1e999}',
])
def test_load_refuses_what_is_not_a_profile(data: bytes) -> None:
    with pytest.raises(ProfileError, match=r"p\.json: (not a JSON profile|.* must be)"):
        load_profile(data, where="p.json")


def test_nan_is_refused_by_the_parser_not_later() -> None:
    with pytest.raises(ProfileError, match=r"not a JSON profile.*NaN is not a finite number"):
        load_profile(b'{"format": "gha-mlops.profile/1", "rows": 1, "x": NaN}', where="p")


def test_resampling_reads_the_quantile_function_at_mid_points() -> None:
    f = _one(np.linspace(0.0, 1.0, 10_001))
    for size in (1, 2, 10, 333):
        sample = reference_values(f, size=size)
        assert sample.size == size and sample.mean() == pytest.approx(0.5, abs=1e-9)


def test_load_refuses_an_oversized_profile_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "MAX_PROFILE_BYTES", 100)
    with pytest.raises(ProfileError, match="over the 100 limit"):
        load_profile(b" " * 101, where="p.json")


def test_a_non_finite_number_written_as_a_huge_literal_is_refused() -> None:
    doc = _stored()
    text = json.dumps(doc).replace(json.dumps(doc["features"][0]["quantiles"][1]), "1e999", 1)
    with pytest.raises(ProfileError, match="finite number"):
        load_profile(text.encode(), where="p.json")


# ---------------------------------------------------------------- drift fidelity

def _ks(a: Any, b: Any) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / a.size
                               - np.searchsorted(b, grid, side="right") / b.size)))


def _wasserstein_normed(ref: Any, cur: Any) -> float:
    # W1 = integral |F_ref - F_cur|; normed by the reference's std, as Evidently does
    ref, cur = np.sort(ref), np.sort(cur)
    grid = np.sort(np.concatenate([ref, cur]))
    f_ref = np.searchsorted(ref, grid[:-1], side="right") / ref.size
    f_cur = np.searchsorted(cur, grid[:-1], side="right") / cur.size
    return float(np.sum(np.abs(f_ref - f_cur) * np.diff(grid)) / np.std(ref))


def _jensen_shannon(ref: Any, cur: Any) -> float:
    keys, codes = np.unique(np.concatenate([ref, cur]).astype(str), return_inverse=True)
    p = np.bincount(codes[: ref.size], minlength=keys.size) / ref.size
    q = np.bincount(codes[ref.size:], minlength=keys.size) / cur.size
    m = (p + q) / 2

    def kl(x: Any) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))
    return float(np.sqrt((kl(p) + kl(q)) / 2))


@pytest.mark.parametrize("shift", [0.0, 0.02, 0.08, 0.12, 0.5])
def test_drift_from_the_reconstructed_reference_agrees_with_the_full_one(shift: float) -> None:
    rng = np.random.default_rng(11)
    full = np.concatenate([rng.lognormal(0, 0.7, 150_000), rng.normal(8, 1, 50_000)])
    rebuilt = reference_values(_one(full))
    assert rebuilt.size == full.size
    cur = np.concatenate([rng.lognormal(0, 0.7, 3_000), rng.normal(8, 1, 1_000)])
    cur = cur + shift * full.std()
    ks_full, ks_rebuilt = _ks(full, cur), _ks(rebuilt, cur)
    wd_full, wd_rebuilt = _wasserstein_normed(full, cur), _wasserstein_normed(rebuilt, cur)
    assert abs(ks_full - ks_rebuilt) <= 0.002  # the stated bound: 2 / (N_QUANTILES - 1)
    assert abs(wd_full - wd_rebuilt) <= 0.005
    critical = 1.358 * np.sqrt((full.size + cur.size) / (full.size * cur.size))  # alpha 0.05
    assert (ks_full > critical) == (ks_rebuilt > critical)
    assert (wd_full >= 0.1) == (wd_rebuilt >= 0.1)  # Evidently's Wasserstein threshold


@pytest.mark.parametrize("tail", ["lognormal", "student_t3"])
def test_heavy_tails_are_kept_by_the_tail_quantiles(tail: str) -> None:
    # Linear interpolation from the 0.999 quantile to the max spread a heavy tail's last
    # 0.1 % over its whole range: the normed Wasserstein distance moved by 0.1 to 0.2.
    rng = np.random.default_rng(13)

    def draw(n: int) -> Any:
        return rng.lognormal(0, 1, n) if tail == "lognormal" else rng.standard_t(3, n)
    full = draw(200_000)
    rebuilt = reference_values(_one(full))
    for shift in (0.0, 0.1):
        cur = draw(5_000) + shift * full.std()
        assert abs(_wasserstein_normed(full, cur) - _wasserstein_normed(rebuilt, cur)) <= 0.005
    assert len(_one(full).tail_quantiles) == 2 * 23  # 10**-3.1 .. 10**-5.3 >= 1 / 200,000


def test_categorical_drift_from_the_profile_matches_the_full_data() -> None:
    rng = np.random.default_rng(12)
    weights = 1 / np.arange(1, 3001)
    full = rng.choice(3000, size=100_000, p=weights / weights.sum()).astype(str)
    f = _one(full)
    assert f.other_count > 0
    for skew in (1.0, 1.3):
        w = weights ** skew
        cur = rng.choice(3000, size=5_000, p=w / w.sum()).astype(str)
        js_full = _jensen_shannon(bucket_categories(f, full), bucket_categories(f, cur))
        js_rebuilt = _jensen_shannon(reference_values(f), bucket_categories(f, cur))
        assert js_full == pytest.approx(js_rebuilt, abs=1e-12)
