"""The stage graph built from deps and outputs: edges, a stable topological order, cycles and
the closure queries the engine uses to select stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gha_mlops.config import Pipeline, load_pipeline
from gha_mlops.errors import ConfigError


def _pipeline(tmp_path: Path, stages: dict[str, dict[str, Any]],
              files: tuple[str, ...] = ()) -> Pipeline:
    """Load a pipeline of ``stages`` (declared in dict order); ``files`` exist, empty."""
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    body = {name: {"cmd": f"echo {name}", **spec} for name, spec in stages.items()}
    config = tmp_path / "mlops.yaml"
    config.write_text(yaml.safe_dump({"stages": body}, sort_keys=False))
    return load_pipeline(config)


def _order(p: Pipeline) -> list[str]:
    return list(p.stages)


@pytest.mark.parametrize(("stages", "expected"), [
    pytest.param({"a": {}, "b": {}, "c": {}}, ["a", "b", "c"], id="independent"),
    pytest.param({"a": {"outs": ["x"]}, "b": {"deps": ["x"], "outs": ["y"]},
                  "c": {"deps": ["y"]}}, ["a", "b", "c"], id="declared-in-order"),
    pytest.param({"c": {"deps": ["y"]}, "b": {"deps": ["x"], "outs": ["y"]},
                  "a": {"outs": ["x"]}}, ["a", "b", "c"], id="declared-backwards"),
    # A valid declaration order is kept as is, even where a stage could run earlier.
    pytest.param({"a": {"outs": ["x"]}, "b": {"deps": ["x"]}, "c": {}}, ["a", "b", "c"],
                 id="ties-keep-declaration-order"),
    pytest.param({"a": {}, "b": {"deps": ["z"]}, "c": {}, "d": {"outs": ["z"]}},
                 ["a", "c", "d", "b"], id="a-stage-waits-only-for-its-producer"),
    pytest.param({"report": {"deps": ["m", "e"]}, "train": {"deps": ["p"], "outs": ["m"]},
                  "lint": {}, "prepare": {"outs": ["p"]},
                  "evaluate": {"deps": ["m"], "outs": ["e"]}},
                 ["lint", "prepare", "train", "evaluate", "report"], id="diamond"),
])
def test_topological_order_with_ties_in_declaration_order(
        tmp_path: Path, stages: dict[str, dict[str, Any]], expected: list[str]) -> None:
    assert _order(_pipeline(tmp_path, stages)) == expected


def test_the_order_does_not_depend_on_load_or_cache(tmp_path: Path) -> None:
    stages = {"c": {"deps": ["y"]}, "b": {"deps": ["x"], "outs": ["y"]}, "a": {"outs": ["x"]}}
    first = _pipeline(tmp_path, stages)
    (tmp_path / ".gha-mlops").mkdir()
    assert _order(load_pipeline(tmp_path / "mlops.yaml")) == _order(first)  # writes the cache
    assert _order(load_pipeline(tmp_path / "mlops.yaml")) == _order(first)  # reads it


def test_a_dep_inside_an_output_directory_is_an_edge(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, {
        "prepare": {"outs": ["data/prepared"]},
        "train": {"deps": ["data/prepared/train.csv"]},
    })
    assert p.stage("train").upstream == ("prepare",)


def test_a_dep_directory_containing_an_output_is_an_edge(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, {
        "report": {"deps": ["models"]},
        "train": {"outs": ["models/model.pt"]},
        "export": {"outs": ["models/model.onnx"]},
    })
    assert p.stage("report").upstream == ("export", "train")
    assert _order(p) == ["train", "export", "report"]


def test_only_whole_path_components_overlap(tmp_path: Path) -> None:
    # `data/prepared2` is not inside `data/prepared`: no edge, and it must exist itself.
    p = _pipeline(tmp_path, {
        "prepare": {"outs": ["data/prepared"]},
        "train": {"deps": ["data/prepared2", "data/prepared-extra.csv"]},
    }, files=("data/prepared2", "data/prepared-extra.csv"))
    assert p.stage("train").upstream == ()


def test_upstream_lists_each_producer_once_sorted(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, {
        "z": {"outs": ["z.out", "z2.out"]},
        "a": {"outs": ["a.out"]},
        "use": {"deps": ["z.out", "a.out", "z2.out", "plain.txt"]},
    }, files=("plain.txt",))
    assert p.stage("use").upstream == ("a", "z")


def test_metrics_and_plots_are_outputs_too(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, {
        "train": {"metrics": ["metrics.json"], "plots": ["plots"]},
        "report": {"deps": ["metrics.json", "plots/loss.png"]},
    })
    assert p.stage("report").upstream == ("train",)
    assert p.producer_of("plots/loss.png") == "train"


def test_a_cycle_behind_a_tail_names_only_the_cycle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _pipeline(tmp_path, {
            "tail": {"deps": ["a.out"]},
            "a": {"deps": ["b.out"], "outs": ["a.out"]},
            "b": {"deps": ["a.out"], "outs": ["b.out"]},
        })
    err = info.value
    assert "a -> b -> a" in err.message
    assert "tail" not in err.message
    lines = (tmp_path / "mlops.yaml").read_text().splitlines()
    assert err.line == lines.index("    - b.out") + 1  # stages.a.deps[0]
    assert err.hint and "remove one of the deps listed" in err.hint
    assert len(err.notes) == 2 and not any("stages.tail" in n for n in err.notes)


def test_downstream_and_upstream_closure(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, {
        "prepare": {"outs": ["p"]},
        "train": {"deps": ["p"], "outs": ["m"]},
        "evaluate": {"deps": ["m"], "outs": ["e"]},
        "report": {"deps": ["m", "e"]},
        "lint": {},
    })
    assert p.downstream({"train"}) == {"train", "evaluate", "report"}
    assert p.downstream({"lint"}) == {"lint"}
    assert p.upstream_closure({"report"}) == {"prepare", "train", "evaluate", "report"}
    assert p.upstream_closure({"prepare"}) == {"prepare"}
