"""A model file to a checked ONNX file: the portable form a registered model is served in.

:func:`export_to_onnx` reads the model by its file name (never by importing anyone's code):

- ``.onnx``: validated with ``onnx.checker`` and copied byte for byte;
- ``.pt2``: a ``torch.export`` ExportedProgram, exported with ``torch.onnx.export``; every
  pickle in the archive must pass torch's weights-only unpickler first;
- ``.ts``, ``.pt``: a TorchScript archive, read only (TorchScript is deprecated upstream: read
  it, never write it), exported with torch's TorchScript-based ONNX exporter;
- ``.pkl``, ``.pickle``, ``.joblib``: a scikit-learn model, read with a restricted unpickler
  (only scikit-learn, numpy and scipy classes and a short list of functions) and converted
  with skl2onnx.

The check: with ``check_inputs``, the original model and the ONNX model (onnxruntime, CPU)
both run on them, and every output must agree within ``atol + rtol * |original|`` (numpy's
``allclose``), else :class:`ExportMismatchError`. Nothing appears at ``dest`` unless the
export and its check succeed (atomic write). docs/model-export.md is the user's guide.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gha_mlops import _fs
from gha_mlops.errors import GhaMlopsError, missing_extra, quoted
from gha_mlops.packaging.signature import Signature, signature_of
from gha_mlops.train._onnx import ExportMismatchError, compare_outputs

_MISMATCH_HINT = ("nothing was written. Look for an operator the export approximates "
                  "(docs/model-export.md, 'The check'); loosen the tolerance in mlops.yaml "
                  "(registry: models: NAME: tolerance) only if that difference is acceptable")

#: The largest model file read (a model from a pull request is hostile input).
MAX_MODEL_BYTES = 2 * 1024**3

TORCHSCRIPT_SUFFIXES = (".ts", ".pt")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
SUFFIXES = (".onnx", ".pt2", *TORCHSCRIPT_SUFFIXES, *PICKLE_SUFFIXES)


class ExportError(GhaMlopsError):
    """A model file cannot be exported to ONNX: an unknown format, a file that is not what its
    name says, a pickle that names a forbidden global, an operator the exporter lacks."""




@dataclass(frozen=True)
class Converted:
    """An export before its check: the ONNX bytes, and the original model's outputs on the
    check inputs (None without check inputs), in the ONNX model's output order."""

    onnx: bytes
    expected: Sequence[Any] | None
    inputs: Sequence[Any] | None


def export_to_onnx(source: Path, dest: Path, *, check_inputs: Any | None,
                   atol: float = 1e-5, rtol: float = 1e-4) -> Signature:
    """Export the model file ``source`` to ONNX at ``dest`` and return its signature.

    ``check_inputs``: an array for the model's (first) input, batch first; required for
    TorchScript (its input shape is known only from an example). Raises :class:`ExportError`
    (unknown suffix, unreadable or hostile file), :class:`ExportMismatchError` (the check),
    :class:`~gha_mlops.errors.MissingExtraError` without the ``package`` extra. ``dest`` is
    written atomically, only when everything passed.
    """
    if atol < 0 or rtol < 0:
        raise ExportError(f"the tolerance must be >= 0, got atol {atol}, rtol {rtol}")
    suffix = source.suffix.lower()
    if suffix not in SUFFIXES:
        raise ExportError(
            f"{source}: cannot export a {suffix or 'suffix-less'} file to ONNX",
            hint=f"export a model saved as one of {', '.join(SUFFIXES)} (docs/model-export.md)")
    _check_readable(source)
    if suffix == ".onnx":
        converted = _from_onnx(source, check_inputs)
    elif suffix == ".pt2":
        from gha_mlops.packaging.export_torch import from_exported_program

        converted = from_exported_program(source, check_inputs)
    elif suffix in TORCHSCRIPT_SUFFIXES:
        from gha_mlops.packaging.export_torch import from_torchscript

        converted = from_torchscript(source, check_inputs)
    else:
        from gha_mlops.packaging.export_sklearn import from_sklearn_pickle

        converted = from_sklearn_pickle(source, check_inputs)
    if converted.expected is not None and converted.inputs is not None:
        check_onnx(converted.onnx, converted.inputs, converted.expected, atol=atol, rtol=rtol)
    _fs.atomic_write_bytes(dest, converted.onnx)
    return signature_of(dest)


def _check_readable(source: Path) -> None:
    try:
        info = source.stat()
    except OSError as err:
        raise ExportError(f"{source}: cannot read the model ({err.strerror})") from err
    if not stat.S_ISREG(info.st_mode):
        raise ExportError(f"{source}: the model is not a regular file")
    if info.st_size > MAX_MODEL_BYTES:
        raise ExportError(
            f"{source}: the model is {info.st_size} bytes, over the limit of "
            f"{MAX_MODEL_BYTES} (one ONNX file holds less than 2 GiB)")


def onnx_module() -> Any:
    """``onnx``, or the error naming the extra to install."""
    try:
        import onnx
    except ImportError as err:
        raise missing_extra("onnx", "package") from err
    return onnx


def _from_onnx(source: Path, check_inputs: Any | None) -> Converted:
    """Validate an ONNX file. Its check runs it on the inputs (the file is the original, so
    there is nothing to compare: the run proves it loads and accepts them)."""
    onnx = onnx_module()
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    data = read_limited(source)
    try:
        model = onnx.load_model_from_string(data)
    except (ValueError, DecodeError) as err:
        raise ExportError(f"{source}: not a valid ONNX model ({err})") from err
    # Before the checker, which opens external data files at the paths the model names.
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise ExportError(
                f"{source}: the weight {quoted(init.name)} is stored in an external file",
                hint="save the model as one file (onnx.save(model, path, "
                     "save_as_external_data=False)); external paths are not followed")
    try:
        onnx.checker.check_model(model)
    except (ValueError, onnx.checker.ValidationError) as err:
        raise ExportError(f"{source}: not a valid ONNX model ({err})") from err
    if check_inputs is not None:
        session = inference_session(data, str(source))
        try:
            session.run(None, feeds_for(session, (check_inputs,), str(source)))
        except (RuntimeError, ValueError) as err:  # onnxruntime's InvalidArgument and kin
            raise ExportError(f"{source}: the model fails on the check data ({err})") from err
    return Converted(data, None, None)


def inference_session(data: bytes, what: str) -> Any:
    """An onnxruntime CPU session of the ONNX bytes ``data``."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise missing_extra("onnxruntime", "package") from err
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about unused initializers
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except (RuntimeError, ValueError) as err:  # onnxruntime's Fail/InvalidGraph derive these
        raise ExportError(f"{what}: onnxruntime cannot load the exported model ({err})") from err


def feeds_for(session: Any, inputs: Sequence[Any], what: str) -> dict[str, Any]:
    """The session's input feed: ``inputs`` in the session's input order, cast to its
    element types (float32 check data for a float32 model, for instance)."""
    import numpy as np

    declared = session.get_inputs()
    if len(declared) != len(inputs):
        raise ExportError(
            f"{what}: the model takes {len(declared)} inputs, the check data gives "
            f"{len(inputs)}", hint="check data is one array, for a model of one input")
    dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
    feeds = {}
    for spec, value in zip(declared, inputs, strict=True):
        array = np.asarray(value)
        feeds[spec.name] = array.astype(dtypes[spec.type]) if spec.type in dtypes else array
    return feeds


def check_onnx(data: bytes, inputs: Sequence[Any], expected: Sequence[Any], *,
               atol: float, rtol: float) -> None:
    """Run the ONNX model ``data`` on ``inputs`` and compare each output with ``expected``
    (the original model's outputs on them, in the ONNX output order): :class:`ExportMismatchError`
    on the first that differs beyond ``atol + rtol * |expected|``."""
    session = inference_session(data, "the export")
    feeds = feeds_for(session, inputs, "the export")
    try:
        actual = session.run(None, feeds)
    except (RuntimeError, ValueError) as err:
        raise ExportError(f"the exported model fails on the check data ({err})") from err
    if len(actual) != len(expected):
        raise ExportMismatchError(
            f"the ONNX model has {len(actual)} outputs, the original {len(expected)}")
    for out, want, got in zip(session.get_outputs(), expected, actual, strict=True):
        compare_outputs(out.name, want, got, atol=atol, rtol=rtol, hint=_MISMATCH_HINT)


def onnx_outputs(path: Path, inputs: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """The ONNX model at ``path`` run on ``inputs`` (onnxruntime, CPU): the feeds as the
    model takes them (cast to its input types) and its outputs, both in the model's order
    (what golden requests are made of)."""
    session = inference_session(read_limited(path), str(path))
    feeds = feeds_for(session, inputs, str(path))
    try:
        outputs = session.run(None, feeds)
    except (RuntimeError, ValueError) as err:
        raise ExportError(f"{path}: the model fails on the check data ({err})") from err
    return [feeds[spec.name] for spec in session.get_inputs()], list(outputs)


def read_limited(path: Path) -> bytes:
    """The bytes of ``path`` (a regular file no larger than :data:`MAX_MODEL_BYTES`)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as fh:
        data = fh.read(MAX_MODEL_BYTES + 1)
    if len(data) > MAX_MODEL_BYTES:
        raise ExportError(f"{path}: the model is larger than {MAX_MODEL_BYTES} bytes")
    return data
