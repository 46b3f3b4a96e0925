"""gha_mlops.train.export_onnx: a pipeline stage's model as ONNX, checked, atomic, with the
same bytes whichever directory the model's code lives in."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from gha_mlops.errors import GhaMlopsError  # noqa: E402
from gha_mlops.train import ExportMismatchError, export_onnx  # noqa: E402

MODEL_SOURCE = '''
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(64, 3)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.conv(x)).flatten(1)))
'''


def _net_from(folder: Path) -> Any:
    """The same model class, defined in a file in ``folder`` (as a stage's src/model.py)."""
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(MODEL_SOURCE)
    name = f"model_{abs(hash(folder))}"
    spec = importlib.util.spec_from_file_location(name, folder / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return module.Net().eval()


def test_the_bytes_do_not_depend_on_where_the_code_lives(tmp_path: Path) -> None:
    # torch's exporter records the Python stack of every node (absolute paths); two checkouts
    # of the same project must still produce the same model file.
    for name in ("one", "two"):
        export_onnx(_net_from(tmp_path / name / "src"), torch.zeros(1, 1, 8, 8),
                    tmp_path / name / "model.onnx")
    first = (tmp_path / "one" / "model.onnx").read_bytes()
    assert first == (tmp_path / "two" / "model.onnx").read_bytes()
    assert str(tmp_path).encode() not in first


def test_an_example_of_one_gives_a_dynamic_batch_named_batch(tmp_path: Path) -> None:
    net = _net_from(tmp_path / "src")
    x = np.random.default_rng(0).random((7, 1, 8, 8), dtype=np.float32)
    export_onnx(net, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx", check_inputs=x,
                output_names=("logits",))
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [i.name for i in graph.input] == ["input"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": x})
    np.testing.assert_allclose(logits, net(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_the_export_runs_in_eval_mode_and_restores_the_mode(tmp_path: Path) -> None:
    net = _net_from(tmp_path / "src").train()
    x = torch.rand(5, 1, 8, 8)
    # In training mode dropout would make the outputs differ: the check passes in eval.
    export_onnx(net, x[:2], tmp_path / "m.onnx", check_inputs=x)
    assert net.training


def test_a_difference_beyond_the_tolerance_writes_nothing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Tanh(),
                                torch.nn.Linear(256, 8))
    x = torch.randn(64, 256)
    with pytest.raises(ExportMismatchError, match="max abs difference") as info:
        export_onnx(model, x[:2], tmp_path / "m.onnx", check_inputs=x, atol=0.0, rtol=0.0)
    assert isinstance(info.value, GhaMlopsError)
    assert "atol 0 + rtol 0" in info.value.message
    assert not (tmp_path / "m.onnx").exists() and list(tmp_path.iterdir()) == []


def test_a_model_that_fixes_its_batch_size_is_a_clear_error(tmp_path: Path) -> None:
    class Fixed(torch.nn.Module):  # type: ignore[misc]
        def forward(self, x: Any) -> Any:
            return x.reshape(2, -1)

    with pytest.raises(GhaMlopsError, match="dynamic batch size") as info:
        export_onnx(Fixed(), torch.zeros(2, 3), tmp_path / "m.onnx")
    assert "dynamic_batch=False" in (info.value.hint or "")
    export_onnx(Fixed(), torch.zeros(2, 3), tmp_path / "m.onnx", dynamic_batch=False)
    assert (tmp_path / "m.onnx").exists()
