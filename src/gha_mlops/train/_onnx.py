"""A torch module to an ONNX file from a pipeline stage: checked, atomic, same bytes every run.

The export goes through ``torch.export`` (the path torch keeps; TorchScript is deprecated) and
``torch.onnx.export(..., dynamo=True)``. With torch 2.13 and onnxscript 0.7 the bytes depend
only on the module and the example's shapes, so the file can be a cached, reproduced output.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from gha_mlops.errors import GhaMlopsError, quoted
from gha_mlops.train._atomic import atomic_write_bytes
from gha_mlops.train._imports import required

PathLike = str | os.PathLike[str]

# Protobuf cannot serialise a model of 2 GiB or more in one message; such a model needs
# ONNX's external data files, which a single pipeline output cannot be.
_MAX_PROTO = 2**31 - 1


class ExportMismatchError(GhaMlopsError):
    """The ONNX model's outputs differ from the original model's beyond the tolerance; nothing
    was written. The message names the output, the largest absolute difference, the tolerance
    and how many elements differ."""


DEFAULT_HINT = ("nothing was written. Look for an operator the export approximates "
                "(docs/model-export.md, 'The check'); loosen the tolerance only if that "
                "difference is acceptable")


def compare_outputs(name: str, expected: Any, actual: Any, *, atol: float, rtol: float,
                    hint: str = DEFAULT_HINT) -> None:
    """Raise :class:`ExportMismatchError` unless ``actual`` (the ONNX model's output
    ``name``) has the shape of ``expected`` (a column vector matches a flat one) and each
    element satisfies ``|actual - expected| <= atol + rtol * |expected|`` (numpy's
    ``isclose``; NaN equals NaN); non-numeric outputs (string labels) must be equal."""
    np = required("numpy")
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.shape != actual.shape and expected.size == actual.size and actual.ndim <= 2:
        expected = expected.reshape(actual.shape)  # (n,) from predict() vs ONNX's (n, 1)
    if expected.shape != actual.shape:
        raise ExportMismatchError(
            f"output {quoted(name)} of the ONNX model has shape {list(actual.shape)}, the "
            f"original's {list(expected.shape)}")
    if expected.dtype.kind not in "fiub" or actual.dtype.kind not in "fiub":
        differing = int(np.sum(expected.astype(str) != actual.astype(str)))
        if differing:
            raise ExportMismatchError(
                f"output {quoted(name)} of the ONNX model differs from the original in "
                f"{differing} of {expected.size} elements (not numbers: compared for equality)")
        return
    close = np.isclose(actual, expected, atol=atol, rtol=rtol, equal_nan=True)
    if not close.all():
        diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        worst = float(np.nanmax(diff)) if not np.isnan(diff).all() else float("nan")
        raise ExportMismatchError(
            f"output {quoted(name)} of the ONNX model differs from the original: max abs "
            f"difference {worst:.3g}, tolerance atol {atol:g} + rtol {rtol:g} x |original|, "
            f"{int(close.size - close.sum())} of {close.size} elements beyond it", hint=hint)


def export_onnx(model: Any, example: Any, path: PathLike, *, check_inputs: Any = None,
                atol: float = 1e-5, rtol: float = 1e-4,
                input_names: Sequence[str] = ("input",),
                output_names: Sequence[str] = ("output",),
                dynamic_batch: bool = True) -> None:
    """Export the torch module ``model`` to ONNX at ``path``, atomically.

    ``example``: a tensor or a tuple of tensors, the inputs ``model`` takes (only their shapes
    and dtypes matter). With ``dynamic_batch`` the first dimension of every input (and output)
    is the dynamic axis ``batch``; an example batch of 1 is repeated to 2, because torch
    specialises a size of 1. The export runs in eval mode and no_grad; the module's mode is
    restored. ``check_inputs`` (a tensor, array or tuple of them): both the module and the
    ONNX model (onnxruntime, CPU) run on them and every output must agree within
    ``atol + rtol * |torch output|``, else :class:`ExportMismatchError` and nothing is written.
    Raises :class:`~gha_mlops.errors.MissingExtraError` without the ``package`` extra.
    """
    torch = required("torch")
    required("onnxscript", "package")
    args = _as_tuple(example, torch)
    if len(input_names) != len(args):
        raise ValueError(f"input_names has {len(input_names)} names for {len(args)} inputs")
    if dynamic_batch:
        args = tuple(torch.cat([a, a]) if a.dim() and a.shape[0] == 1 else a for a in args)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.no_grad():
            data = _to_onnx_bytes(torch, model, args, list(input_names), list(output_names),
                                  dynamic_batch)
            if check_inputs is not None:
                check_onnx_bytes(data, model, _as_tuple(check_inputs, torch), list(input_names),
                                 atol=atol, rtol=rtol)
    finally:
        model.train(was_training)
    atomic_write_bytes(path, data)


def _as_tuple(value: Any, torch: Any) -> tuple[Any, ...]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return tuple(torch.as_tensor(v) for v in items)


def _to_onnx_bytes(torch: Any, model: Any, args: tuple[Any, ...], input_names: list[str],
                   output_names: list[str], dynamic_batch: bool) -> bytes:
    dims = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dims = tuple({0: batch} if a.dim() else None for a in args)
    with quiet_exporter():
        try:
            program = torch.export.export(model, args, dynamic_shapes=dims)
        except torch._dynamo.exc.UserError as err:  # the model fixes the batch size
            raise GhaMlopsError(
                f"torch.export cannot export the model with a dynamic batch size: {err}",
                hint="make the batch dimension free in forward(), or export with "
                     "dynamic_batch=False") from err
        onnx_program = torch.onnx.export(program, args, dynamo=True, verbose=False,
                                         input_names=input_names, output_names=output_names)
    if dynamic_batch:
        # torch names the symbol after its own counter ("s77"); "batch" says what it is.
        first = onnx_program.model.graph.inputs[0].shape[0]
        if not isinstance(first, int):
            onnx_program.rename_axes({first: "batch"})
    proto = onnx_program.model_proto
    strip_debug_records(proto)
    if proto.ByteSize() > _MAX_PROTO:
        raise GhaMlopsError("the ONNX model is 2 GiB or larger, which one .onnx file cannot "
                            "hold", hint="export it with torch.onnx.export and external data")
    data: bytes = proto.SerializeToString()
    return data


def strip_debug_records(proto: Any) -> None:
    """Remove the exporter's debug records from the ONNX ``ModelProto`` in place.

    torch's exporter tags every node with the Python stack that made it (absolute paths of
    the script and of the torch install), its module path and fx name, and every value and the
    graph with torch.export's bookkeeping, all as ``metadata_props``. Only error messages use
    them; kept, the same model exported from another directory would have other bytes. The
    model-level ``metadata_props`` (the user's) are kept.
    """
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        del graph.metadata_props[:]
        for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
            del value.metadata_props[:]
        for node in graph.node:
            del node.metadata_props[:]
            for attr in node.attribute:  # If/Loop/Scan bodies are graphs of their own
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
    for function in proto.functions:
        del function.metadata_props[:]
        for node in function.node:
            del node.metadata_props[:]


def check_onnx_bytes(data: bytes, model: Any, inputs: tuple[Any, ...], input_names: list[str],
                     *, atol: float, rtol: float) -> None:
    """Run ``model`` (torch) and the ONNX model ``data`` (onnxruntime) on ``inputs`` and
    :func:`compare_outputs` each output, in order."""
    torch = required("torch")
    ort = required("onnxruntime", "package")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(*inputs)
    if not isinstance(expected, (tuple, list)):
        expected = (expected,)
    feeds = {name: t.detach().cpu().numpy() for name, t in zip(input_names, inputs, strict=True)}
    actual = session.run(None, feeds)
    if len(actual) != len(expected):
        raise ExportMismatchError(
            f"the ONNX model has {len(actual)} outputs, the original {len(expected)}")
    for out, want, got in zip(session.get_outputs(), expected, actual, strict=True):
        compare_outputs(out.name, want.detach().cpu().numpy(), got, atol=atol, rtol=rtol)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence torch's ONNX exporter chatter, which is not the caller's output: progress
    lines, warnings about absent torchvision, and deprecation warnings from torch's own
    internals (pytree, the TorchScript exporter), which as errors under ``-W error`` would
    stop a correct export."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`",
                                    FutureWarning)
            warnings.filterwarnings("ignore", r".*legacy TorchScript-based ONNX export",
                                    DeprecationWarning)
            warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated",
                                    DeprecationWarning)
            warnings.filterwarnings("ignore", r"The feature will be removed", DeprecationWarning)
            # the TorchScript exporter's notes on its own tracing (no signature, folding)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
            yield
    finally:
        logger.setLevel(level)
