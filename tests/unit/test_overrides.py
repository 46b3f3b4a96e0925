"""Params overrides (`gha-mlops run --set KEY=VALUE`): parsing, validation, signatures and the
cache, what stage scripts see, the run record and reproduction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.config import STATE_DIR, load_pipeline, param_value, parse_overrides
from gha_mlops.errors import ReproductionError, UsageError
from gha_mlops.pipeline.engine import RunOptions, RunResult, run_pipeline
from gha_mlops.pipeline.reproduce import reproduce_run
from gha_mlops.store.hashing import sha256_file
from tests.conftest import Workspace


def _run(ws: Workspace, *sets: str, **options: Any) -> RunResult:
    """One run through the engine, with ``--set`` items parsed as the CLI parses them."""
    pipeline = load_pipeline(ws.root / "mlops.yaml", overrides=parse_overrides(sets))
    environ = options.pop("environ", {"PATH": os.environ.get("PATH", "")})
    return run_pipeline(pipeline, RunOptions(environ=environ, **options))


# A stage whose output is made of what `gha_mlops.train.params()` returns to the script.
SEES_PARAMS = """\
    seed: 3
    stages:
      train:
        cmd: >-
          python -c "import json; from gha_mlops.train import params;
          print(json.dumps({'lr': params('train.lr'), 'all': params()}))" > seen.json
          && cp "$GHA_MLOPS_PARAMS" params-seen.yaml
          && echo "$GHA_MLOPS_PARAMS" > params-path.txt
        params: [train.lr]
        outs: [seen.json, params-seen.yaml, params-path.txt]
    """


# ---------------------------------------------------------------------------- parsing

@pytest.mark.parametrize(("item", "key", "value"), [
    ("train.lr=0.01", "train.lr", 0.01),
    ("train.lr=1.0e-5", "train.lr", 1e-5),
    # YAML 1.1, as PyYAML reads params.yaml: without a dot an exponent is a string there too.
    ("train.lr=1e-5", "train.lr", "1e-5"),
    ("train.epochs=10", "train.epochs", 10),
    ("train.shuffle=true", "train.shuffle", True),
    ("train.shuffle=false", "train.shuffle", False),
    ("train.layers=[1, 2]", "train.layers", [1, 2]),
    ("train.opt=adam", "train.opt", "adam"),
    ("train.opt='0.01'", "train.opt", "0.01"),
    ("train.opt={name: sgd, momentum: 0.9}", "train.opt", {"name": "sgd", "momentum": 0.9}),
    ("train.opt=", "train.opt", None),
    ("train.opt=null", "train.opt", None),
    ("train.expr=a=b", "train.expr", "a=b"),
    (" train.lr =0.5", "train.lr", 0.5),
    ("train.layers.0=64", "train.layers.0", 64),
    ("weights={1: 2.5}", "weights", {"1": 2.5}),  # keys as the params file's are read
])
def test_values_are_read_as_yaml(item: str, key: str, value: Any) -> None:
    assert parse_overrides([item]) == {key: value}


def test_a_key_given_twice_keeps_the_last_value() -> None:
    assert parse_overrides(["a=1", "b=2", "a=3"]) == {"b": 2, "a": 3}
    assert list(parse_overrides(["a=1", "b=2", "a=3"])) == ["b", "a"]


@pytest.mark.parametrize(("item", "message"), [
    ("train.lr", "expected KEY=VALUE, found no '='"),
    ("=1", "is not a dotted params key"),
    (".lr=1", "is not a dotted params key"),
    ("train..lr=1", "is not a dotted params key"),
    ("train.=1", "is not a dotted params key"),
    ("train. lr=1", "is not a dotted params key"),
    ("train.lr=[1", "is not valid YAML"),
    ("train.lr={a: 1", "is not valid YAML"),
    ("train.lr=a\n---\nb", "is not valid YAML"),
    ("train.day=2024-01-01", "a date"),
    ("train.blob=!!binary aGk=", "not supported as a parameter value"),
])
def test_malformed_overrides_are_usage_errors(item: str, message: str) -> None:
    with pytest.raises(UsageError, match=r"^--set ") as info:
        parse_overrides([item])
    assert message in info.value.message
    assert info.value.hint and "--set" in info.value.hint
    assert info.value.exit_code == 2


# ---------------------------------------------------------------------------- validation

def test_an_unknown_key_names_the_key_the_file_and_the_nearest_keys(
        workspace: Workspace) -> None:
    with pytest.raises(UsageError) as info:
        _run(workspace, "train.lrr=0.2")
    err = info.value
    assert "train.lrr" in err.message and "params.yaml" in err.message
    assert err.hint is not None
    assert "did you mean 'train.lr'?" in err.hint
    assert "train.epochs" in err.hint and "train.lr" in err.hint
    assert not (workspace.root / STATE_DIR / "runs").exists()  # nothing ran


@pytest.mark.parametrize(("item", "hint"), [
    ("trian.lr=1", "did you mean 'train.lr'?"),
    ("nope=1", "at the top level: prepare, train"),
    ("train.lr.x=1", "'train.lr' in params.yaml is a number"),
    ("train.new=1", "add new keys to the file"),
])
def test_only_existing_keys_can_be_overridden(workspace: Workspace, item: str,
                                              hint: str) -> None:
    with pytest.raises(UsageError) as info:
        load_pipeline(workspace.root / "mlops.yaml", overrides=parse_overrides([item]))
    assert hint in (info.value.hint or "")


def test_without_a_params_file_every_key_is_unknown(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", "stages:\n  s:\n    cmd: echo hi\n")
    (workspace.root / "params.yaml").unlink()
    with pytest.raises(UsageError, match=r"no key 'a' in params\.yaml"):
        _run(workspace, "a=1")


def test_a_value_that_takes_away_a_key_a_stage_reads_is_refused(workspace: Workspace) -> None:
    with pytest.raises(UsageError) as info:
        _run(workspace, "train=5")
    assert "stage 'train' reads 'train.lr'" in info.value.message
    assert info.value.message.startswith("--set train:")
    # A mapping that still has the key is fine: a section may be replaced as a whole.
    result = _run(workspace, "train={lr: 0.3}")
    assert result.record["params"]["values"]["train.lr"] == 0.3


def test_list_items_and_whole_sections_can_be_overridden(workspace: Workspace) -> None:
    workspace.write("params.yaml", "prepare:\n  scale: 1\ntrain:\n  lr: 0.1\n  layers: [8, 16]\n")
    p = load_pipeline(workspace.root / "mlops.yaml",
                      overrides=parse_overrides(["train.layers.1=32", "prepare={scale: 2}"]))
    assert param_value(p.params, "train.layers") == [8, 32]
    assert param_value(p.params, "prepare.scale") == 2
    with pytest.raises(UsageError):
        load_pipeline(workspace.root / "mlops.yaml", overrides={"train.layers.2": 1})


def test_overrides_apply_in_the_order_given(workspace: Workspace) -> None:
    p = load_pipeline(workspace.root / "mlops.yaml",
                      overrides=parse_overrides(["train={lr: 0.5, epochs: 1}", "train.lr=0.7"]))
    assert param_value(p.params, "train") == {"lr": 0.7, "epochs": 1}


# ---------------------------------------------------------------------------- the config cache

def test_overrides_never_reach_the_config_cache(workspace: Workspace) -> None:
    (workspace.root / STATE_DIR).mkdir()
    cache = workspace.root / STATE_DIR / "tmp" / "config.json"
    first = load_pipeline(workspace.root / "mlops.yaml", overrides={"train.lr": 0.9})
    assert param_value(first.params, "train.lr") == 0.9
    assert json.loads(cache.read_text())["params"]["train"]["lr"] == 0.1
    # A cache hit with overrides: applied on top, the cache unchanged, the next plain load clean.
    second = load_pipeline(workspace.root / "mlops.yaml", overrides={"train.lr": 0.8})
    assert param_value(second.params, "train.lr") == 0.8
    plain = load_pipeline(workspace.root / "mlops.yaml")
    assert param_value(plain.params, "train.lr") == 0.1 and dict(plain.overrides) == {}
    assert json.loads(cache.read_text())["params"]["train"]["lr"] == 0.1


def test_a_cached_load_with_overrides_imports_neither_yaml_nor_pydantic(
        workspace: Workspace) -> None:
    (workspace.root / STATE_DIR).mkdir()
    config = workspace.root / "mlops.yaml"
    load_pipeline(config)
    code = ("import sys; from pathlib import Path; from gha_mlops.config import load_pipeline; "
            f"p = load_pipeline(Path({str(config)!r}), overrides={{'train.lr': 0.5}}); "
            "assert p.params['train']['lr'] == 0.5; "
            "print(sorted(m for m in ('yaml', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_params_keep_the_file_order_whether_the_config_was_cached_or_not(
        workspace: Workspace) -> None:
    workspace.write("params.yaml", "zeta: 1\ntrain:\n  lr: 0.1\n  b: 2\n  a: 1\nprepare:\n"
                    "  scale: 1\n")
    fresh = load_pipeline(workspace.root / "mlops.yaml")
    (workspace.root / STATE_DIR).mkdir()
    load_pipeline(workspace.root / "mlops.yaml")  # writes the cache
    cached = load_pipeline(workspace.root / "mlops.yaml")
    assert list(cached.params) == list(fresh.params) == ["zeta", "train", "prepare"]
    assert list(cached.params["train"]) == ["lr", "b", "a"]


# ---------------------------------------------------------------------------- signatures

def test_an_override_reruns_exactly_what_the_same_edit_would(workspace: Workspace) -> None:
    workspace.run()
    result = _run(workspace, "train.lr=0.2")
    # report depends on the model, whose bytes did not change: it stays cached.
    assert workspace.statuses(result) == {"prepare": "cached", "train": "ran",
                                          "report": "cached"}
    assert workspace.count("train") == 2
    # The same override again: all cached.
    assert set(workspace.statuses(_run(workspace, "train.lr=0.2")).values()) == {"cached"}
    # Editing the file to the same value is the same signature: nothing runs.
    workspace.write("params.yaml", "prepare:\n  scale: 1\ntrain:\n  lr: 0.2\n  epochs: 3\n")
    assert set(workspace.statuses(workspace.run()).values()) == {"cached"}
    assert workspace.count("train") == 2
    # And overriding back to the old value restores the first run's outputs.
    back = _run(workspace, "train.lr=0.1")
    assert workspace.statuses(back)["train"] in ("cached", "restored")
    assert workspace.count("train") == 2


def test_an_override_equal_to_the_file_changes_nothing(workspace: Workspace) -> None:
    workspace.run()
    result = _run(workspace, "train.lr=0.1", "prepare.scale=1")
    assert set(workspace.statuses(result).values()) == {"cached"}


def test_an_override_of_a_key_no_stage_reads_reruns_nothing(workspace: Workspace) -> None:
    workspace.run()
    result = _run(workspace, "train.epochs=99")
    assert set(workspace.statuses(result).values()) == {"cached"}
    assert result.record["params"]["overrides"] == {"train.epochs": 99}


def test_a_section_read_as_a_whole_sees_an_override_inside_it(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", """\
        stages:
          s:
            cmd: echo x >> .count-s && echo s > s.txt
            params: [train]
            outs: [s.txt]
        """)
    workspace.run()
    assert workspace.statuses(_run(workspace, "train.epochs=4")) == {"s": "ran"}
    assert workspace.count("s") == 2


def test_a_float_override_and_the_same_value_as_an_int_are_different_values(
        workspace: Workspace) -> None:
    workspace.run()
    assert workspace.statuses(_run(workspace, "prepare.scale=1.0"))["prepare"] == "ran"


# ---------------------------------------------------------------------------- the run record

def test_the_record_names_the_overrides_beside_the_values_used(workspace: Workspace) -> None:
    result = _run(workspace, "train.lr=0.05", "train.epochs=7")
    params = result.record["params"]
    assert params["overrides"] == {"train.lr": 0.05, "train.epochs": 7}
    assert params["values"] == {"prepare.scale": 1, "train.lr": 0.05}
    # The file itself is recorded as it is: its hash is what a reproduction checks.
    assert params["sha256"] == sha256_file(workspace.root / "params.yaml")
    stage = next(s for s in result.record["stages"] if s["name"] == "train")
    assert stage["params"] == {"train.lr": 0.05}
    on_disk = json.loads(result.record_path.read_text())
    assert on_disk["params"]["overrides"] == {"train.lr": 0.05, "train.epochs": 7}


def test_a_run_without_overrides_records_none(workspace: Workspace) -> None:
    assert workspace.run().record["params"]["overrides"] == {}


def test_a_failed_run_with_overrides_still_records_them(workspace: Workspace) -> None:
    from gha_mlops.errors import StageFailedError

    workspace.write("mlops.yaml", "stages:\n  bad:\n    cmd: exit 3\n    params: [train.lr]\n")
    with pytest.raises(StageFailedError) as info:
        _run(workspace, "train.lr=0.3")
    assert info.value.result.record["params"]["overrides"] == {"train.lr": 0.3}


# ---------------------------------------------------------------------------- what stages see

def test_stage_scripts_read_the_overridden_values(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", SEES_PARAMS)
    workspace.write("params.yaml", "train:\n  lr: 0.1\n  epochs: 3\nprepare:\n  scale: 1\n")
    result = _run(workspace, "train.lr=0.00001", "prepare.scale=[1, 2]")
    seen = json.loads(workspace.read("seen.json"))
    assert seen["lr"] == 1e-05 and isinstance(seen["lr"], float)
    assert seen["all"] == {"train": {"lr": 1e-05, "epochs": 3}, "prepare": {"scale": [1, 2]}}
    # A run-private file (order of the params file kept), removed when the run ends; the
    # params file itself is untouched.
    private = Path(workspace.read("params-path.txt").strip())
    assert private.is_relative_to(workspace.root / STATE_DIR / "tmp" / "runs" / result.run_id)
    assert private.name == "params.yaml"
    assert not private.exists()
    assert workspace.read("params-seen.yaml").splitlines()[:3] == [
        "train:", "  lr: 1.0e-05", "  epochs: 3"]
    assert workspace.read("params.yaml").startswith("train:\n  lr: 0.1\n")


def test_without_overrides_stages_read_the_params_file_itself(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", SEES_PARAMS)
    _run(workspace)
    assert workspace.read("params-path.txt").strip() == str(workspace.root / "params.yaml")
    assert json.loads(workspace.read("seen.json"))["lr"] == 0.1


def test_parallel_stages_share_one_private_params_file(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", """\
        stages:
          left:
            cmd: cp "$GHA_MLOPS_PARAMS" left.yaml && echo "$GHA_MLOPS_PARAMS" > left.txt
            params: [train.lr]
            outs: [left.yaml, left.txt]
          right:
            cmd: cp "$GHA_MLOPS_PARAMS" right.yaml && echo "$GHA_MLOPS_PARAMS" > right.txt
            params: [train.lr]
            outs: [right.yaml, right.txt]
        """)
    _run(workspace, "train.lr=0.4", jobs=2)
    assert workspace.read("left.txt") == workspace.read("right.txt")
    assert workspace.read("left.yaml") == workspace.read("right.yaml")
    assert "lr: 0.4" in workspace.read("left.yaml")


def test_the_lineage_file_holds_the_overridden_values(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", """\
        stages:
          s:
            cmd: cp "$GHA_MLOPS_LINEAGE" lineage.json
            params: [train.lr]
            outs: [lineage.json]
        """)
    _run(workspace, "train.lr=0.6")
    assert json.loads(workspace.read("lineage.json"))["params"] == {"train.lr": 0.6}


# ---------------------------------------------------------------------------- reproduction

SWEEP = """\
    seed: 5
    stages:
      train:
        cmd: >-
          mkdir -p models && python -c "from gha_mlops.train import params;
          print(params('train.lr'), params('train.epochs'))" > models/model.bin
        params: [train.lr]
        outs: [models/model.bin]
    model: models/model.bin
    """


def test_each_leg_of_a_sweep_reproduces_with_its_own_overrides(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", SWEEP)
    legs = [_run(workspace, f"train.lr={lr}") for lr in ("0.01", "0.1")]
    assert legs[0].record["model"]["sha256"] != legs[1].record["model"]["sha256"]
    environ = {"PATH": os.environ.get("PATH", "")}
    for leg in legs:
        rep = reproduce_run(leg.record, workspace.root, environ=environ)
        assert rep.identical, rep.differences
        assert rep.result is not None
        assert rep.result.record["params"]["overrides"] == leg.record["params"]["overrides"]
        assert rep.result.record["model"] == leg.record["model"]


def test_a_reproduction_that_dropped_the_overrides_would_differ(workspace: Workspace) -> None:
    # The control for the test above: without its overrides, a leg is another run.
    workspace.write("mlops.yaml", SWEEP)
    leg = _run(workspace, "train.lr=0.01")
    tampered = json.loads(json.dumps(leg.record))
    tampered["params"]["overrides"] = {}
    rep = reproduce_run(tampered, workspace.root, environ={"PATH": os.environ.get("PATH", "")})
    assert not rep.identical
    assert [d.name for d in rep.differences] == ["models/model.bin"]


def test_a_recorded_override_of_a_vanished_key_is_an_error(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", SWEEP)
    leg = _run(workspace, "train.epochs=9")
    tampered = json.loads(json.dumps(leg.record))
    tampered["params"]["overrides"] = {"train.gone": 1}
    with pytest.raises(ReproductionError, match=r"overrides of run .* train\.gone"):
        reproduce_run(tampered, workspace.root, environ={"PATH": os.environ.get("PATH", "")})
