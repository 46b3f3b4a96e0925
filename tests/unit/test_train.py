"""gha_mlops.train: the helpers users' stage scripts import."""

from __future__ import annotations

import io
import json
import math
import os
import random
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from gha_mlops import train
from gha_mlops.errors import ConfigError, GhaMlopsError

SRC = Path(train.__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No engine variables from outside, and torch's global switches restored after."""
    for name in (
        "GHA_MLOPS_SEED",
        "GHA_MLOPS_PARAMS",
        "GHA_MLOPS_STAGE_REPORT",
        "GHA_MLOPS_LINEAGE",
    ):
        monkeypatch.delenv(name, raising=False)
    env = dict(os.environ)
    state = (
        torch.are_deterministic_algorithms_enabled(),
        torch.get_num_threads(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    os.environ.clear()
    os.environ.update(env)
    torch._C._set_deterministic_algorithms(state[0], warn_only=False)
    torch.set_num_threads(state[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = state[2:]


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


# --- seeding ---------------------------------------------------------------------------------


def test_seed_everything_makes_every_rng_repeat() -> None:
    assert train.seed_everything(7) == {"seed": 7, "seeded": ["random", "numpy", "torch"]}
    first = _draws()
    train.seed_everything(7)
    assert _draws() == first
    train.seed_everything(8)
    assert _draws() != first


def test_seed_comes_from_the_environment_then_defaults_to_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert train.seed_everything()["seed"] == 0
    monkeypatch.setenv("GHA_MLOPS_SEED", "42")
    assert train.seed_everything()["seed"] == 42
    assert train.seed_everything(3)["seed"] == 3  # an argument wins


def test_bad_seeds_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHA_MLOPS_SEED", "forty-two")
    with pytest.raises(ConfigError, match="GHA_MLOPS_SEED='forty-two' is not an integer"):
        train.seed_everything()
    with pytest.raises(ValueError, match="seed must be an integer"):
        train.seed_everything(-1)
    with pytest.raises(ValueError, match="seed must be an integer"):
        train.seed_everything(2**32)


def test_deterministic_switches_on_determinism_and_reports_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    report = train.deterministic(5, threads=1)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic is True
    assert torch.backends.cudnn.benchmark is False
    assert torch.get_num_threads() == 1
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert report["seed"] == 5
    assert report["num_threads"] == 1
    assert report["torch"] == torch.__version__
    assert report["cuda"] == torch.version.cuda
    assert report["cublas_workspace_config"] == ":4096:8"
    assert report["determinism"] == {
        "use_deterministic_algorithms": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
    }
    assert isinstance(report["gpus"], list)
    json.dumps(report)  # the engine stores it as JSON


def test_deterministic_keeps_a_cublas_setting_made_by_the_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert train.deterministic(0)["cublas_workspace_config"] == ":16:8"


def test_deterministic_rejects_a_bad_thread_count() -> None:
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        train.deterministic(0, threads=0)


def test_same_seed_same_training_step() -> None:
    def one_step() -> list[float]:
        train.deterministic(11, threads=1)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
        model = torch.nn.Sequential(model, torch.nn.Linear(4 * 6 * 6, 3))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()

    assert one_step() == one_step()


def test_the_report_is_written_and_merged_when_the_engine_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "stage" / "report.json"
    monkeypatch.setenv("GHA_MLOPS_STAGE_REPORT", str(path))
    path.parent.mkdir()
    path.write_text('{"written_before": 1, "seed": 99}\n')
    report = train.deterministic(4, threads=1)
    on_disk = json.loads(path.read_text())
    assert on_disk == {"written_before": 1, **report}
    assert on_disk["seed"] == 4
    assert path.read_text().endswith("}\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]  # no temp files


def test_without_the_engine_no_report_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert train.write_stage_report({"a": 1}) is None
    assert list(tmp_path.iterdir()) == []


def test_dataloader_kwargs_fix_the_shuffle_order() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(50))

    def order(seed: int) -> list[int]:
        loader = torch.utils.data.DataLoader(
            data, batch_size=10, shuffle=True, **train.dataloader_kwargs(seed)
        )
        return [int(x) for (batch,) in loader for x in batch]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == list(range(50))


def test_worker_init_fn_seeds_numpy_and_random_from_torch() -> None:
    kwargs = train.dataloader_kwargs(0)
    assert isinstance(kwargs["generator"], torch.Generator)
    torch.manual_seed(1234)
    kwargs["worker_init_fn"](0)
    drawn = (random.random(), float(np.random.rand()))
    torch.manual_seed(1234)
    train.seed_worker(3)
    assert (random.random(), float(np.random.rand())) == drawn


# --- params and lineage ----------------------------------------------------------------------

PARAMS = """
train:
  lr: 0.01
  layers: [8, 16]
  schedule:
    warmup: 2
seed_note: top-level scalar
"""


@pytest.fixture
def params_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    monkeypatch.setenv("GHA_MLOPS_PARAMS", str(path))
    return path


@pytest.mark.usefixtures("params_file")
def test_params_reads_sections_and_dotted_keys() -> None:
    assert train.params()["seed_note"] == "top-level scalar"
    assert train.params("train")["layers"] == [8, 16]
    assert train.params("train.lr") == 0.01
    assert train.params("train.schedule.warmup") == 2


def test_params_defaults_to_params_yaml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "params.yaml").write_text("a: {b: 3}\n")
    monkeypatch.chdir(tmp_path)
    assert train.params("a.b") == 3


def test_a_missing_key_names_the_file_and_the_key(params_file: Path) -> None:
    with pytest.raises(train.ParamsKeyError) as info:
        train.params("train.momentum")
    err = info.value
    assert isinstance(err, KeyError)
    assert isinstance(err, ConfigError)
    assert str(params_file) in str(err)
    assert "'train.momentum'" in str(err)
    assert "lr" in str(err)  # what is there instead
    assert err.file == str(params_file)
    with pytest.raises(KeyError, match="'nope'"):
        train.params("nope")
    with pytest.raises(KeyError, match=r"train\.lr is a float, not a mapping"):
        train.params("train.lr.x")


@pytest.mark.usefixtures("params_file")
def test_a_malformed_key_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a dotted key"):
        train.params("train..lr")


def test_a_missing_or_malformed_params_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.yaml"
    monkeypatch.setenv("GHA_MLOPS_PARAMS", str(path))
    with pytest.raises(ConfigError, match="does not exist") as info:
        train.params()
    assert info.value.hint
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        train.params()
    path.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        train.params()


def test_lineage_is_empty_outside_the_engine() -> None:
    assert train.lineage() == {}


def test_lineage_reads_what_the_engine_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = {"stage": "train", "seed": 42, "deps": {"data/x.csv": "ab" * 32}}
    path = tmp_path / "lineage.json"
    path.write_text(json.dumps(record))
    monkeypatch.setenv("GHA_MLOPS_LINEAGE", str(path))
    assert train.lineage() == record
    path.write_text("[1]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        train.lineage()
    path.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        train.lineage()


# --- outputs ---------------------------------------------------------------------------------


def test_write_metrics_is_canonical_json(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "deep" / "m.json"
    train.write_metrics(
        path, {"b": 1, "a": {"z": np.float32(0.5), "y": [1, 2]}, "c": torch.tensor(3)}
    )
    assert path.read_text() == (
        '{\n  "a": {\n    "y": [\n      1,\n      2\n    ],\n    "z": 0.5\n  },\n'
        '  "b": 1,\n  "c": 3\n}\n'
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_write_metrics_rejects_non_finite_values_and_keeps_the_old_file(
    tmp_path: Path, bad: Any
) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"old": 1}\n')
    with pytest.raises(ValueError, match=r"metrics\['val'\]\['loss'\] is (nan|inf|-inf)"):
        train.write_metrics(path, {"val": {"loss": bad}})
    assert path.read_text() == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_write_metrics_rejects_what_has_no_json_form(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"metrics\['when'\] is a object"):
        train.write_metrics(tmp_path / "m.json", {"when": object()})
    with pytest.raises(TypeError, match="must be a mapping"):
        train.write_metrics(tmp_path / "m.json", [1, 2])  # type: ignore[arg-type]
    assert not (tmp_path / "m.json").exists()


def _figure() -> Figure:
    fig = Figure(figsize=(3, 2), dpi=80)
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [2, 0, 1], label="loss")
    ax.set_title("same every time")
    ax.legend()
    return fig


def test_save_figure_gives_the_same_bytes_for_the_same_figure(tmp_path: Path) -> None:
    fig = _figure()
    train.save_figure(fig, tmp_path / "a.png")
    train.save_figure(fig, tmp_path / "b.png")
    train.save_figure(_figure(), tmp_path / "plots" / "c.png")
    a = (tmp_path / "a.png").read_bytes()
    assert a.startswith(b"\x89PNG\r\n\x1a\n")
    assert a == (tmp_path / "b.png").read_bytes() == (tmp_path / "plots" / "c.png").read_bytes()
    assert b"matplotlib" not in a.lower()  # no "Software: matplotlib version ..." text chunk


def test_save_figure_honours_dpi(tmp_path: Path) -> None:
    train.save_figure(_figure(), tmp_path / "small.png")
    train.save_figure(_figure(), tmp_path / "big.png", dpi=160)
    assert (tmp_path / "big.png").stat().st_size > (tmp_path / "small.png").stat().st_size


def test_save_torch_bytes_do_not_depend_on_the_file_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = torch.nn.Linear(4, 2).state_dict()
    train.save_torch(state, tmp_path / "one.pt")
    train.save_torch(state, tmp_path / "models" / "two.pt")
    data = (tmp_path / "one.pt").read_bytes()
    assert data == (tmp_path / "models" / "two.pt").read_bytes()
    loaded = torch.load(tmp_path / "one.pt", weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


# torch 2.13 deprecates TorchScript in favour of torch.export; the demo still ships it.
@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
def test_save_torchscript_leaves_out_paths_and_still_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()).eval()
    traced = torch.jit.trace(model, torch.zeros(1, 1, 5, 5), check_trace=False)
    train.save_torchscript(traced, tmp_path / "a.ts")
    train.save_torchscript(traced, tmp_path / "pkg" / "b.ts")
    data = (tmp_path / "a.ts").read_bytes()
    assert data == (tmp_path / "pkg" / "b.ts").read_bytes()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert not [n for n in names if n.endswith(".debug_pkl")]
    assert __file__.encode() not in data
    assert str(SRC).encode() not in data
    reloaded = torch.jit.load(io.BytesIO(data))
    x = torch.rand(2, 1, 5, 5)
    assert torch.equal(reloaded(x), model(x))


def test_atomic_write_creates_parents_and_leaves_no_temp_files(tmp_path: Path) -> None:
    train.atomic_write_bytes(tmp_path / "a" / "b" / "f.bin", b"\x00\x01")
    train.atomic_write_text(tmp_path / "a" / "b" / "f.bin", "text")
    assert (tmp_path / "a" / "b" / "f.bin").read_text() == "text"
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["f.bin"]


# --- progress --------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_prints_a_line_per_tenth() -> None:
    out = io.StringIO()
    assert list(train.progress(range(25), desc="epochs", file=out)) == list(range(25))
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("epochs: 12% (3/25)")
    assert lines[-1].startswith("epochs: 100% (25/25)")


def test_progress_without_a_total_counts_in_powers_of_ten() -> None:
    out = io.StringIO()
    assert sum(train.progress((i for i in range(25)), file=out)) == sum(range(25))
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["1", "10", "25"]


def test_progress_on_a_terminal_redraws_one_bar() -> None:
    out = _Terminal()
    for _ in train.progress([1, 2, 3], desc="x", file=out):
        pass
    text = out.getvalue()
    assert text.startswith("\rx: |")
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "3/3 100%" in text


def test_progress_closes_its_line_when_the_loop_breaks() -> None:
    out = _Terminal()
    for i in train.progress(range(100), file=out):
        if i == 4:
            break
    assert out.getvalue().endswith("\n")
    assert "4/100" in out.getvalue()  # counted when the loop body finishes, as tqdm does


# --- packaging -------------------------------------------------------------------------------


def test_importing_the_helpers_does_not_import_torch() -> None:
    code = (
        "import sys, gha_mlops.train\n"
        "heavy = {'torch', 'numpy', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_errors_share_the_project_root() -> None:
    assert issubclass(train.ParamsKeyError, GhaMlopsError)
