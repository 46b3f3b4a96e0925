"""Model signatures: the OIP JSON form, its validation as hostile input, and reading one from
an ONNX graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.errors import GhaMlopsError
from gha_mlops.packaging.signature import Signature, SignatureError, TensorSpec, signature_of

DIGITS = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 16, 16]}],
          "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}


def test_json_round_trip_and_digest() -> None:
    sig = Signature.from_json(json.loads(json.dumps(DIGITS)), source="sig.json")
    assert sig.inputs == (TensorSpec("input", "FP32", (-1, 1, 16, 16)),)
    assert sig.to_json() == DIGITS
    # The digest depends on the content only, and changes with any field of it.
    assert sig.digest() == Signature.from_json(DIGITS, source="other").digest()
    wider = {**DIGITS, "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 11]}]}
    assert Signature.from_json(wider, source="s").digest() != sig.digest()
    assert len(sig.digest()) == 64


def _with(**tensor: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]} | tensor],
            "outputs": DIGITS["outputs"]}


@pytest.mark.parametrize(("doc", "expected"), [
    ([1, 2], "exactly the keys"),                                      # not an object
    ({**DIGITS, "extra": 1}, "exactly the keys"),                      # unknown key
    ({"inputs": [], "outputs": DIGITS["outputs"]}, "1 to 64 tensors"),  # empty
    ({"inputs": DIGITS["inputs"] * 65, "outputs": DIGITS["outputs"]}, "1 to 64 tensors"),
    ({"inputs": DIGITS["inputs"] * 2, "outputs": DIGITS["outputs"]}, "names a tensor twice"),
    (_with(name="../../etc/passwd\n"), "name is"),                     # unsafe name
    (_with(name="x" * 200), "name is"),                                # unbounded name
    (_with(datatype="float32"), "datatype is"),                        # not an OIP name
    (_with(shape=[1] * 9), "at most 8"),                               # rank
    (_with(shape=[-2]), "at most 8"),                                  # negative size
    (_with(shape=[True, 3]), "at most 8"),                             # bool is not a size
    (_with(shape="[-1]"), "at most 8"),                                # not a list
    ({"inputs": [{"name": "x"}], "outputs": DIGITS["outputs"]}, "the keys name"),
])
def test_hostile_json_is_refused_with_the_field_named(doc: Any, expected: str) -> None:
    with pytest.raises(SignatureError, match=expected) as info:
        Signature.from_json(doc, source="models/x/signature.json")
    assert isinstance(info.value, GhaMlopsError)
    assert info.value.message.startswith("models/x/signature.json")


def _onnx_model(tmp_path: Path, output_type: Any = None) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.5] * 12)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]),
         helper.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0)],
        "g",
        # "w" is also an input (a weight a caller may override): not part of the signature.
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         output_type or helper.make_tensor_value_info("label", TensorProto.INT64, [None])],
        initializer=[weight])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_signature_of_an_onnx_graph(tmp_path: Path) -> None:
    sig = signature_of(_onnx_model(tmp_path))
    assert sig.to_json() == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}]}


def test_signature_of_refuses_what_oip_cannot_serve(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # A scikit-learn ZipMap output: a sequence of maps, not a tensor.
    zipmap = helper.make_value_info("label", helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(
            TensorProto.FLOAT, []))))
    with pytest.raises(SignatureError, match="not a tensor") as info:
        signature_of(_onnx_model(tmp_path, zipmap))
    assert "zipmap" in (info.value.hint or "")
    bfloat = helper.make_tensor_value_info("label", TensorProto.BFLOAT16, [None])
    with pytest.raises(SignatureError, match="no Open Inference Protocol datatype"):
        signature_of(_onnx_model(tmp_path, bfloat))


def test_signature_of_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\x00\xffnot a protobuf\x12\x99")
    with pytest.raises(SignatureError, match="not a readable ONNX model"):
        signature_of(garbage)
    with pytest.raises(SignatureError, match="not a readable ONNX model"):
        signature_of(tmp_path / "absent.onnx")
