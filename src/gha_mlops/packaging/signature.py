"""A model's signature: the names, datatypes and shapes of its inputs and outputs.

The JSON form is the one the Open Inference Protocol's model metadata endpoint returns::

    {"inputs":  [{"name": "input",  "datatype": "FP32", "shape": [-1, 1, 16, 16]}],
     "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}

``datatype`` is an OIP tensor datatype name and ``-1`` marks a dynamic dimension. The registry
compares :meth:`Signature.digest` values to decide a major version bump, so the digest depends
only on the content (canonical JSON), never on how the signature was read.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gha_mlops._fs import canonical_json_bytes
from gha_mlops.errors import GhaMlopsError, quoted

#: OIP datatype names, in the protocol's order.
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES")

# ONNX TensorProto element types (onnx.TensorProto.DataType values) -> OIP datatypes. Written
# out so that reading a signature from JSON never needs onnx; the types missing here (bfloat16,
# complex, float8, 4-bit) have no OIP name, and a model using them is refused by name.
_ONNX_TO_OIP = {1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32",
                7: "INT64", 8: "BYTES", 9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32",
                13: "UINT64"}

# Bounds on a signature read from a file someone else wrote (a model from a pull request).
MAX_TENSORS = 64
MAX_RANK = 8
MAX_DIM = 2**40
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,127}")


class SignatureError(GhaMlopsError):
    """A signature (JSON or ONNX graph) does not have the form described in
    docs/model-export.md; the message names the source and the offending field."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, OIP datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """``{"name", "datatype", "shape"}`` with the shape as a list."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs of a model, in the model's order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_json(self) -> dict[str, Any]:
        """The OIP metadata form: ``{"inputs": [...], "outputs": [...]}``."""
        return {"inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs]}

    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON form: equal signatures, equal digests."""
        return hashlib.sha256(canonical_json_bytes(self.to_json())).hexdigest()

    @classmethod
    def from_json(cls, doc: Any, *, source: str) -> Signature:
        """Validate ``doc`` (parsed JSON, possibly hostile) into a Signature.

        Raises :class:`SignatureError` naming ``source`` and the field: not an object, other
        keys than inputs/outputs, more than 64 tensors, a name outside ``NAME_PATTERN`` or
        repeated, a datatype that is not an OIP name, a rank over 8, a dimension that is not
        -1 or a non-negative integer.
        """
        if not isinstance(doc, dict) or set(doc) != {"inputs", "outputs"}:
            raise SignatureError(
                f"{source}: a signature must be an object with exactly the keys 'inputs' and "
                f"'outputs', got {quoted(sorted(doc) if isinstance(doc, dict) else doc)}",
                hint="write it as in docs/model-export.md, 'Signature'")
        inputs = _tensors(doc["inputs"], f"{source}: inputs")
        outputs = _tensors(doc["outputs"], f"{source}: outputs")
        return cls(inputs, outputs)


def _tensors(items: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(items, list) or not items or len(items) > MAX_TENSORS:
        raise SignatureError(
            f"{where} must be a list of 1 to {MAX_TENSORS} tensors, got {quoted(items)}")
    specs = tuple(_tensor(item, f"{where}[{i}]") for i, item in enumerate(items))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SignatureError(f"{where} names a tensor twice: {quoted(names)}")
    return specs


def _tensor(item: Any, where: str) -> TensorSpec:
    if not isinstance(item, dict) or set(item) != {"name", "datatype", "shape"}:
        raise SignatureError(
            f"{where} must be an object with the keys name, datatype and shape, got "
            f"{quoted(item)}")
    name, datatype, shape = item["name"], item["datatype"], item["shape"]
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SignatureError(
            f"{where}.name is {quoted(name)}: expected a name of letters, digits and _.:/- "
            "(at most 128 characters, starting with a letter or _)")
    if datatype not in DATATYPES:
        raise SignatureError(
            f"{where}.datatype is {quoted(datatype)}: expected one of {', '.join(DATATYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(
            type(d) is int and -1 <= d <= MAX_DIM for d in shape):
        raise SignatureError(
            f"{where}.shape is {quoted(shape)}: expected a list of at most {MAX_RANK} "
            "dimensions, each -1 (dynamic) or a size >= 0")
    return TensorSpec(name, datatype, tuple(shape))


def signature_of(onnx_path: Path) -> Signature:
    """The signature of the ONNX model at ``onnx_path``, read from its graph.

    Inputs that are also initializers (weights a caller may override) are not inputs of the
    signature. A dimension without a fixed size (a symbolic name, or none) is -1. Raises
    :class:`SignatureError` for a file that is not an ONNX model, a non-tensor input or output
    (sequences, maps: a scikit-learn ZipMap, for instance) or an element type with no OIP name.
    Needs the ``package`` extra (``onnx``).
    """
    from gha_mlops.errors import missing_extra

    try:
        import onnx
        from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
    except ImportError as err:
        raise missing_extra("onnx", "package") from err
    try:
        # load_external_data=False: the signature is in the graph; a model's external weight
        # files are neither needed nor to be trusted to stay inside its folder.
        model = onnx.load(str(onnx_path), load_external_data=False)
    except (OSError, ValueError, DecodeError) as err:
        raise SignatureError(f"{onnx_path}: not a readable ONNX model ({err})") from err
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name not in weights]
    doc = {"inputs": [_value_info(v, f"{onnx_path}: input {v.name!r}") for v in inputs],
           "outputs": [_value_info(v, f"{onnx_path}: output {v.name!r}") for v in graph.output]}
    return Signature.from_json(doc, source=str(onnx_path))


def _value_info(value: Any, where: str) -> dict[str, Any]:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise SignatureError(
            f"{where} is a {kind or 'value without a type'}, not a tensor: the Open Inference "
            "Protocol serves tensors only",
            hint="export the model so that every input and output is a tensor (for "
                 "scikit-learn classifiers: the zipmap option off)")
    tensor = value.type.tensor_type
    datatype = _ONNX_TO_OIP.get(tensor.elem_type)
    if datatype is None:
        raise SignatureError(
            f"{where} has ONNX element type {tensor.elem_type}, which has no Open Inference "
            "Protocol datatype", hint=f"use one of {', '.join(DATATYPES)}")
    shape = [d.dim_value if d.WhichOneof("value") == "dim_value" else -1
             for d in tensor.shape.dim]
    return {"name": value.name, "datatype": datatype, "shape": shape}
