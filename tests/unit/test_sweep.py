"""Sweeps: a grid becomes matrix legs whose `set` lines read back as the same params, grid
errors name the key and line, and run records are ranked by one metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gha_mlops.config import parse_overrides
from gha_mlops.errors import ConfigError, GhaMlopsError, UsageError
from gha_mlops.pipeline.records import RECORD_SCHEMA
from gha_mlops.sweep import (
    MAX_MATRIX_LEGS,
    Grid,
    find_records,
    load_grid_file,
    parse_grid_json,
    plan_sweep,
    render_value,
    resolve_metric,
    select_best,
)


def _grid(doc: Any) -> Grid:
    return parse_grid_json(json.dumps(doc))


def _legs(doc: Any, **kw: Any) -> list[tuple[str, str]]:
    return [(leg.id, leg.set_lines) for leg in plan_sweep(_grid(doc), **kw).legs]


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("value", [
    0.01, 1e-5, 1, 1.0, -3, 10**20, True, False, None,
    "adam", "0.01", "1", "true", "yes", "on", "null", "~", "", " padded ", "- a", "#x",
    "a: b", "é", "x\ny", "it's", '"quoted"', "[1]", "{a: 1}", "1e-3",
    [1, "2", 3.5], [], {"name": "adam", "betas": [0.9, 0.999]}, {},
])
def test_set_values_read_back_as_the_same_value_and_type(value: Any) -> None:
    text = render_value(value)
    assert "\n" not in text
    back = yaml.safe_load(text)
    assert back == value and type(back) is type(value)
    # and through the real `gha-mlops run --set` parser
    parsed = parse_overrides([f"train.x={text}"])["train.x"]
    assert json.dumps(parsed) == json.dumps(value)


@pytest.mark.parametrize(("value", "expected"), [
    (0.01, "0.01"), ("0.01", "'0.01'"), (True, "true"), ("true", "'true'"), (None, "null"),
    ([1, 2], "[1, 2]"), ("x\ny", '"x\\ny"'), ("adam", "adam"),
])
def test_render_value(value: Any, expected: str) -> None:
    assert render_value(value) == expected


# --------------------------------------------------------------------------- plans


def test_the_product_varies_the_last_key_fastest_then_include() -> None:
    legs = _legs({"train.lr": [0.01, 0.001], "train.epochs": [5, 10],
                  "include": [{"train.lr": 0.1, "train.epochs": 3}]})
    assert legs == [
        ("leg-01-lr0.01-epochs5", "train.lr=0.01\ntrain.epochs=5"),
        ("leg-02-lr0.01-epochs10", "train.lr=0.01\ntrain.epochs=10"),
        ("leg-03-lr0.001-epochs5", "train.lr=0.001\ntrain.epochs=5"),
        ("leg-04-lr0.001-epochs10", "train.lr=0.001\ntrain.epochs=10"),
        ("leg-05-lr0.1-epochs3", "train.lr=0.1\ntrain.epochs=3"),
    ]


def test_matrix_is_the_github_include_form() -> None:
    plan = plan_sweep(_grid({"a.b": [1, "1"]}))
    assert plan.matrix() == {"include": [{"leg": "leg-01-b1", "set": "a.b=1"},
                                         {"leg": "leg-02-b1", "set": "a.b='1'"}]}


def test_ids_name_only_keys_that_vary_and_clashing_names_are_lengthened() -> None:
    legs = _legs({"train.lr": [0.1, 0.2], "finetune.lr": [0.3], "seed.fixed": [1]})
    assert [leg_id for leg_id, _ in legs] == ["leg-01-lr0.1", "leg-02-lr0.2"]
    legs = _legs({"train.lr": [0.1, 0.2], "finetune.lr": [0.3, 0.4]})
    assert legs[0][0] == "leg-01-train_lr0.1-finetune_lr0.3"
    assert _legs({"a": [1]})[0][0] == "leg-01-a1"  # one leg: every key is named


def test_ids_are_artifact_safe_short_and_unique() -> None:
    legs = _legs({"model.name": ["resnet 50/v2:\"x\"", "a" * 80, "b" * 80],
                  "data.augment": [True, False]})
    ids = [leg_id for leg_id, _ in legs]
    assert len(set(ids)) == len(ids)
    for leg_id in ids:
        assert len(leg_id) <= 60
        assert all(c.isalnum() or c in "._-" for c in leg_id), leg_id
    assert ids[0] == "leg-01-nameresnet_50_v2_x-augmenttrue"
    assert ids[2] == "leg-03-name" + "a" * 24 + "-augmenttrue"


def test_ids_pad_the_number_to_the_count() -> None:
    legs = _legs({"a": list(range(100)), "b": [1]})
    assert legs[0][0] == "leg-001-a0" and legs[-1][0] == "leg-100-a99"


def test_include_only_grid() -> None:
    assert _legs({"include": [{"a": 1, "b": "x"}, {"a": 2}]}) == [
        ("leg-01-a1-bx", "a=1\nb=x"), ("leg-02-a2", "a=2")]


@pytest.mark.parametrize(("doc", "message"), [
    ([1, 2], "a grid must be a mapping of params keys to lists of values, got a list"),
    ({}, "a grid must be a mapping of params keys to lists of values, got an empty mapping"),
    ({"train.lr": 0.01}, "train.lr: expected a list of values, got a number 0.01"),
    ({"train": {"lr": [1]}}, "train: expected a list of values, got a mapping"),
    ({"train.lr": []}, "train.lr: an empty list makes no legs"),
    ({"train.lr": [1, 2, 1]}, "train.lr[2]: the value 1 is listed twice (items 0 and 2)"),
    ({"a b": [1]}, "'a b' is not a dotted params key"),
    ({"a=b": [1]}, "'a=b' is not a dotted params key"),
    ({"a..b": [1]}, "'a..b' is not a dotted params key"),
    ({"include": [{"a": 1}, {"x y": 1}]}, "include[1]: 'x y' is not a dotted params key"),
    ({"include": {"a": 1}}, "include: expected a list of legs, got a mapping"),
    ({"include": []}, "include: an empty list makes no legs"),
    ({"include": [1]}, "include[0]: expected a mapping of params keys to values, got an "
                       "integer 1"),
    ({"include": [{}]}, "include[0]: expected a mapping of params keys to values, got an "
                        "empty mapping"),
    ({"a": [1, 2], "include": [{"a": 2}]},
     "include[0]: this leg sets the same values as leg 2 (a=2)"),
    ({"include": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]},
     "include[1]: this leg sets the same values as leg 1 (a=1, b=2)"),
])
def test_grid_errors_name_the_key(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan_sweep(_grid(doc))
    assert info.value.message == f"--grid-json: {message}"
    assert info.value.hint


def test_values_are_typed_strictly_so_1_and_true_are_different_legs() -> None:
    assert len(plan_sweep(_grid({"a": [1, 1.0, True, "1"]})).legs) == 4


@pytest.mark.parametrize(("total", "max_legs", "message"), [
    (257, None, "the grid makes 257 legs (257 combinations + 0 included) and GitHub runs at "
                "most 256 jobs from one matrix"),
    (6, 5, "the grid makes 6 legs (6 combinations + 0 included) and --max-legs is 5"),
])
def test_too_many_legs(total: int, max_legs: int | None, message: str) -> None:
    with pytest.raises(ConfigError, match="makes") as info:
        plan_sweep(_grid({"a": list(range(total))}), max_legs=max_legs)
    assert message in info.value.message


def test_the_limit_is_checked_before_the_product_is_built() -> None:
    huge = {f"k{i}": list(range(10)) for i in range(12)}  # 10**12 legs
    with pytest.raises(ConfigError, match="10 x 10 x"):
        plan_sweep(_grid(huge))
    assert len(plan_sweep(_grid({"a": list(range(MAX_MATRIX_LEGS))})).legs) == MAX_MATRIX_LEGS


def test_yaml_grid_errors_point_at_the_file_and_line(tmp_path: Path) -> None:
    grid = tmp_path / "sweep.yaml"
    grid.write_text("train.lr: [0.01, 0.001]\ntrain.epochs:\n  - 5\n  - 2024-01-01\n")
    with pytest.raises(ConfigError) as info:
        plan_sweep(load_grid_file(grid))
    err = info.value
    assert err.file is not None and err.file.endswith("sweep.yaml")
    assert (err.line, err.column) == (4, 5)
    assert err.message == "train.epochs[1]: a date (2024-01-01) is not a parameter value"


def test_yaml_duplicate_keys_are_errors(tmp_path: Path) -> None:
    grid = tmp_path / "sweep.yaml"
    grid.write_text("a: [1]\na: [2]\n")
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load_grid_file(grid)


def test_json_grid_file_and_inline_json_errors(tmp_path: Path) -> None:
    grid = tmp_path / "sweep.json"
    grid.write_text('{"a": [1e-3, 2]}')
    assert plan_sweep(load_grid_file(grid)).legs[0].set_lines == "a=0.001"
    grid.write_text('{"a": [1], "a": [2]}')
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load_grid_file(grid)
    with pytest.raises(ConfigError, match=r"--grid-json is not valid JSON: .*line 1, column"):
        parse_grid_json('{"a": [1')
    with pytest.raises(UsageError, match="no grid file at"):
        load_grid_file(tmp_path / "missing.yaml")


def test_inline_grids_may_be_yaml_as_workflow_inputs_often_are() -> None:
    plan = plan_sweep(parse_grid_json("train.lr: [0.01, 1e-3]\ntrain.epochs: [5]\n"))
    assert [leg.set_lines for leg in plan.legs] == ["train.lr=0.01\ntrain.epochs=5",
                                                    "train.lr='1e-3'\ntrain.epochs=5"]
    assert plan.warnings  # YAML's reading of 1e-3 is pointed out
    # JSON comes first: 1e-3 in JSON is a number
    assert plan_sweep(parse_grid_json('{"a": [1e-3]}')).legs[0].set_lines == "a=0.001"
    with pytest.raises(ConfigError, match="--grid-json is not valid JSON"):
        parse_grid_json("just words")
    with pytest.raises(ConfigError, match="duplicate key"):
        parse_grid_json("a: [1]\na: [2]\n")


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"a\[0\]: nan is not a finite number"):
        plan_sweep(parse_grid_json('{"a": [NaN]}'))


def test_an_exponent_without_a_dot_in_yaml_is_a_string_and_warned(tmp_path: Path) -> None:
    grid = tmp_path / "sweep.yaml"
    grid.write_text("train.lr: [1e-3, 1.0e-4]\n")
    plan = plan_sweep(load_grid_file(grid))
    assert [leg.set_lines for leg in plan.legs] == ["train.lr='1e-3'", "train.lr=0.0001"]
    assert len(plan.warnings) == 1
    assert "train.lr[0]: '1e-3' is a string, not a number" in plan.warnings[0]
    assert "write 0.001" in plan.warnings[0]


# --------------------------------------------------------------------------- selection


def _record(run_id: str, metrics: dict[str, dict[str, Any]], status: str = "succeeded",
            overrides: dict[str, Any] | None = None, kind: str = "run",
            started: str | None = None) -> dict[str, Any]:
    return {"schema": RECORD_SCHEMA, "id": run_id, "kind": kind, "status": status,
            "started_at": started or f"2026-11-22T{run_id[-2:]}:00:00.000Z",
            "params": {"overrides": overrides or {}}, "metrics": metrics,
            "stages": [{"name": "train", "status": "ran" if status == "succeeded" else status}]}


def _put(root: Path, leg: str, record: dict[str, Any]) -> None:
    path = root / f"run-{leg}" / ".gha-mlops" / "runs" / f"{record['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    (path.parent / "index.json").write_text("[]")
    (root / f"run-{leg}" / "metrics").mkdir(exist_ok=True)
    (root / f"run-{leg}" / "metrics" / "eval.json").write_text('{"acc": 0.1}')  # not a record


def _eval(acc: Any, **more: Any) -> dict[str, dict[str, Any]]:
    return {"metrics/eval.json": {"acc": acc, **more}, "metrics/train.json": {"loss": 0.5}}


@pytest.fixture
def legs(tmp_path: Path) -> Path:
    root = tmp_path / "legs"
    _put(root, "leg-01-lr0.1", _record("r-01", _eval(0.80), overrides={"train.lr": 0.1}))
    _put(root, "leg-02-lr0.01", _record("r-02", _eval(0.91), overrides={"train.lr": 0.01}))
    _put(root, "leg-03-lr0.001", _record("r-03", _eval(0.75), overrides={"train.lr": 0.001}))
    _put(root, "leg-04-lr1", _record("r-04", _eval(0.99), status="failed"))
    _put(root, "leg-05-lr2", _record("r-05", {"metrics/train.json": {"loss": 0.4}}))
    return root


@pytest.mark.parametrize(("direction", "order"), [
    ("max", ["leg-02-lr0.01", "leg-01-lr0.1", "leg-03-lr0.001"]),
    ("min", ["leg-03-lr0.001", "leg-01-lr0.1", "leg-02-lr0.01"]),
])
def test_select_ranks_by_direction(legs: Path, direction: str, order: list[str]) -> None:
    sel = select_best(find_records([legs]), "acc", direction)
    assert [c.leg for c in sel.ranking] == order
    assert sel.metric == "metrics/eval.json:acc"
    assert sel.best.overrides == {"train.lr": {"max": 0.01, "min": 0.001}[direction]}
    assert sel.best.directory == f"run-{order[0]}"
    assert sel.best.path.endswith(f"{sel.best.run_id}.json")


def test_skipped_legs_say_why(legs: Path) -> None:
    sel = select_best(find_records([legs]), "metrics/eval.json:acc", "max")
    assert [(c.leg, c.reason) for c in sel.skipped] == [
        ("leg-04-lr1", "the run failed (stage 'train')"),
        ("leg-05-lr2", "its record has no metric metrics/eval.json:acc"),
    ]
    ranking = sel.ranking_json()
    assert ranking[0]["rank"] == 1 and ranking[0]["value"] == 0.91
    assert ranking[0]["overrides"] == {"train.lr": 0.01} and ranking[0]["run_id"] == "r-02"


def test_ties_go_to_the_earlier_leg_in_natural_order(tmp_path: Path) -> None:
    root = tmp_path / "legs"
    for n in (10, 2, 1):
        _put(root, f"leg-{n}", _record(f"r-{n:02d}", _eval(0.5)))
    _put(root, "leg-3", _record("r-03", _eval(0.4)))
    for direction in ("max", "min"):
        sel = select_best(find_records([root]), "acc", direction)
        assert sel.best.leg == ("leg-1" if direction == "max" else "leg-3")
    sel = select_best(find_records([root]), "acc", "max")
    assert [c.leg for c in sel.ranking] == ["leg-1", "leg-2", "leg-10", "leg-3"]


def test_only_the_newest_record_of_a_leg_counts(tmp_path: Path) -> None:
    root = tmp_path / "legs"
    _put(root, "leg-01", _record("r-01", _eval(0.99), started="2026-11-22T01:00:00.000Z"))
    _put(root, "leg-01", _record("r-02", _eval(0.50), started="2026-11-22T02:00:00.000Z"))
    _put(root, "leg-01", _record("x-03", _eval(0.90), kind="reproduction"))
    sel = select_best(find_records([root]), "acc", "max")
    assert [(c.leg, c.run_id, c.value) for c in sel.ranking] == [("leg-01", "r-02", 0.5)]
    assert sorted(c.reason or "" for c in sel.skipped) == [
        "a reproduction record, not a run",
        "superseded by the newer record r-02 of the same leg"]


def test_records_given_as_files_or_outside_leg_directories(tmp_path: Path) -> None:
    loose = tmp_path / "r-07.json"
    loose.write_text(json.dumps(_record("r-07", _eval(0.3))))
    nested = tmp_path / "dl" / "run-leg-09" / "deep" / "r-09.json"
    nested.parent.mkdir(parents=True)
    nested.write_text(json.dumps(_record("r-09", _eval(0.4))))
    sel = select_best(find_records([loose, nested]), "acc", "max")
    assert [(c.leg, c.directory) for c in sel.ranking] == [("leg-09", "run-leg-09"),
                                                            ("r-07", "")]


def test_unreadable_json_is_reported_and_other_json_ignored(legs: Path) -> None:
    (legs / "run-leg-06").mkdir()
    (legs / "run-leg-06" / "broken.json").write_text('{"schema": "gha-mlo')
    sel = select_best(find_records([legs]), "acc", "max")
    assert ("leg-06", "not valid JSON") in [(c.leg, c.reason) for c in sel.skipped]
    assert len(sel.ranking) == 3  # metrics/eval.json and index.json are not records


def test_no_records_at_all(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no run records in") as info:
        find_records([tmp_path / "empty"])
    assert "pattern: run-*" in (info.value.hint or "")


@pytest.mark.parametrize(("metric", "message", "hint"), [
    ("loss", "the metric 'loss' is in several metrics files: metrics/eval.json, "
             "metrics/train.json", "--metric metrics/eval.json:loss"),
    ("f1", "no run record has the metric 'f1'",
     "the records have: metrics/eval.json:acc, metrics/eval.json:loss, "
     "metrics/train.json:loss"),
    ("metrics/eval.json:f1", "no run record has the metric 'metrics/eval.json:f1' "
                             "(no record's metrics/eval.json has 'f1')", "metrics/eval.json:acc"),
    ("other.json:acc", "no run record has the metric 'other.json:acc'", "the records have"),
])
def test_metric_names_that_do_not_resolve(metric: str, message: str, hint: str) -> None:
    records = [_record("r-01", _eval(0.5, loss=0.1))]
    with pytest.raises(UsageError) as info:
        resolve_metric(metric, records)
    assert info.value.message == message
    assert hint in (info.value.hint or "")


def test_a_key_with_a_colon_is_still_a_key() -> None:
    records = [_record("r-01", {"m.json": {"top:1": 0.5}})]
    assert resolve_metric("top:1", records) == ("m.json", "top:1")
    assert resolve_metric("m.json:top:1", records) == ("m.json", "top:1")


def test_no_leg_can_be_ranked(tmp_path: Path) -> None:
    root = tmp_path / "legs"
    _put(root, "leg-01", _record("r-01", _eval(0.5), status="failed"))
    _put(root, "leg-02", _record("r-02", _eval(True)))
    with pytest.raises(GhaMlopsError) as info:
        select_best(find_records([root]), "acc", "max")
    assert info.value.message == "no leg can be ranked by metrics/eval.json:acc: 2 skipped"
    assert [n.split(" (")[0] for n in info.value.notes] == [
        "leg-01: the run failed", "leg-02: metrics/eval.json:acc is True, not a number"]
