"""export_to_onnx: every source format to a checked ONNX file, hostile files refused before
anything in them runs, and a failed check writes nothing."""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from gha_mlops.packaging.export import (  # noqa: E402
    ExportError,
    ExportMismatchError,
    check_onnx,
    export_to_onnx,
)


class Net(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: Any) -> Any:
        return self.head(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def net() -> Any:
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture
def images() -> Any:
    return np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)


def _run(path: Path, x: Any) -> Any:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _save_pt2(model: Any, path: Path, example: Any) -> None:
    program = torch.export.export(model, (torch.as_tensor(example),),
                                  dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, str(path))


def test_an_onnx_file_is_validated_and_copied_byte_for_byte(tmp_path: Path, net: Any,
                                                           images: Any) -> None:
    _save_pt2(net, tmp_path / "m.pt2", images[:2])
    export_to_onnx(tmp_path / "m.pt2", tmp_path / "a.onnx", check_inputs=None)
    sig = export_to_onnx(tmp_path / "a.onnx", tmp_path / "out" / "b.onnx", check_inputs=images)
    assert (tmp_path / "out" / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    assert sig.to_json()["inputs"] == [{"name": "input", "datatype": "FP32",
                                        "shape": [-1, 1, 8, 8]}]


def test_not_a_model_is_a_clear_error(tmp_path: Path) -> None:
    for name in ("m.onnx", "m.pt2", "m.ts", "m.pkl"):
        (tmp_path / name).write_bytes(b"\x00\x01 not a model \xff")
        with pytest.raises(ExportError, match="m\\.") as info:
            export_to_onnx(tmp_path / name, tmp_path / "out.onnx", check_inputs=np.zeros((2, 4)))
        assert str(tmp_path / name) in info.value.message
    (tmp_path / "m.h5").write_bytes(b"x")
    with pytest.raises(ExportError, match=r"cannot export a \.h5 file") as info:
        export_to_onnx(tmp_path / "m.h5", tmp_path / "out.onnx", check_inputs=None)
    assert ".pt2" in (info.value.hint or "")
    assert not (tmp_path / "out.onnx").exists()


def test_an_onnx_file_with_external_weights_is_refused(tmp_path: Path, net: Any,
                                                       images: Any) -> None:
    _save_pt2(net, tmp_path / "m.pt2", images[:2])
    export_to_onnx(tmp_path / "m.pt2", tmp_path / "a.onnx", check_inputs=None)
    model = onnx.load(str(tmp_path / "a.onnx"))
    # External data names a file relative to the model: a path a hostile model chooses.
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    with pytest.raises(ExportError, match="external file"):
        export_to_onnx(tmp_path / "ext.onnx", tmp_path / "out.onnx", check_inputs=None)


def test_a_torch_export_program_keeps_its_dynamic_batch(tmp_path: Path, net: Any,
                                                        images: Any) -> None:
    _save_pt2(net, tmp_path / "m.pt2", images[:2])
    sig = export_to_onnx(tmp_path / "m.pt2", tmp_path / "m.onnx", check_inputs=images)
    assert sig.to_json() == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]}
    (out,) = _run(tmp_path / "m.onnx", images)
    np.testing.assert_allclose(out, net(torch.from_numpy(images)).detach().numpy(), atol=1e-5)
    data = (tmp_path / "m.onnx").read_bytes()
    assert str(Path(__file__).parent).encode() not in data  # no debug stacks with our paths


class Payload:
    """Pickles to a call of os.system: what a hostile model file carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def test_a_program_with_pickled_code_is_refused_before_torch_loads_it(
        tmp_path: Path, net: Any, images: Any) -> None:
    _save_pt2(net, tmp_path / "m.pt2", images[:2])
    marker = tmp_path / "ran"
    payload = io.BytesIO()
    torch.save(Payload(marker), payload)
    # torch.export.load unpickles the example inputs with weights_only=False on fallback.
    with zipfile.ZipFile(tmp_path / "m.pt2") as src, \
            zipfile.ZipFile(tmp_path / "evil.pt2", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, payload.getvalue() if "sample_inputs" in info.filename else data)
    with pytest.raises(ExportError, match="could run code") as info:
        export_to_onnx(tmp_path / "evil.pt2", tmp_path / "out.onnx", check_inputs=images)
    assert "sample_inputs" in info.value.message
    assert not marker.exists() and not (tmp_path / "out.onnx").exists()


def _save_torchscript(model: Any, path: Path, example: Any) -> None:
    with warnings.catch_warnings():  # torch 2.13 deprecates these; making a fixture is fine
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(model, torch.as_tensor(example)), str(path))


def test_torchscript_is_read_and_exported_with_a_dynamic_batch(tmp_path: Path, net: Any,
                                                               images: Any) -> None:
    _save_torchscript(net, tmp_path / "m.ts", images[:2])
    sig = export_to_onnx(tmp_path / "m.ts", tmp_path / "m.onnx", check_inputs=images)
    assert sig.to_json()["inputs"][0]["shape"] == [-1, 1, 8, 8]
    (out,) = _run(tmp_path / "m.onnx", images[:5])
    np.testing.assert_allclose(out, net(torch.from_numpy(images[:5])).detach().numpy(),
                               atol=1e-5)


def test_torchscript_needs_check_data_and_a_state_dict_is_not_a_model(
        tmp_path: Path, net: Any, images: Any) -> None:
    _save_torchscript(net, tmp_path / "m.ts", images[:2])
    with pytest.raises(ExportError, match="records no input shape") as info:
        export_to_onnx(tmp_path / "m.ts", tmp_path / "m.onnx", check_inputs=None)
    assert ".pt2" in (info.value.hint or "")
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ExportError, match="not a TorchScript archive"):
        export_to_onnx(tmp_path / "weights.pt", tmp_path / "m.onnx", check_inputs=images)


def _classifier() -> tuple[Any, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(1).normal(size=(80, 5))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), x


@pytest.mark.parametrize("name", ["model.pkl", "model.joblib", "model.z.joblib"])
def test_scikit_learn_pickles_and_joblib_files(tmp_path: Path, name: str) -> None:
    pytest.importorskip("skl2onnx")
    import joblib

    model, x = _classifier()
    path = tmp_path / name
    if name == "model.pkl":
        path.write_bytes(pickle.dumps(model))
    else:
        joblib.dump(model, path, compress=3 if ".z." in name else 0)
    sig = export_to_onnx(path, tmp_path / "m.onnx", check_inputs=x)
    assert sig.to_json() == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 5]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]}
    label, proba = _run(tmp_path / "m.onnx", x.astype(np.float32))
    np.testing.assert_allclose(proba, model.predict_proba(x), atol=1e-5)
    assert (label == model.predict(x)).all()


def test_a_regressor_pickle(tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx")
    from sklearn.ensemble import RandomForestRegressor

    x = np.random.default_rng(2).normal(size=(50, 3))
    model = RandomForestRegressor(n_estimators=4, random_state=0).fit(x, x[:, 0] * 2)
    (tmp_path / "r.pkl").write_bytes(pickle.dumps(model))
    sig = export_to_onnx(tmp_path / "r.pkl", tmp_path / "r.onnx", check_inputs=x)
    assert sig.to_json()["outputs"] == [{"name": "variable", "datatype": "FP32",
                                         "shape": [-1, 1]}]


@pytest.mark.parametrize(("payload", "named"), [
    # A global outside scikit-learn, numpy and scipy: os.system.
    (lambda marker: Payload(marker), "system"),
    # A function inside an allowed package that touches files: numpy.save.
    (lambda marker: _Reduce(np.save, (str(marker), np.zeros(1))), "numpy"),
    # A class inside an allowed package whose constructor opens files: numpy.memmap.
    (lambda marker: _Reduce(np.memmap, (str(marker), "uint8", "w+", 0, (1,))), "memmap"),
])
def test_a_hostile_pickle_is_refused_before_it_runs(tmp_path: Path, payload: Any,
                                                    named: str) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(payload(marker)))
    with pytest.raises(ExportError, match=f"names '[^']*{named}") as info:
        export_to_onnx(tmp_path / "m.pkl", tmp_path / "m.onnx", check_inputs=np.zeros((2, 2)))
    assert "could run code" in info.value.message
    assert not list(tmp_path.glob("ran*")) and not (tmp_path / "m.onnx").exists()


class _Reduce:
    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> Any:
        return (self.func, self.args)


def test_a_difference_beyond_the_tolerance_writes_nothing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Tanh(),
                                torch.nn.Linear(256, 8)).eval()
    x = torch.randn(64, 256)
    _save_pt2(model, tmp_path / "m.pt2", x[:2])
    # onnxruntime sums the 256 products in another order than torch: the last bits differ,
    # so a tolerance of zero fails, and the default passes.
    with pytest.raises(ExportMismatchError) as info:
        export_to_onnx(tmp_path / "m.pt2", tmp_path / "m.onnx", check_inputs=x.numpy(),
                       atol=0.0, rtol=0.0)
    message = info.value.message
    assert "max abs difference" in message and "atol 0 + rtol 0" in message
    assert "of 512 elements beyond it" in message
    assert not (tmp_path / "m.onnx").exists()
    export_to_onnx(tmp_path / "m.pt2", tmp_path / "m.onnx", check_inputs=x.numpy())
    assert (tmp_path / "m.onnx").exists()


def test_the_check_catches_an_onnx_file_whose_weights_were_changed(
        tmp_path: Path, net: Any, images: Any) -> None:
    _save_pt2(net, tmp_path / "m.pt2", images[:2])
    export_to_onnx(tmp_path / "m.pt2", tmp_path / "m.onnx", check_inputs=None)
    model = onnx.load(str(tmp_path / "m.onnx"))
    bias = next(t for t in model.graph.initializer if t.name.endswith("head.bias"))
    values = onnx.numpy_helper.to_array(bias).copy()
    values[1] += 0.25
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    expected = [net(torch.from_numpy(images)).detach().numpy()]
    with pytest.raises(ExportMismatchError, match=r"max abs difference 0\.25") as info:
        check_onnx(model.SerializeToString(), [images], expected, atol=1e-5, rtol=1e-4)
    assert "6 of 18 elements" in info.value.message
    check_onnx((tmp_path / "m.onnx").read_bytes(), [images], expected, atol=1e-5, rtol=1e-4)
