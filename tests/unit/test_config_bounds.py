"""Bounded work from small input in configuration loading: YAML alias bombs, nesting that
would overflow every walker, and pipelines large enough to expose quadratic graph checks.

One test per class of attack; each asserts the error a user sees (file, line, limit), not
a timing. The timeout markers only turn a regression (a hang) into a failure.
"""

from __future__ import annotations

import itertools
import random
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gha_mlops.config import Output, Pipeline, Stage, load_pipeline, parse_overrides
from gha_mlops.config._graph import OutputIndex, overlaps
from gha_mlops.config._yaml import MAX_ALIAS_NODES, MAX_DEPTH
from gha_mlops.errors import ConfigError, GhaMlopsError, UsageError
from gha_mlops.train import params as train_params

# Ten aliases of ten aliases, nine times over: 10**9 values from ten lines of YAML.
BOMB_LINES = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]'] + [
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).write_text(textwrap.dedent(text))
    return root / "mlops.yaml"


STAGE = "stages:\n  train: {cmd: python train.py, params: [train]}\n"


def _bomb_in_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, {"mlops.yaml": STAGE,
                      "params.yaml": "\n".join(BOMB_LINES) + "\ntrain: *a9\n"})
    load_pipeline(tmp_path / "mlops.yaml")


def _long_string_in_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One 100 kB string aliased 10,000 times: 1 GB in the JSON of the params (the cache,
    # the signature of every stage that reads them) from a 150 kB file.
    _write(tmp_path, {"mlops.yaml": STAGE, "params.yaml": "a: &a " + "x" * 100_000 + "\n"
                      + "train:\n" + "".join(f"  k{k}: *a\n" for k in range(10_000))})
    load_pipeline(tmp_path / "mlops.yaml")


def _fan_out_in_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The strict schema refuses lists of lists, but one flat list aliased by every stage
    # passes it: 2,000 paths times 2,000 stages are four million deps from a 60 kB file.
    paths = ", ".join(f"d/{k}.csv" for k in range(2000))
    lines = ["stages:", f"  s0: {{cmd: 'true', deps: &all [{paths}]}}"]
    lines += [f"  s{k}: {{cmd: 'true', deps: *all}}" for k in range(1, 2000)]
    _write(tmp_path, {"mlops.yaml": "\n".join(lines) + "\n"})
    load_pipeline(tmp_path / "mlops.yaml")


def _bomb_via_train_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, {"params.yaml": "\n".join(BOMB_LINES) + "\ntrain: *a9\n"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GHA_MLOPS_PARAMS", raising=False)
    train_params("train")


def _bomb_in_data_pointer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A `.lock.yaml` comes with a pull request like mlops.yaml does.
    from gha_mlops.data.pointer import read_pointer

    _write(tmp_path, {"images.lock.yaml": "\n".join(BOMB_LINES) + "\nname: *a9\n"})
    read_pointer(tmp_path, "images.lock.yaml")


def _bomb_in_set_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = ["&a0 [" + ", ".join(["x"] * 10) + "]"] + [
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    parse_overrides(["train.lr=[" + ", ".join(items) + "]"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("entry", "file", "alias_line", "error"), [
    (_bomb_in_params, "params.yaml", 5, ConfigError),
    (_long_string_in_params, "params.yaml", 112, ConfigError),
    (_fan_out_in_config, "mlops.yaml", 62, ConfigError),
    (_bomb_via_train_helper, "params.yaml", 5, ConfigError),
    (_bomb_in_data_pointer, "images.lock.yaml", 5, ConfigError),
    (_bomb_in_set_value, None, None, UsageError),
], ids=["params.yaml", "params.yaml-long-string", "mlops.yaml", "train.params",
         "data-pointer", "--set"])
def test_alias_expansion_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    entry: Callable[[Path, pytest.MonkeyPatch], None], file: str | None,
    alias_line: int | None, error: type[GhaMlopsError],
) -> None:
    """A file of a few lines whose aliases expand to billions of values is refused before
    anything walks them, at the alias that crosses the limit, for every way YAML gets in."""
    with pytest.raises(error) as info:
        entry(tmp_path, monkeypatch)
    err = info.value
    limit = re.search(r"aliases expand to more than ([\d,]+) nodes \(the limit", err.message)
    assert limit is not None, err.message
    assert int(limit[1].replace(",", "")) >= MAX_ALIAS_NODES
    assert "the alias *a" in err.message
    assert err.hint is not None and "alias" in err.hint
    if file is not None:
        assert err.file is not None and Path(err.file).name == file
        assert err.line is not None and err.column is not None
    if alias_line is not None:
        # params: a5's tenth alias of a4 (11,111 values each) crosses 100,000;
        # long string: the 110th alias (1,001 nodes each) crosses ten times the 11,005 written;
        # mlops.yaml: the alias in s60 crosses ten times the 12,004 nodes written.
        assert err.line == alias_line


def test_ordinary_anchors_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    config = _write(tmp_path, {
        "mlops.yaml": """\
            stages:
              prepare:
                cmd: python prep.py
                deps: &inputs [data.csv, prep.py]
                params: &reads [prep]
                outs: [clean.csv]
              check: &check
                cmd: python check.py
                deps: *inputs
                params: *reads
              check-again:
                <<: *check
                cmd: python check.py --again
            """,
        "params.yaml": """\
            defaults: &defaults {lr: 0.1, epochs: 3, layers: &layers [64, 32]}
            prep: {<<: *defaults, lr: 0.2}
            train: {<<: *defaults, shape: *layers}
            """,
        "data.csv": "x\n", "prep.py": "", "check.py": "",
    })
    pipeline = load_pipeline(config)
    assert pipeline.stage("check").deps == ("data.csv", "prep.py")
    assert pipeline.stage("check-again").deps == ("data.csv", "prep.py")
    assert pipeline.stage("check-again").params == ("prep",)
    assert pipeline.stage("check-again").cmd == "python check.py --again"
    assert pipeline.params["prep"] == {"lr": 0.2, "epochs": 3, "layers": [64, 32]}
    assert pipeline.params["train"]["shape"] == [64, 32]
    assert parse_overrides(["train.shape=[&w 8, *w]"]) == {"train.shape": [8, 8]}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("params_yaml", "line", "message"), [
    ("deep: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n", 1,
     f"nested more than {MAX_DEPTH} levels deep"),
    ("deep: " + "[" * 5000 + "]" * 5000 + "\n", 1, f"nested more than {MAX_DEPTH} levels deep"),
    ("a: &a " + "[" * 60 + "]" * 60 + "\nb:\n  c: " + "[" * 45 + "*a" + "]" * 45 + "\n", 3,
     f"nested more than {MAX_DEPTH} levels deep"),
    ("m: {<<: {a: " + "[" * 120 + "]" * 120 + "}}\n", 1,
     f"nested more than {MAX_DEPTH} levels deep"),
    ("train: {lr: 0.1}\nloop: &loop [1, *loop]\n", 2, "refers to a collection that contains it"),
], ids=["written", "past-libyaml-limit", "through-an-alias", "under-a-merge-key",
        "recursive-alias"])
def test_structures_too_deep_to_walk_are_refused(
    tmp_path: Path, params_yaml: str, line: int, message: str,
) -> None:
    """Nesting that would overflow the recursion of every later walker (params hashing, the
    cache, pydantic), however it is built, is a ConfigError at the line, not a traceback."""
    _write(tmp_path, {"mlops.yaml": "stages:\n  train: {cmd: python train.py}\n",
                      "params.yaml": params_yaml})
    with pytest.raises(ConfigError) as info:
        load_pipeline(tmp_path / "mlops.yaml")
    err = info.value
    assert message in err.message
    assert err.file is not None and Path(err.file).name == "params.yaml"
    assert err.line == line
    assert err.hint


def _large_pipeline(n: int, *, clash: tuple[int, int] | None = None) -> str:
    """``n`` stages in chains of ten with a fan-in stage per chain; with ``clash=(i, j)`` the
    stage at position ``j`` also writes inside stage ``i``'s output directory."""
    lines = ["stages:"]
    for s in range(n):
        chain, step = divmod(s, 10)
        dep = f"raw/c{chain}.csv" if step == 0 else f"work/c{chain}/s{step - 1}/part.bin"
        outs = [f"work/c{chain}/s{step}"]
        if clash is not None and s == clash[1]:
            outs.append(f"work/c{clash[0] // 10}/s{clash[0] % 10}/stolen.bin")
        if step == 9:
            dep = ", ".join(f"work/c{chain}/s{k}/part.bin" for k in range(9))
        lines += [f"  s{s}:", f"    cmd: python step.py {s}", f"    deps: [{dep}]",
                  "    params: [train.lr]", f"    outs: [{', '.join(outs)}]",
                  f"    metrics: [metrics/s{s}.json]"]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(120)
def test_a_large_pipeline_is_checked_whole(tmp_path: Path) -> None:
    """20,000 stages load, in order and linked; one overlap among them is found at the right
    pair of stages (the figures for speed come from benchmarks/bench_large_pipeline.py)."""
    n = 20_000
    (tmp_path / "raw").mkdir()
    for chain in range(n // 10):
        (tmp_path / "raw" / f"c{chain}.csv").write_text("")
    _write(tmp_path, {"mlops.yaml": _large_pipeline(n), "params.yaml": "train: {lr: 0.1}\n"})
    pipeline = load_pipeline(tmp_path / "mlops.yaml")
    assert len(pipeline.stages) == n
    assert pipeline.stage("s12345").upstream == ("s12344",)
    assert pipeline.stage("s19999").upstream == tuple(sorted(f"s{k}" for k in range(19990,
                                                                                     19999)))
    assert pipeline.producer_of("work/c1999/s3/part.bin") == "s19993"
    order = list(pipeline.stages)
    assert order.index("s77") < order.index("s78")

    _write(tmp_path, {"mlops.yaml": _large_pipeline(n, clash=(123, 18_765))})
    with pytest.raises(ConfigError) as info:
        load_pipeline(tmp_path / "mlops.yaml")
    assert info.value.message == (
        "stages.s18765.outs[1]: 'work/c12/s3/stolen.bin' is inside 'work/c12/s3', an output "
        "of stage 's123' (stages.s123.outs[0])")
    assert info.value.line == 6 * 18_765 + 6


def test_output_index_finds_exactly_the_overlapping_outputs() -> None:
    """The trie behind the graph checks answers as the pairwise ``overlaps`` would, in the
    same order, duplicates and nested outputs included."""
    rng = random.Random(7)
    parts = ["a", "b", "ab", "a.b", "data:x"]
    paths = ["/".join(rng.choice(parts) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    index = OutputIndex()
    added: list[str] = []
    for path in paths:
        expect = [k for k, out in enumerate(added) if overlaps(path, out)]
        assert index.all(path) == expect
        assert index.first(path) == (expect[0] if expect else None)
        assert index.add(path) == len(added)
        added.append(path)
    for a, b in itertools.product(parts, repeat=2):
        probe = f"{a}/{b}"
        assert index.all(probe) == [k for k, out in enumerate(added) if overlaps(probe, out)]


def test_producer_of_answers_as_a_scan_of_the_stages_would() -> None:
    """``Pipeline.producer_of`` (asked for every dep of every stage by the engine) looks
    paths up by prefix; the answer is still the first stage in run order that writes the
    path or a directory containing it."""
    rng = random.Random(3)
    parts = ["a", "b", "", "c.d"]

    def path() -> str:
        return "/".join(rng.choice(parts) for _ in range(rng.randint(1, 4)))

    for _ in range(200):
        stages = {f"s{k}": Stage(name=f"s{k}", cmd="true", deps=(), params=(), upstream=(),
                                 outs=tuple(Output(path(), "out")
                                            for _ in range(rng.randint(0, 3))))
                  for k in range(rng.randint(1, 8))}
        pipeline = Pipeline(root=Path("."), config_file=Path("mlops.yaml"), config_sha256="",
                            seed=0, params_file="params.yaml", params={}, env_lock=None,
                            stages=stages)
        for _ in range(50):
            probe = path()
            scan = next((s.name for s in stages.values() for out in s.out_paths
                         if probe == out or probe.startswith(out + "/")), None)
            assert pipeline.producer_of(probe) == scan
