"""torch models to ONNX: torch.export programs (``.pt2``) and TorchScript archives (read only).

Both file kinds are zip archives that torch fills partly with pickles, and ``torch.export.load``
unpickles some of them with ``weights_only=False`` (arbitrary code). So before torch opens a
``.pt2``, every pickle in it must pass torch's weights-only unpickler (tensors, storages,
plain containers), and a program holding pickled Python objects is refused. A TorchScript
archive is read by TorchScript's own loader, whose unpickler knows no Python globals.
"""

from __future__ import annotations

import io
import pickle  # only its error class: nothing is unpickled here
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gha_mlops.errors import missing_extra, quoted
from gha_mlops.packaging.export import (
    Converted,
    ExportError,
    read_limited,
)
from gha_mlops.train._onnx import quiet_exporter, strip_debug_records

MAX_MEMBERS = 100_000
# What torch.load raises on a file that is not a weights-only archive, or is corrupt.
_HOSTILE_PICKLE_ERRORS = (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, TypeError,
                          AttributeError, KeyError, IndexError, zipfile.BadZipFile)


def _torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise missing_extra("torch", "torch") from err
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; say so before it fails)
    except ImportError as err:
        raise missing_extra("onnxscript", "package") from err
    return torch


def from_exported_program(source: Path, check_inputs: Any | None) -> Converted:
    """A ``torch.export.save`` archive to ONNX; its dynamic dimensions stay dynamic."""
    torch = _torch()
    refuse_unsafe_pickles(source, torch)
    with quiet_exporter():
        try:
            program = torch.export.load(str(source))
        except (RuntimeError, ValueError, KeyError, AssertionError, zipfile.BadZipFile) as err:
            raise ExportError(f"{source}: not a torch.export program ({err})") from err
        inputs = None if check_inputs is None else (torch.as_tensor(check_inputs),)
        example = program.example_inputs[0] if program.example_inputs else inputs
        if example is None:
            raise ExportError(f"{source}: the program has no example inputs",
                              hint="give check data (registry: models: NAME: check_data)")
        n_in = len(program.graph_signature.user_inputs)
        n_out = len(program.graph_signature.user_outputs)
        try:
            # One input is "input" (as in gha_mlops.train's export); several keep the names
            # of forward()'s parameters.
            onnx_program = torch.onnx.export(
                program, tuple(example), dynamo=True, verbose=False,
                input_names=["input"] if n_in == 1 else None, output_names=_outputs(n_out))
        except RuntimeError as err:  # the exporter's errors, torch.export's included
            raise ExportError(f"{source}: torch cannot export the program to ONNX: "
                              f"{str(err).splitlines()[0]}") from err
        expected = None
        if inputs is not None:
            with torch.no_grad():
                expected = _numpy(program.module()(*inputs))
    proto = onnx_program.model_proto
    strip_debug_records(proto)
    return Converted(proto.SerializeToString(), expected,
                     None if inputs is None else [t.numpy() for t in inputs])


def from_torchscript(source: Path, check_inputs: Any | None) -> Converted:
    """A TorchScript archive (``torch.jit.save``) to ONNX with a dynamic batch dimension.

    TorchScript records no input shapes, so ``check_inputs`` is required: its first two rows
    are the example the exporter traces.
    """
    torch = _torch()
    if check_inputs is None:
        raise ExportError(
            f"{source}: a TorchScript model records no input shape, so it needs check data",
            hint="give check data (registry: models: NAME: check_data), or save the model "
                 "with torch.export.save (.pt2) or as ONNX")
    names = _members(source)
    if not any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise ExportError(
            f"{source}: not a TorchScript archive (a torch.save file holds weights, not the "
            "model's code)", hint="export the model from its training code with "
                                  "gha_mlops.train.export_onnx, or save it with torch.export.save")
    inputs = (torch.as_tensor(check_inputs),)
    with quiet_exporter():
        try:
            module = torch.jit.load(str(source), map_location="cpu")
        except RuntimeError as err:
            raise ExportError(f"{source}: TorchScript cannot load it ({err})") from err
        with torch.no_grad():
            expected = _numpy(module(*inputs))
        outputs = _outputs(len(expected))
        axes = {name: {0: "batch"} for name in ("input", *outputs)}
        buf = io.BytesIO()
        try:
            # torch.export cannot take a ScriptModule; the TorchScript-based exporter is the
            # one torch 2.13 has for it (deprecated like TorchScript itself).
            torch.onnx.export(module, tuple(t[:2] for t in inputs), buf, dynamo=False,
                              input_names=["input"], output_names=outputs, dynamic_axes=axes)
        except RuntimeError as err:  # the exporter's errors (unsupported operator, ...)
            raise ExportError(f"{source}: torch cannot export the TorchScript model to ONNX: "
                              f"{str(err).splitlines()[0]}",
                              hint="save the model with torch.export.save (.pt2)") from err
    return Converted(buf.getvalue(), expected, [t.numpy() for t in inputs])


def _outputs(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _numpy(result: Any) -> list[Any]:
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [t.detach().cpu().numpy() for t in items]


def _members(source: Path) -> list[str]:
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ExportError(f"{source}: not a torch archive (zip): {err}") from err
    if len(names) > MAX_MEMBERS:
        raise ExportError(f"{source}: {len(names)} archive members, over {MAX_MEMBERS}")
    return names


def refuse_unsafe_pickles(source: Path, torch: Any) -> None:
    """Refuse a ``.pt2`` whose pickles ``torch.export.load`` would run unrestricted.

    Nested torch.save archives (pickled weights and constants, example inputs) must load with
    ``weights_only=True``; custom and opaque objects (pickled Python objects) are refused
    outright, as is any other member that is a bare pickle.
    """
    _members(source)
    with zipfile.ZipFile(io.BytesIO(read_limited(source))) as archive:
        for info in archive.infolist():
            base = info.filename.rsplit("/", 1)[-1]
            if base.startswith(("custom_obj", "opaque_obj")):
                raise ExportError(
                    f"{source}: the program holds a pickled Python object "
                    f"({quoted(info.filename)}), which could run code when loaded",
                    hint="export a program whose constants are tensors, or give the ONNX file")
            with archive.open(info) as member:
                head = member.read(4)
            if head == b"PK\x03\x04":
                _weights_only(source, info.filename, archive.read(info), torch)
            elif head[:1] == b"\x80" and base.endswith((".pt", ".pkl")):
                raise ExportError(f"{source}: {quoted(info.filename)} is a bare pickle, "
                                  "which torch would load without restriction")


def _weights_only(source: Path, name: str, data: bytes, torch: Any) -> None:
    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except _HOSTILE_PICKLE_ERRORS as err:
        raise ExportError(
            f"{source}: {quoted(name)} holds more than tensors ({str(err).splitlines()[0]}); "
            "loading it could run code",
            hint="save the program with plain tensors as weights and inputs") from err


__all__: Sequence[str] = ("from_exported_program", "from_torchscript", "refuse_unsafe_pickles")
