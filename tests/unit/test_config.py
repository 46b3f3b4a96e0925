"""Loading mlops.yaml: a corpus of bad configurations, each with the error a user must see,
and the behaviour of valid ones (defaults, coercions, params, the validated-config cache)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from gha_mlops.config import STATE_DIR, Output, Pipeline, load_pipeline, param_value
from gha_mlops.errors import ConfigError

BAD_CONFIGS = Path(__file__).resolve().parent.parent / "data" / "bad_configs"
CASES = sorted(p.name for p in BAD_CONFIGS.iterdir() if p.is_dir())


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "mlops.yaml"


def _expected(case: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((BAD_CONFIGS / case / "expected.yaml").read_text())
    return data


@pytest.fixture
def case_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A copy of one corpus case, so nothing a load writes lands in the repository."""
    target = tmp_path / str(request.param)
    shutil.copytree(BAD_CONFIGS / str(request.param), target)
    (target / "expected.yaml").unlink()
    return target


# --------------------------------------------------------------------------- the corpus


def test_the_corpus_is_well_formed() -> None:
    assert len(CASES) >= 20
    for case in CASES:
        assert (BAD_CONFIGS / case / "mlops.yaml").is_file(), case
        expected = _expected(case)
        assert set(expected) <= {"line", "contains", "file"}, case
        assert expected["line"] is None or isinstance(expected["line"], int), case
        assert expected["contains"] and all(isinstance(c, str) for c in expected["contains"])


@pytest.mark.parametrize("case_dir", CASES, indirect=True)
def test_bad_config_is_explained(case_dir: Path) -> None:
    expected = _expected(case_dir.name)
    with pytest.raises(ConfigError) as info:  # any other exception type fails the test
        load_pipeline(case_dir / "mlops.yaml")
    err = info.value
    text = "\n".join([err.message, err.hint or "", *err.notes])
    assert err.file is not None
    assert Path(err.file).name == expected.get("file", "mlops.yaml"), text
    assert err.line == expected["line"], f"line {err.line}, expected {expected['line']}:\n{text}"
    for fragment in expected["contains"]:
        assert fragment in text, f"{fragment!r} missing from:\n{text}"
    assert err.hint, f"no hint that says what to do:\n{text}"


CLI_CASES = ["yaml_unclosed_quote", "unknown_stage_key", "cycle_two_stages",
             "params_key_missing", "dep_missing"]


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("gha-mlops")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gha_mlops"]


@pytest.mark.parametrize("case_dir", CLI_CASES, indirect=True)
def test_cli_reports_a_bad_config_without_a_traceback(case_dir: Path) -> None:
    expected = _expected(case_dir.name)
    env = {k: v for k, v in os.environ.items()
           if k not in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT")}
    proc = subprocess.run(
        [*_cli(), "run", "--config", str(case_dir / "mlops.yaml")], cwd=case_dir.parent,
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    first = proc.stderr.splitlines()[0]
    assert f"{case_dir.name}/mlops.yaml:{expected['line']}:" in first, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "hint: " in proc.stderr


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline(tmp_path / "mlops.yaml")
    assert "no pipeline file" in info.value.message
    assert info.value.hint and "--config" in info.value.hint


def test_every_problem_in_a_file_is_reported_first_one_first(tmp_path: Path) -> None:
    config = _write(tmp_path, {"mlops.yaml": """\
        stages:
          train:
            cmd: python train.py
            outs: [/abs]
          bad name:
            cmd: python evaluate.py
            deps: ../up
        """})
    with pytest.raises(ConfigError) as info:
        load_pipeline(config)
    err = info.value
    assert (err.line, err.column) == (4, 12)
    assert err.message == "stages.train.outs[0]: '/abs' is an absolute path"
    where = [note.split(": ")[:2] for note in err.notes]  # "FILE:LINE: KEY: message"
    assert [(w.rsplit(":", 1)[1], key) for w, key in where] == [
        ("5", "stages.bad name"), ("7", "stages.bad name.deps[0]")]


# --------------------------------------------------------------------------- valid configs

VALID = {
    "mlops.yaml": """\
        seed: 42
        params: params.yaml
        env: {lock: requirements.lock}
        model: models/model.pt
        stages:
          prepare:
            desc: split the raw data
            cmd: python prepare.py
            deps: [data/raw.csv, prepare.py]
            params: [prepare]
            outs: [data/prepared]
          train:
            cmd:
              - python train.py
              - python export.py
            deps: [data/prepared, train.py]
            params: [train.lr, train.layers.1]
            outs: [models/model.pt]
            metrics: [metrics/train.json]
            plots: [plots/loss.png]
        """,
    "params.yaml": """\
        prepare:
          split: 0.2
        train:
          lr: 0.01
          layers: [64, 32]
          class_weights: {0: 1.0, 1: 2.5}
        """,
    "requirements.lock": "numpy==2.0.0\n",
    "data/raw.csv": "x,y\n",
    "prepare.py": "",
    "train.py": "",
}


def test_a_valid_config_loads_into_frozen_objects(tmp_path: Path) -> None:
    p = load_pipeline(_write(tmp_path, VALID))
    assert p.root == tmp_path and p.config_file == tmp_path / "mlops.yaml"
    assert (p.seed, p.params_file, p.env_lock, p.model) == (
        42, "params.yaml", "requirements.lock", "models/model.pt")
    assert list(p.stages) == ["prepare", "train"]
    prepare, train = p.stage("prepare"), p.stage("train")
    assert prepare.desc == "split the raw data"
    assert prepare.deps == ("data/raw.csv", "prepare.py")
    assert prepare.outs == (Output("data/prepared", "out"),)
    assert train.cmd == "python train.py && python export.py"
    assert train.outs == (Output("models/model.pt", "out"),
                          Output("metrics/train.json", "metric"),
                          Output("plots/loss.png", "plot"))
    assert train.upstream == ("prepare",)
    assert p.producer_of("models/model.pt") == "train"
    assert p.producer_of("data/prepared/train.csv") == "prepare"
    assert p.producer_of("data/raw.csv") is None
    with pytest.raises(AttributeError):
        train.cmd = "other"  # type: ignore[misc]


def test_defaults(tmp_path: Path) -> None:
    p = load_pipeline(_write(tmp_path, {"mlops.yaml": "stages:\n  a:\n    cmd: echo hi\n"}))
    assert (p.seed, p.params_file, p.env_lock, p.model, dict(p.params)) == (
        0, "params.yaml", None, None, {})
    a = p.stage("a")
    assert (a.deps, a.params, a.outs, a.upstream, a.desc) == ((), (), (), (), None)


def test_single_strings_are_coerced_to_lists(tmp_path: Path) -> None:
    p = load_pipeline(_write(tmp_path, {
        "mlops.yaml": """\
            stages:
              a:
                cmd: echo hi
                deps: in.txt
                params: train.lr
                outs: out
                metrics: m.json
                plots: p.png
            """,
        "params.yaml": "train: {lr: 0.1}\n",
        "in.txt": "",
    }))
    a = p.stage("a")
    assert a.deps == ("in.txt",)
    assert a.params == ("train.lr",)
    assert a.outs == (Output("out", "out"), Output("m.json", "metric"), Output("p.png", "plot"))


def test_paths_are_normalized(tmp_path: Path) -> None:
    p = load_pipeline(_write(tmp_path, {
        "mlops.yaml": """\
            model: ./models//model.pt
            stages:
              a:
                cmd: echo hi
                deps: [./data/../in.txt]
                outs: [models/, out/./x]
            """,
        "in.txt": "",
    }))
    assert p.stage("a").deps == ("in.txt",)
    assert p.stage("a").out_paths == ("models", "out/x")
    assert p.model == "models/model.pt"


def test_params_values(tmp_path: Path) -> None:
    p = load_pipeline(_write(tmp_path, VALID))
    assert param_value(p.params, "train.lr") == 0.01
    assert param_value(p.params, "train.layers.1") == 32
    assert param_value(p.params, "prepare") == {"split": 0.2}
    # Non-string keys read as JSON would write them, so a cached load sees the same keys.
    assert param_value(p.params, "train.class_weights.1") == 2.5
    for missing in ("train.momentum", "train.layers.2", "train.lr.x", "nope"):
        with pytest.raises(KeyError):
            param_value(p.params, missing)


def test_overrides_replace_params_without_changing_the_cache(tmp_path: Path) -> None:
    # More in test_overrides.py (unknown keys are errors, the cache is used, not poisoned).
    config = _write(tmp_path, VALID)
    (tmp_path / STATE_DIR).mkdir()
    p = load_pipeline(config, overrides={"train.lr": 0.5})
    assert param_value(p.params, "train.lr") == 0.5
    assert p.overrides == {"train.lr": 0.5}
    cached = json.loads((tmp_path / STATE_DIR / "tmp" / "config.json").read_text())
    assert cached["params"]["train"]["lr"] == 0.01
    assert param_value(load_pipeline(config).params, "train.lr") == 0.01


def test_a_missing_params_file_is_fine_when_no_stage_reads_params(tmp_path: Path) -> None:
    p = load_pipeline(_write(tmp_path, {"mlops.yaml": "stages:\n  a:\n    cmd: echo hi\n"}))
    assert dict(p.params) == {}


def test_a_dep_produced_by_a_stage_need_not_exist(tmp_path: Path) -> None:
    # `data` contains an output of `prepare`: it is produced, though data/ does not exist yet.
    p = load_pipeline(_write(tmp_path, {"mlops.yaml": """\
        stages:
          prepare:
            cmd: echo hi
            outs: [data/prepared.csv]
          train:
            cmd: echo hi
            deps: [data, data/prepared.csv]
        """}))
    assert p.stage("train").upstream == ("prepare",)


def test_duplicate_keys_in_params_file_are_rejected(tmp_path: Path) -> None:
    config = _write(tmp_path, {
        "mlops.yaml": "stages:\n  a:\n    cmd: echo\n    params: [train.lr]\n",
        "params.yaml": "train:\n  lr: 0.1\n  lr: 0.2\n",
    })
    with pytest.raises(ConfigError) as info:
        load_pipeline(config)
    assert Path(info.value.file or "").name == "params.yaml"
    assert info.value.line == 3
    assert "duplicate key 'lr'" in info.value.message


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    p = load_pipeline(_write(tmp_path, {
        "mlops.yaml": "stages:\n  a:\n    cmd: echo\n    params: [b.lr, b.epochs]\n",
        "params.yaml": "base: &base {lr: 0.1, epochs: 2}\nb:\n  <<: *base\n  lr: 0.3\n",
    }))
    assert param_value(p.params, "b.lr") == 0.3
    assert param_value(p.params, "b.epochs") == 2


# --------------------------------------------------------------------------- the cache


def _cache(root: Path) -> Path:
    return root / STATE_DIR / "tmp" / "config.json"


def test_no_cache_is_written_outside_a_workspace(tmp_path: Path) -> None:
    load_pipeline(_write(tmp_path, VALID))
    assert not (tmp_path / STATE_DIR).exists()


def test_the_cache_is_written_and_a_second_load_is_equal(tmp_path: Path) -> None:
    config = _write(tmp_path, VALID)
    (tmp_path / STATE_DIR).mkdir()
    first = load_pipeline(config)
    cache = _cache(tmp_path)
    assert cache.is_file()
    assert json.loads(cache.read_text())["params_file"] == "params.yaml"
    second = load_pipeline(config)
    assert second == first
    assert list(second.stages) == list(first.stages)


def test_the_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _write(tmp_path, VALID)
    (tmp_path / STATE_DIR).mkdir()
    first = load_pipeline(config)

    def no_validation(*args: object, **kwargs: object) -> dict[str, Any]:
        raise AssertionError("validated again although the cache is valid")

    monkeypatch.setattr("gha_mlops.config.loader._validate", no_validation)
    assert load_pipeline(config) == first


def test_editing_the_params_file_invalidates_the_cache(tmp_path: Path) -> None:
    config = _write(tmp_path, VALID)
    (tmp_path / STATE_DIR).mkdir()
    assert param_value(load_pipeline(config).params, "train.lr") == 0.01
    (tmp_path / "params.yaml").write_text("prepare: {split: 0.2}\n"
                                          "train: {lr: 0.02, layers: [64, 32]}\n")
    assert param_value(load_pipeline(config).params, "train.lr") == 0.02
    (tmp_path / "params.yaml").write_text("prepare: {split: 0.2}\ntrain: {layers: [1, 2]}\n")
    with pytest.raises(ConfigError, match=re.escape("'train.lr' does not exist")):
        load_pipeline(config)


@pytest.mark.parametrize("params_line", [
    "params: conf/p.yaml",
    "params:\n  conf/p.yaml",
    "{params: conf/p.yaml,\n stages: {a: {cmd: echo, params: [t.lr]}}}",
], ids=["plain", "next-line", "flow"])
def test_editing_a_custom_params_file_invalidates_the_cache(tmp_path: Path,
                                                             params_line: str) -> None:
    # However the params file is named, the cache follows the file the config names.
    stages = "" if params_line.startswith("{") else "\nstages: {a: {cmd: echo, params: [t.lr]}}"
    config = _write(tmp_path, {"mlops.yaml": params_line + stages + "\n",
                               "conf/p.yaml": "t: {lr: 1}\n", "params.yaml": "t: {lr: 9}\n"})
    (tmp_path / STATE_DIR).mkdir()
    assert param_value(load_pipeline(config).params, "t.lr") == 1
    (tmp_path / "conf" / "p.yaml").write_text("t: {lr: 2}\n")
    assert param_value(load_pipeline(config).params, "t.lr") == 2
    (tmp_path / "conf" / "p.yaml").unlink()
    with pytest.raises(ConfigError, match=re.escape("conf/p.yaml does not exist")):
        load_pipeline(config)


def test_editing_the_config_invalidates_the_cache(tmp_path: Path) -> None:
    config = _write(tmp_path, VALID)
    (tmp_path / STATE_DIR).mkdir()
    load_pipeline(config)
    config.write_text(config.read_text().replace("seed: 42", "seed: 43"))
    assert load_pipeline(config).seed == 43


def test_file_system_checks_run_even_on_a_cache_hit(tmp_path: Path) -> None:
    config = _write(tmp_path, VALID)
    (tmp_path / STATE_DIR).mkdir()
    load_pipeline(config)
    (tmp_path / "requirements.lock").unlink()
    with pytest.raises(ConfigError, match=re.escape("'requirements.lock' does not exist")):
        load_pipeline(config)
    (tmp_path / "requirements.lock").write_text("")
    (tmp_path / "prepare.py").unlink()
    with pytest.raises(ConfigError, match=re.escape("'prepare.py' does not exist")) as info:
        load_pipeline(config)
    assert info.value.line == 9


@pytest.mark.parametrize("content", ["not json", "[]", '{"key": 1}'])
def test_a_damaged_cache_is_ignored(tmp_path: Path, content: str) -> None:
    config = _write(tmp_path, VALID)
    (tmp_path / STATE_DIR).mkdir()
    expected = load_pipeline(config)
    _cache(tmp_path).write_text(content)
    assert load_pipeline(config) == expected


def test_a_cache_of_the_wrong_shape_is_ignored(tmp_path: Path) -> None:
    config = _write(tmp_path, VALID)
    (tmp_path / STATE_DIR).mkdir()
    expected = load_pipeline(config)
    data = json.loads(_cache(tmp_path).read_text())
    del data["stages"]
    _cache(tmp_path).write_text(json.dumps(data))
    assert load_pipeline(config) == expected


def test_a_cache_that_cannot_be_written_does_not_fail_the_load(tmp_path: Path) -> None:
    config = _write(tmp_path, VALID)
    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / STATE_DIR / "tmp").write_text("a file where the directory should be")
    assert isinstance(load_pipeline(config), Pipeline)


def test_a_cache_hit_neither_parses_yaml_nor_imports_pydantic(tmp_path: Path) -> None:
    config = _write(tmp_path, VALID)
    (tmp_path / STATE_DIR).mkdir()
    load_pipeline(config)
    code = ("import sys; from pathlib import Path; from gha_mlops.config import load_pipeline; "
            f"load_pipeline(Path({str(config)!r})); "
            "print(sorted(m for m in ('yaml', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"
