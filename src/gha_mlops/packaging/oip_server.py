"""A small, fast Open Inference Protocol (KServe V2 REST) server for one ONNX model.

Standalone by contract: this file imports only the standard library, numpy and onnxruntime,
because the service image copies it alone to ``/app/oip_server.py``. It must never import
gha_mlops.

    python3 oip_server.py --model-dir DIR [--host 127.0.0.1] [--port 8080] [--workers N]

``DIR`` holds ``model.onnx`` and ``model.json`` (``name``, ``version``, ``platform``,
``inputs``, ``outputs`` in the signature's JSON form, ``sha256`` of model.onnx, ``run_id``,
``commit``). The server prints ``ready on http://HOST:PORT`` once every worker has loaded the
model and warmed it up with one inference on zeros; SIGTERM or SIGINT stops it gracefully.

Design, for speed on a couple of cores: an asyncio Protocol with a minimal, strict HTTP/1.1
parser (keep-alive, pipelining, ``Content-Length`` bodies only; no chunked requests), and
inference run inline on the event loop with one onnxruntime thread per worker (a small
model's inference is shorter than a thread hand-off). ``--workers N`` forks N processes that
accept on one pre-bound listening socket; their counters live in one shared anonymous mmap,
one row per worker, so ``/metrics`` reports the whole server whichever worker answers.

With ``--log DIR|s3://BUCKET/PREFIX`` (or ``PREDLOG``) every answered instance is offered to
the prediction log (``predlog_writer.py``, loaded from beside this file or, in the source
tree, from ``../monitor/``): sampled (``--log-sample``, default 0.1), encoded on the request
path, batched and written by a background thread per worker, never waiting on I/O; a
graceful stop flushes it. The response's ``id`` names the request in the log (see
:class:`PredLog`), and ``POST /v2/models/{name}/feedback`` takes labels for those ids.
``/metrics`` also counts predictions per class (one integer per instance) or by value (one
float per instance), and what the log did with its rows.

Hostile input is bounded: the request head (``--max-header-bytes``), the body (checked
against ``Content-Length`` before any of it is read, ``--max-body-bytes``), the time a
request may take to arrive (``--request-timeout``) and an idle keep-alive connection
(``--keep-alive-timeout``). Bad requests get ``{"error": "..."}`` with a 4xx status and the
server goes on serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import importlib.util
import itertools
import json
import mmap
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import onnxruntime as ort

SERVER_NAME = "gha-mlops-oip"
SERVER_VERSION = "1.0"

# OIP datatype -> numpy dtype; and which kinds of JSON values (numpy's dtype.kind of the
# array json data becomes) each accepts: no silent string->number or float->int casts.
DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}
_ACCEPTS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf", "O": "U"}
_ORT_TYPES = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")


class BadRequest(Exception):
    """A request the server refuses: ``status`` (4xx) and a message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelError(Exception):
    """The model directory cannot be served (what is wrong and where); exit status 2."""


# ---------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Tensor:
    """One input or output of the signature: OIP datatype, shape with -1 for dynamic."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class Model:
    """A loaded, warmed-up model: its identity, signature and onnxruntime session."""

    name: str
    version: str
    platform: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    session: Any

    def metadata(self) -> dict[str, Any]:
        """The KServe V2 model metadata response."""
        return {"name": self.name, "versions": [self.version], "platform": self.platform,
                "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs]}


def _ort_tensors(args: list[Any], where: str) -> tuple[Tensor, ...]:
    found = []
    for arg in args:
        datatype = _ORT_TYPES.get(arg.type)
        if datatype is None:
            raise ModelError(f"{where}: {arg.name!r} has type {arg.type}, which the Open "
                             "Inference Protocol cannot carry (tensors of numbers, bools or "
                             "strings only)")
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
        found.append(Tensor(arg.name, datatype, shape))
    return tuple(found)


def _declared(doc: dict[str, Any], key: str, where: str) -> tuple[Tensor, ...] | None:
    value = doc.get(key)
    if value is None:
        return None
    try:
        return tuple(Tensor(str(t["name"]), str(t["datatype"]),
                            tuple(int(d) for d in t["shape"])) for t in value)
    except (TypeError, KeyError, ValueError) as err:
        raise ModelError(f"{where}: {key} must be a list of {{name, datatype, shape}} "
                         f"objects ({err!r})") from err


def _check_declared(declared: tuple[Tensor, ...] | None, actual: tuple[Tensor, ...],
                    key: str, where: str) -> tuple[Tensor, ...]:
    """model.json's signature must agree with the graph's names, datatypes and ranks; its
    shapes win where the graph's are looser (a declared fixed size is enforced)."""
    if declared is None:
        return actual
    if [(t.name, t.datatype, len(t.shape)) for t in declared] != [
            (t.name, t.datatype, len(t.shape)) for t in actual]:
        raise ModelError(f"{where}: {key} {[t.to_json() for t in declared]} does not match "
                         f"model.onnx's {[t.to_json() for t in actual]}: re-export the model "
                         "or fix model.json")
    return declared


def _read_manifest(model_dir: Path) -> dict[str, Any]:
    where = str(model_dir / "model.json")
    try:
        doc = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelError(f"{where}: cannot read it as JSON ({err})") from err
    if not isinstance(doc, dict):
        raise ModelError(f"{where}: expected a JSON object with name, version, inputs, outputs")
    for key in ("name", "version"):
        if not isinstance(doc.get(key), str) or not _NAME.fullmatch(doc[key]):
            raise ModelError(f"{where}: {key} must be a string of letters, digits, '.', '_', "
                             f"'-', '/' (got {doc.get(key)!r})")
    return doc


def load_model(model_dir: Path) -> Model:
    """Read ``model.json`` and ``model.onnx`` (hash-checked when model.json has ``sha256``),
    open a one-thread sequential onnxruntime session and warm it up; ModelError if unfit."""
    doc = _read_manifest(model_dir)
    where = str(model_dir / "model.json")
    onnx_path = model_dir / "model.onnx"
    try:
        blob = onnx_path.read_bytes()
    except OSError as err:
        raise ModelError(f"{onnx_path}: cannot read the model ({err.strerror})") from err
    if isinstance(doc.get("sha256"), str) and hashlib.sha256(blob).hexdigest() != doc["sha256"]:
        raise ModelError(f"{onnx_path}: its sha256 is not the {doc['sha256']} that model.json "
                         "states: the model directory is corrupt or mixed up")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own classes for every kind of bad model
        raise ModelError(f"{onnx_path}: onnxruntime cannot load it ({err})") from err
    inputs = _check_declared(_declared(doc, "inputs", where),
                             _ort_tensors(session.get_inputs(), str(onnx_path)), "inputs", where)
    outputs = _check_declared(_declared(doc, "outputs", where),
                              _ort_tensors(session.get_outputs(), str(onnx_path)),
                              "outputs", where)
    model = Model(doc["name"], doc["version"], str(doc.get("platform", "onnxruntime_onnx")),
                  inputs, outputs, session)
    warm = {t.name: np.zeros([d if d >= 0 else 1 for d in t.shape], dtype=DTYPES[t.datatype])
            for t in inputs}
    for t in inputs:
        if t.datatype == "BYTES":
            warm[t.name] = np.full(warm[t.name].shape, "", dtype=np.object_)
    try:
        session.run(None, warm)
    except Exception as err:  # the warm-up is the model's first run: report whatever it says
        raise ModelError(f"{onnx_path}: the warm-up inference on zeros failed ({err})") from err
    return model


# ---------------------------------------------------------------------------- inference


@dataclass(frozen=True)
class InferRequest:
    """A validated inference request: feeds for the session, outputs wanted, the echoed id."""

    id: str | None
    feeds: dict[str, np.ndarray]
    outputs: list[str]
    binary: frozenset[str] = frozenset()  # outputs to answer as binary data


def _checked_shape(spec: Tensor, item: dict[str, Any], where: str) -> list[int]:
    if item.get("datatype") != spec.datatype:
        raise BadRequest(400, f"{where}: datatype {item.get('datatype')!r} is not the model's "
                         f"{spec.datatype}")
    shape = item.get("shape")
    if (not isinstance(shape, list) or any(type(d) is not int or d < 0 for d in shape)):
        raise BadRequest(400, f"{where}: shape must be a list of non-negative integers "
                         f"(got {shape!r})")
    if len(shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)):
        raise BadRequest(400, f"{where}: shape {shape} does not fit the model's "
                         f"{list(spec.shape)} (-1: any size)")
    return shape


def _tensor_from_json(spec: Tensor, item: dict[str, Any], shape: list[int],
                      where: str) -> np.ndarray:
    data = item.get("data")
    if not isinstance(data, list):
        raise BadRequest(400, f"{where}: data must be a list of values (flat or nested, "
                         "row-major)")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as err:
        raise BadRequest(400, f"{where}: data is not a rectangular array of values") from err
    if array.size and array.dtype.kind not in _ACCEPTS[np.dtype(DTYPES[spec.datatype]).kind]:
        raise BadRequest(400, f"{where}: data holds {array.dtype.kind!r}-kind values "
                         f"({_KIND_WORDS.get(array.dtype.kind, 'mixed values')}), not "
                         f"{spec.datatype} values")
    count = 1
    for d in shape:
        count *= d
    if array.size != count or (array.ndim != 1 and list(array.shape) != shape):
        raise BadRequest(400, f"{where}: shape {shape} needs {count} values, data has "
                         f"{array.size} in the shape {list(array.shape)}")
    return _cast(array, spec.datatype, where).reshape(shape)


def _tensor_from_binary(spec: Tensor, blob: memoryview, shape: list[int],
                        where: str) -> np.ndarray:
    """The binary tensor extension: raw little-endian values in row-major order; BYTES
    elements each prefixed with their length (4 bytes, little-endian)."""
    count = 1
    for d in shape:
        count *= d
    if spec.datatype == "BYTES":
        elements: list[bytes] = []
        pos = 0
        while pos + 4 <= len(blob) and len(elements) < count:
            size = int.from_bytes(blob[pos:pos + 4], "little")
            elements.append(bytes(blob[pos + 4:pos + 4 + size]))
            pos += 4 + size
        if len(elements) != count or pos != len(blob):
            raise BadRequest(400, f"{where}: the binary data does not hold {count} "
                             "length-prefixed elements")
        try:
            return np.array([e.decode() for e in elements], dtype=np.object_).reshape(shape)
        except UnicodeDecodeError as err:
            raise BadRequest(400, f"{where}: a BYTES element is not UTF-8") from err
    dtype = np.dtype(DTYPES[spec.datatype]).newbyteorder("<")
    if len(blob) != count * dtype.itemsize:
        raise BadRequest(400, f"{where}: binary_data_size is {len(blob)} bytes; shape {shape} "
                         f"of {spec.datatype} needs {count * dtype.itemsize}")
    if spec.datatype == "BOOL" and np.frombuffer(blob, dtype=np.uint8).max(initial=0) > 1:
        raise BadRequest(400, f"{where}: BOOL values must be bytes 0 or 1")
    return np.frombuffer(blob, dtype=dtype).astype(dtype.newbyteorder("="),
                                                    copy=False).reshape(shape)


_KIND_WORDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers",
               "U": "strings", "O": "mixed or oversized values"}


def _cast(array: np.ndarray, datatype: str, where: str) -> np.ndarray:
    dtype = np.dtype(DTYPES[datatype])
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise BadRequest(400, f"{where}: a value is out of range for {datatype} "
                             f"[{info.min}, {info.max}]")
    if dtype.kind == "O":
        return array.astype(np.object_)
    return array.astype(dtype, copy=False)


def _split_body(body: bytes, json_length: int | None) -> tuple[bytes, memoryview]:
    if json_length is None:
        return body, memoryview(b"")
    if json_length > len(body):
        raise BadRequest(400, f"Inference-Header-Content-Length ({json_length}) is over the "
                         f"body's {len(body)} bytes")
    return body[:json_length], memoryview(body)[json_length:]


def parse_infer_request(body: bytes, model: Model, json_length: int | None = None
                        ) -> InferRequest:
    """Validate an infer request body against the model's signature; BadRequest(400) naming
    the field and what was expected. Every model input must be given, each once. With
    ``json_length`` (the Inference-Header-Content-Length header) the body is that much JSON
    followed by the binary data of the inputs whose parameters give binary_data_size."""
    header, binary = _split_body(body, json_length)
    try:
        doc = json.loads(header)
    except (ValueError, RecursionError) as err:
        raise BadRequest(400, "the body is not JSON (an inference request is "
                         '{"inputs": [{"name", "shape", "datatype", "data"}]})') from err
    if not isinstance(doc, dict):
        raise BadRequest(400, "the body must be a JSON object with an 'inputs' list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(400, f"id must be a string (got {type(request_id).__name__})")
    items = doc.get("inputs")
    if not isinstance(items, list) or not items:
        raise BadRequest(400, "inputs must be a non-empty list of "
                         "{name, shape, datatype, data} objects")
    specs = {t.name: t for t in model.inputs}
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(400, f"inputs[{i}] must be an object with a string 'name'")
        name = item["name"]
        if name not in specs:
            raise BadRequest(400, f"inputs[{i}]: the model has no input {name!r} "
                             f"(its inputs: {sorted(specs)})")
        if name in feeds:
            raise BadRequest(400, f"inputs[{i}]: input {name!r} is given twice")
        where = f"input {name!r}"
        shape = _checked_shape(specs[name], item, where)
        params = item.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            feeds[name] = _tensor_from_json(specs[name], item, shape, where)
            continue
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise BadRequest(400, f"{where}: binary_data_size {size!r} does not fit the "
                             f"{len(binary)} bytes of binary data after the JSON")
        feeds[name] = _tensor_from_binary(specs[name], binary[offset:offset + size], shape,
                                          where)
        offset += size
    missing = sorted(set(specs) - set(feeds))
    if missing:
        raise BadRequest(400, f"inputs: the model also needs {missing}")
    if offset != len(binary):
        raise BadRequest(400, f"{len(binary) - offset} bytes of binary data follow the JSON "
                         "that no input's binary_data_size claims")
    outputs, binary_out = _requested_outputs(doc, model)
    return InferRequest(request_id, feeds, outputs, binary_out)


def _binary_flag(doc: dict[str, Any], key: str, default: bool) -> bool:
    params = doc.get("parameters")
    value = params.get(key, default) if isinstance(params, dict) else default
    return value if isinstance(value, bool) else default


def _requested_outputs(doc: dict[str, Any], model: Model) -> tuple[list[str], frozenset[str]]:
    """The outputs to answer, and those to answer as binary data (the request's
    binary_data_output parameter, overridden per output by its binary_data parameter)."""
    known = [t.name for t in model.outputs]
    all_binary = _binary_flag(doc, "binary_data_output", False)
    requested = doc.get("outputs")
    if requested is None:
        return known, frozenset(known if all_binary else ())
    if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested):
        raise BadRequest(400, "outputs must be a list of {name} objects")
    names = [o["name"] for o in requested]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise BadRequest(400, f"outputs: the model has no output {unknown} (its outputs: "
                         f"{known})")
    binary = frozenset(o["name"] for o in requested
                       if _binary_flag(o, "binary_data", all_binary))
    return list(dict.fromkeys(names)), binary


_NP_TO_OIP = {np.dtype(v).str: k for k, v in DTYPES.items() if k != "BYTES"}


def run_model(model: Model, names: list[str], feeds: dict[str, np.ndarray]
              ) -> dict[str, np.ndarray]:
    """Run the session for the outputs ``names``; BadRequest(400) when the model refuses
    the inputs."""
    try:
        results = model.session.run(names, feeds)
    except ort.capi.onnxruntime_pybind11_state.InvalidArgument as err:
        raise BadRequest(400, f"the model refused the inputs: {err}") from err
    return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}


def infer_response(model: Model, request: InferRequest, arrays: dict[str, np.ndarray]
                   ) -> tuple[dict[str, Any], bytes]:
    """The V2 inference response of the outputs ``request`` asked for, taken from
    ``arrays`` (data flattened row-major), and the binary data of the outputs asked for as
    binary, in their order (empty when none)."""
    outputs, blobs = [], []
    for name in request.outputs:
        array = arrays[name]
        datatype = "BYTES" if array.dtype.kind in "OUS" else _NP_TO_OIP[array.dtype.str]
        out: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if datatype == "BYTES":
            data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                    for v in array.ravel().tolist()]
        if name in request.binary:
            blob = b"".join(len(e).to_bytes(4, "little") + e for e in (
                v.encode() for v in data)) if datatype == "BYTES" else \
                array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = data if datatype == "BYTES" else array.ravel().tolist()
        outputs.append(out)
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = outputs
    return response, b"".join(blobs)


def infer(model: Model, request: InferRequest) -> tuple[dict[str, Any], bytes]:
    """Run the session; the V2 inference response (data flattened row-major) and the binary
    data of the outputs asked for as binary, in their order (empty when none)."""
    return infer_response(model, request, run_model(model, request.outputs, request.feeds))


# ---------------------------------------------------------------------------- metrics

ENDPOINTS = ("health_live", "health_ready", "server_metadata", "model_metadata",
             "model_ready", "infer", "metrics", "feedback", "other")
CODES = (200, 400, 404, 405, 408, 411, 413, 431, 500, 503)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# The buckets of gha_mlops_prediction_value (outputs of one float per instance): scores and
# probabilities in [0, 1] at 0.1, then a coarse tail for regressions. Fixed, so that every
# server's histograms add up.
VALUE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.5, 5.0, 10.0,
                 100.0, 1000.0)
MAX_TRACKED = 8  # outputs counted per class or by value (the first ones of the signature)
MAX_CLASSES = 64  # classes counted per output (the most frequent); the rest: class="other"
LOG_COUNTERS = ("logged", "sampled_out", "dropped", "bad", "write_errors",
                "feedback_written", "feedback_dropped", "feedback_bad")
_REQ = 0
_HIST = len(ENDPOINTS) * len(CODES)        # one slot per bucket, then +Inf
_HIST_SUM = _HIST + len(BUCKETS) + 1
_LOADED = _HIST_SUM + 1
_LOG = _LOADED + 1
_PRED = _LOG + len(LOG_COUNTERS)
# Per tracked output: MAX_CLASSES class counts, "other", the number of classes used; or
# the value histogram's buckets (+Inf last) and its sum.
_PER_OUT = MAX_CLASSES + 2
SLOTS = _PRED + MAX_TRACKED * _PER_OUT
_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                        "UINT64"})
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})


def tracked_outputs(outputs: tuple[Tensor, ...]) -> tuple[tuple[str, str], ...]:
    """``(name, "class" | "value")`` of the outputs holding one integer (counted per class)
    or one float (a histogram) per instance: shape ``[batch]`` or ``[batch, 1]``."""
    found = []
    for t in outputs:
        if len(t.shape) not in (1, 2) or (len(t.shape) == 2 and t.shape[1] != 1):
            continue
        if t.datatype in _INT_TYPES:
            found.append((t.name, "class"))
        elif t.datatype in _FLOAT_TYPES:
            found.append((t.name, "value"))
    return tuple(found[:MAX_TRACKED])


class Metrics:
    """Counters of every worker in one shared anonymous mmap (made before the fork), one row
    per worker: a worker only ever writes its own row, so no locks are needed; reads sum.
    The class values a worker has seen live in a second shared map beside its row (int64),
    so /metrics can add up the classes of workers that met them in different orders."""

    def __init__(self, workers: int) -> None:
        rows = max(1, workers)
        self._map = mmap.mmap(-1, rows * SLOTS * 8)
        self.table = np.frombuffer(self._map, dtype=np.float64).reshape(rows, SLOTS)
        self._keys_map = mmap.mmap(-1, rows * MAX_TRACKED * MAX_CLASSES * 8)
        self.keys = np.frombuffer(self._keys_map, dtype=np.int64).reshape(
            rows, MAX_TRACKED, MAX_CLASSES)
        self.index = 0
        self.row = self.table[0]
        self.tracked: tuple[tuple[str, str], ...] = ()
        self.logging = False
        self._classes: list[dict[int, int]] = []

    def use_row(self, worker: int) -> None:
        self.index, self.row = worker, self.table[worker]

    def track(self, outputs: tuple[tuple[str, str], ...], logging: bool) -> None:
        """What to count: the same in every worker (the same model)."""
        self.tracked, self.logging = outputs, logging
        self._classes = [{} for _ in outputs]

    def count(self, endpoint: int, status: int) -> None:
        code = CODES.index(status) if status in CODES else CODES.index(500)
        self.row[_REQ + endpoint * len(CODES) + code] += 1

    def observe(self, seconds: float) -> None:
        bucket = len(BUCKETS)
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                bucket = i
                break
        self.row[_HIST + bucket] += 1
        self.row[_HIST_SUM] += seconds

    def observe_outputs(self, arrays: dict[str, np.ndarray]) -> None:
        """Count the predictions of the tracked outputs in ``arrays``."""
        for o, (name, kind) in enumerate(self.tracked):
            array = arrays.get(name)
            if array is None or not array.size:
                continue
            base = _PRED + o * _PER_OUT
            if kind == "class":
                if array.size == 1:
                    self._count_class(o, base, int(array.ravel()[0]), 1)
                else:
                    values, counts = np.unique(array, return_counts=True)
                    for value, n in zip(values.tolist(), counts.tolist(), strict=True):
                        self._count_class(o, base, int(value), n)
                continue
            values = array.ravel().astype(np.float64)
            values = values[np.isfinite(values)]  # NaN has no bucket; inf would poison _sum
            slots = np.searchsorted(VALUE_BUCKETS, values, side="left")  # value <= bound
            np.add.at(self.row, base + slots, 1.0)
            self.row[base + len(VALUE_BUCKETS) + 1] += float(values.sum())

    def _count_class(self, o: int, base: int, value: int, n: int) -> None:
        slots = self._classes[o]
        slot = slots.get(value)
        if slot is None:
            if len(slots) < MAX_CLASSES and -2**63 <= value < 2**63:
                slot = slots[value] = len(slots)
                self.keys[self.index, o, slot] = value  # the key first, then the count
                self.row[base + MAX_CLASSES + 1] = len(slots)
            else:
                slot = MAX_CLASSES
        self.row[base + slot] += n

    def publish_log(self, counts: tuple[int, ...]) -> None:
        """This worker's log counters (in the order of LOG_COUNTERS)."""
        self.row[_LOG:_LOG + len(LOG_COUNTERS)] = counts

    def set_loaded(self, loaded: bool) -> None:
        self.row[_LOADED] = 1.0 if loaded else 0.0

    def render(self, model_name: str, model_version: str) -> bytes:
        """Prometheus text exposition (format 0.0.4) of the sums over all workers."""
        total = self.table.sum(axis=0)
        out = ["# HELP oip_requests_total HTTP requests answered, by endpoint and status code.",
               "# TYPE oip_requests_total counter"]
        errors = []
        for e, endpoint in enumerate(ENDPOINTS):
            failed = 0.0
            for c, code in enumerate(CODES):
                n = total[_REQ + e * len(CODES) + c]
                if n or (endpoint == "infer" and code == 200):
                    out.append(f'oip_requests_total{{endpoint="{endpoint}",code="{code}"}} '
                               f"{n:.0f}")
                failed += n if code >= 400 else 0
            errors.append(f'oip_request_errors_total{{endpoint="{endpoint}"}} {failed:.0f}')
        out += ["# HELP oip_request_errors_total Requests answered with a 4xx or 5xx status.",
                "# TYPE oip_request_errors_total counter", *errors]
        out += ["# HELP oip_inference_duration_seconds Time to parse, run and answer an "
                "inference request that succeeded.",
                "# TYPE oip_inference_duration_seconds histogram"]
        cumulative = 0.0
        for i, bound in enumerate((*BUCKETS, "+Inf")):
            cumulative += total[_HIST + i]
            out.append(f'oip_inference_duration_seconds_bucket{{le="{bound}"}} {cumulative:.0f}')
        out += [f"oip_inference_duration_seconds_sum {total[_HIST_SUM]:.6f}",
                f"oip_inference_duration_seconds_count {cumulative:.0f}"]
        loaded = int(bool(np.all(self.table[:, _LOADED] == 1.0)))
        labels = f'model="{_label(model_name)}",version="{_label(model_version)}"'
        out += ["# HELP oip_model_loaded 1 when every worker has loaded and warmed up the model.",
                "# TYPE oip_model_loaded gauge", f"oip_model_loaded{{{labels}}} {loaded}",
                "# HELP oip_workers_loaded Worker processes holding the loaded model.",
                "# TYPE oip_workers_loaded gauge",
                f"oip_workers_loaded {self.table[:, _LOADED].sum():.0f}"]
        out += self._render_predictions(total)
        if self.logging:
            out += _render_log(total[_LOG:_LOG + len(LOG_COUNTERS)])
        return ("\n".join(out) + "\n").encode()

    def _classes_of(self, o: int) -> tuple[list[tuple[int, float]], float]:
        """The (class, count) pairs of output ``o`` over all workers, at most MAX_CLASSES
        (the most frequent), and the count of the rest."""
        base = _PRED + o * _PER_OUT
        merged: dict[int, float] = {}
        other = float(self.table[:, base + MAX_CLASSES].sum())
        for w in range(self.table.shape[0]):
            used = min(int(self.table[w, base + MAX_CLASSES + 1]), MAX_CLASSES)
            for slot, key in enumerate(self.keys[w, o, :used].tolist()):
                merged[key] = merged.get(key, 0.0) + float(self.table[w, base + slot])
        ranked = sorted(merged, key=lambda k: (-merged[k], k))
        other += sum(merged[k] for k in ranked[MAX_CLASSES:])
        return sorted((k, merged[k]) for k in ranked[:MAX_CLASSES]), other

    def _render_predictions(self, total: np.ndarray) -> list[str]:
        classes = [(o, name) for o, (name, kind) in enumerate(self.tracked) if kind == "class"]
        values = [(o, name) for o, (name, kind) in enumerate(self.tracked) if kind == "value"]
        out: list[str] = []
        if classes:
            out += ["# HELP gha_mlops_predictions_total Predictions by output and class (the "
                    f"{MAX_CLASSES} most frequent classes of an output; the rest as other).",
                    "# TYPE gha_mlops_predictions_total counter"]
        for o, name in classes:
            pairs, other = self._classes_of(o)
            out += [f'gha_mlops_predictions_total{{output="{_label(name)}",class="{k}"}} '
                    f"{n:.0f}" for k, n in pairs]
            if other:
                out.append(f'gha_mlops_predictions_total{{output="{_label(name)}",'
                           f'class="other"}} {other:.0f}')
        if values:
            out += ["# HELP gha_mlops_prediction_value Predicted values of the outputs with "
                    "one float per instance (non-finite values are not counted).",
                    "# TYPE gha_mlops_prediction_value histogram"]
        for o, name in values:
            base, label = _PRED + o * _PER_OUT, _label(name)
            cumulative = 0.0
            for i, bound in enumerate((*VALUE_BUCKETS, "+Inf")):
                cumulative += total[base + i]
                out.append(f'gha_mlops_prediction_value_bucket{{output="{label}",le="{bound}"}}'
                           f" {cumulative:.0f}")
            out += [f'gha_mlops_prediction_value_sum{{output="{label}"}} '
                    f"{total[base + len(VALUE_BUCKETS) + 1]:.6f}",
                    f'gha_mlops_prediction_value_count{{output="{label}"}} {cumulative:.0f}']
        return out


def _render_log(counts: np.ndarray) -> list[str]:
    c = dict(zip(LOG_COUNTERS, counts.tolist(), strict=True))
    return [
        "# HELP gha_mlops_predlog_rows_total Instances offered to the prediction log, by "
        "outcome (logged: written to the sink; sampled_out; dropped: queue full, sink failed "
        "or stopping; bad: could not be encoded).",
        "# TYPE gha_mlops_predlog_rows_total counter",
        *(f'gha_mlops_predlog_rows_total{{outcome="{k}"}} {c[k]:.0f}'
          for k in ("logged", "sampled_out", "dropped", "bad")),
        "# HELP gha_mlops_predlog_write_errors_total Batches the sink failed to store "
        "(prediction log and feedback).",
        "# TYPE gha_mlops_predlog_write_errors_total counter",
        f"gha_mlops_predlog_write_errors_total {c['write_errors']:.0f}",
        "# HELP gha_mlops_feedback_labels_total Labels received on the feedback route, by "
        "outcome.",
        "# TYPE gha_mlops_feedback_labels_total counter",
        *(f'gha_mlops_feedback_labels_total{{outcome="{k}"}} {c["feedback_" + k]:.0f}'
          for k in ("written", "dropped", "bad"))]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ---------------------------------------------------------------------------- prediction log

MAX_FEEDBACK = 1000  # labels in one feedback request
LOG_FLUSH_S = 10.0  # how long a graceful stop waits for the sink to take the last batches
_PW: Any = None


def predlog_writer() -> Any:
    """The module predlog_writer.py, loaded by path: beside this file in the image
    (``/app``), in ``../monitor/`` in the source tree. By path, not by import, because this
    file never imports gha_mlops (see the module docstring); ModelError if neither is there."""
    global _PW
    if _PW is None:
        here = Path(__file__).resolve().parent
        for candidate in (here / "predlog_writer.py", here.parent / "monitor" / "predlog_writer.py"):
            if candidate.is_file():
                spec = importlib.util.spec_from_file_location("predlog_writer", candidate)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules.setdefault("predlog_writer", module)  # dataclasses look it up
                spec.loader.exec_module(module)
                _PW = module
                break
        else:
            raise ModelError(f"--log needs predlog_writer.py beside {here / 'oip_server.py'} "
                             "(the serving image has it): rebuild the image with gha-mlops "
                             "package")
    return _PW


@dataclass(frozen=True)
class LogConfig:
    """Where and how much to log: ``target`` a directory or ``s3://bucket[/prefix]``; the
    fraction of instances kept; a batch is cut at ``batch_rows`` rows or ``batch_age_s``
    seconds; ``environ`` holds the AWS_* settings of an S3 target."""

    target: str
    sample: float = 0.1
    batch_rows: int = 1000
    batch_age_s: float = 5.0
    environ: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)  # secrets


class PredLog:
    """The prediction log and feedback writers of one worker, for one model.

    Request ids: the request's ``id`` when it is a string of 1 to 128 characters (and, for
    a batch of N > 1 instances, ``<id>:<N-1>`` still fits 128); otherwise a generated one
    (``<12 hex of this worker>-<counter in hex>``). Either way the response's ``id`` is it.
    A batch's instances are logged as ``<id>`` (one instance) or ``<id>:<i>`` (i from 0):
    feedback names the instance the same way."""

    def __init__(self, config: LogConfig, model: Model) -> None:
        pw = predlog_writer()
        tensors = (*model.inputs, *model.outputs)
        flat = [t.name for t in tensors if not t.shape]
        if flat:
            raise ModelError(f"--log: the tensors {flat} have no batch dimension; the "
                             "prediction log needs one row per instance")
        schema = {"inputs": {t.name: [t.datatype, list(t.shape)] for t in model.inputs},
                  "outputs": {t.name: [t.datatype, list(t.shape)] for t in model.outputs}}
        try:
            sink = pw.open_sink(config.target, dict(config.environ))
            self.rows = pw.BatchWriter(sink, model.name, model.version, schema,
                                       max_rows=config.batch_rows, max_age_s=config.batch_age_s,
                                       sample=config.sample)
            self.feedback = pw.FeedbackWriter(sink, model.name, max_rows=config.batch_rows,
                                              max_age_s=config.batch_age_s)
        except ValueError as err:
            raise ModelError(f"--log {config.target}: {err}") from err
        self.id_ok, self.label_ok = pw.id_ok, pw.label_ok
        self._prefix = os.urandom(6).hex() + "-"
        self._serial = itertools.count(1)
        self.unloggable = 0  # instances of requests whose tensors disagree on the batch size

    def request_id(self, given: str | None, n: int) -> str:
        """The id of a request of ``n`` instances (see the class docstring)."""
        if given and len(given) + (len(str(n - 1)) + 1 if n > 1 else 0) <= 128:
            return given
        return f"{self._prefix}{next(self._serial):x}"

    def log(self, request_id: str, feeds: dict[str, np.ndarray],
            arrays: dict[str, np.ndarray], t: float) -> None:
        """Offer every instance of one answered request to the log (sampled); never raises,
        never waits on I/O. Only sampled instances are sliced and encoded."""
        first = next(iter(feeds.values()))
        n = first.shape[0] if first.ndim else 0
        if any(v.ndim == 0 or v.shape[0] != n for v in (*feeds.values(), *arrays.values())):
            self.unloggable += n or 1
            return
        rows = self.rows
        for i in range(n):
            if rows.sampled():
                rows.add(request_id if n == 1 else f"{request_id}:{i}",
                         {k: v[i] for k, v in feeds.items()},
                         {k: v[i] for k, v in arrays.items()}, t, presampled=True)

    def counters(self) -> tuple[int, ...]:
        """The counts of LOG_COUNTERS."""
        r, f = self.rows, self.feedback
        return (r.written_rows, r.rows_seen - r.rows_sampled, r.dropped_rows,
                r.bad_rows + self.unloggable, r.write_errors + f.write_errors,
                f.written_rows, f.dropped_rows, f.bad_rows)

    def close(self, timeout: float) -> None:
        """Flush what is batched and stop the writers (a graceful stop)."""
        self.rows.close(timeout)
        self.feedback.close(timeout)


def parse_feedback(body: bytes, pred: PredLog) -> list[tuple[str, Any]]:
    """``(id, label)`` pairs of a feedback body: ``{"id", "label"}`` or ``{"feedback":
    [{"id", "label"}, ...]}`` (1 to MAX_FEEDBACK); every pair must be one the reader keeps,
    else BadRequest(400) naming it (and nothing is written)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise BadRequest(400, 'the body is not JSON (feedback is {"id": ..., "label": ...} '
                         'or {"feedback": [{"id", "label"}, ...]})') from err
    if isinstance(doc, dict) and set(doc) == {"feedback"}:
        items, where = doc["feedback"], "feedback[{}]"
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_FEEDBACK:
            raise BadRequest(400, f"feedback must be a list of 1 to {MAX_FEEDBACK} "
                             "{id, label} objects")
    else:
        items, where = [doc], "the body"
    pairs = []
    for i, item in enumerate(items):
        at = where.format(i)
        if not isinstance(item, dict) or set(item) != {"id", "label"}:
            raise BadRequest(400, f"{at} must be an object with exactly 'id' and 'label'")
        if not pred.id_ok(item["id"]):
            raise BadRequest(400, f"{at}: id must be a string of 1 to 128 characters (the "
                             "id an inference response carried, ':<i>' added for the i-th "
                             "instance of a batch)")
        if not pred.label_ok(item["label"]):
            raise BadRequest(400, f"{at}: label must be a string of at most 1024 characters, "
                             "an integer, a boolean or a finite number")
        pairs.append((item["id"], item["label"]))
    return pairs


# ---------------------------------------------------------------------------- routing

REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
           413: "Content Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}
JSON_TYPE = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Response:
    """What a handler answers: status, body, content type, and the endpoint it counts as."""

    status: int
    body: bytes
    endpoint: int
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps builds one per call


def _json(status: int, doc: Any, endpoint: str) -> Response:
    return Response(status, _ENCODE(doc).encode(), ENDPOINTS.index(endpoint))


def error_response(status: int, message: str, endpoint: str = "other") -> Response:
    """``{"error": message}`` with ``status``."""
    return _json(status, {"error": message}, endpoint)


class App:
    """The routes of the V2 REST protocol over one model (None until loaded and warmed up),
    and with ``log`` the prediction log and the feedback route."""

    def __init__(self, metrics: Metrics, name: str = "", version: str = "",
                 log: LogConfig | None = None) -> None:
        self.metrics = metrics
        self.model: Model | None = None
        self.name, self.version = name, version
        self.log_config = log
        self.predlog: PredLog | None = None
        self._wanted: list[str] = []  # outputs every inference runs (tracked or logged)
        self._live = _json(200, {"live": True}, "health_live")
        self._server = _json(200, {"name": SERVER_NAME, "version": SERVER_VERSION,
                                   "extensions": ["binary_tensor_data"]}, "server_metadata")

    def set_model(self, model: Model) -> None:
        """Serve ``model`` (and open its prediction log when configured: ModelError if the
        log cannot be opened)."""
        if self.log_config is not None:
            self.predlog = PredLog(self.log_config, model)
        tracked = tracked_outputs(model.outputs)
        self.metrics.track(tracked, logging=self.predlog is not None)
        self._wanted = [t.name for t in model.outputs] if self.predlog else [n for n, _ in tracked]
        self.model, self.name, self.version = model, model.name, model.version
        self.metrics.set_loaded(True)

    def publish(self) -> None:
        """Copy this worker's log counters where every worker's /metrics reads them."""
        if self.predlog is not None:
            self.metrics.publish_log(self.predlog.counters())

    def close(self, timeout: float = 10.0) -> None:
        """Flush and stop the prediction log (a graceful stop)."""
        if self.predlog is not None:
            self.predlog.close(timeout)
            self.publish()

    def handle(self, method: str, target: str, body: bytes,
               json_length: int | None = None) -> Response:
        """Answer one request; never raises for anything a client can send."""
        path = target.split("?", 1)[0]
        if path == "/v2/health/live":
            return self._get(method, "health_live") or self._live
        if path == "/v2/health/ready":
            return self._get(method, "health_ready") or _json(
                200 if self.model else 503, {"ready": self.model is not None}, "health_ready")
        if path in ("/v2", "/v2/"):
            return self._get(method, "server_metadata") or self._server
        if path == "/metrics":
            self.publish()
            return self._get(method, "metrics") or Response(
                200, self.metrics.render(self.name, self.version), ENDPOINTS.index("metrics"),
                METRICS_TYPE)
        if path.startswith("/v2/models/"):
            return self._model_route(method, path[len("/v2/models/"):], body, json_length)
        return error_response(404, f"no such endpoint: {path[:200]!r} (see GET /v2)")

    @staticmethod
    def _get(method: str, endpoint: str) -> Response | None:
        if method == "GET":
            return None
        return error_response(405, f"{endpoint} answers GET, not {method}", endpoint)

    def _model_route(self, method: str, rest: str, body: bytes,
                     json_length: int | None) -> Response:
        action = "metadata"
        for suffix in ("/infer", "/ready", "/feedback"):
            if rest.endswith(suffix):
                action, rest = suffix[1:], rest[: -len(suffix)]
                break
        endpoint = {"metadata": "model_metadata", "ready": "model_ready",
                    "infer": "infer", "feedback": "feedback"}[action]
        name, _, version = rest.partition("/versions/")
        name, version = unquote(name), unquote(version)
        if self.model is None:
            return error_response(503, "the model is not loaded yet: wait for "
                                  "/v2/health/ready", endpoint)
        if name != self.model.name or (version and version != self.model.version):
            return error_response(404, f"no model {name[:200]!r}" + (
                f" version {version[:100]!r}" if version else "") + f": this server serves "
                f"{self.model.name!r} version {self.model.version!r}", endpoint)
        wanted = "POST" if action in ("infer", "feedback") else "GET"
        if method != wanted:
            return error_response(405, f"{rest[:200]}/{action} answers {wanted}, not "
                                  f"{method}", endpoint)
        if action == "metadata":
            return _json(200, self.model.metadata(), endpoint)
        if action == "ready":
            return _json(200, {"name": self.model.name, "ready": True}, endpoint)
        if action == "feedback":
            return self._feedback(body)
        return self._infer(body, json_length)

    def _feedback(self, body: bytes) -> Response:
        if self.predlog is None:
            return error_response(404, "feedback goes to the prediction log, which this "
                                  "server does not keep: start it with --log DIR|s3://BUCKET"
                                  "/PREFIX (or PREDLOG=...)", "feedback")
        try:
            pairs = parse_feedback(body, self.predlog)
        except BadRequest as err:
            return error_response(err.status, err.message, "feedback")
        t = time.time()
        accepted = sum(self.predlog.feedback.add(rid, label, t) for rid, label in pairs)
        return _json(200, {"accepted": accepted}, "feedback")

    def _infer(self, body: bytes, json_length: int | None) -> Response:
        assert self.model is not None
        start = time.perf_counter()
        try:
            request = parse_infer_request(body, self.model, json_length)
            if self.predlog is not None:
                first = next(iter(request.feeds.values()))
                request = dataclasses.replace(request, id=self.predlog.request_id(
                    request.id, first.shape[0] if first.ndim else 1))
            names = request.outputs + [n for n in self._wanted if n not in request.outputs]
            arrays = run_model(self.model, names, request.feeds)
            response, blob = infer_response(self.model, request, arrays)
        except BadRequest as err:
            return error_response(err.status, err.message, "infer")
        except Exception as err:  # the one boundary: a model failure is a 500, never a crash
            return error_response(500, f"inference failed: {type(err).__name__}: {err}",
                                  "infer")
        answer = _json(200, response, "infer")
        self.metrics.observe_outputs(arrays)
        if self.predlog is not None:
            assert request.id is not None
            self.predlog.log(request.id, request.feeds, arrays, time.time())
        if blob:
            answer = Response(200, answer.body + blob, answer.endpoint,
                              "application/octet-stream",
                              (("Inference-Header-Content-Length", str(len(answer.body))),))
        self.metrics.observe(time.perf_counter() - start)
        return answer


# ---------------------------------------------------------------------------- HTTP/1.1


@dataclass(frozen=True)
class Limits:
    """The bounds on what one client can make the server hold or wait for."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout: float = 10.0      # from a request's first byte to its last
    keep_alive_timeout: float = 75.0   # an idle connection between requests
    linger: float = 5.0                # reading and dropping a refused body before closing
    max_connections: int = 1024        # per worker; more get 503 and are closed


@dataclass(frozen=True)
class Head:
    """A parsed request head: what the connection needs to read the body and answer."""

    method: str
    target: str
    length: int
    keep_alive: bool
    http10: bool = False
    expect_continue: bool = False
    json_length: int | None = None  # Inference-Header-Content-Length (binary extension)


def parse_head(raw: bytes, limits: Limits) -> Head:
    """Parse a request head (without its final CRLF CRLF) strictly; BadRequest with 400
    (malformed), 411 (chunked, or a POST without Content-Length), 413 (body over the limit)
    or 431 (too many header lines). Strict parsing also closes request-smuggling gaps:
    space before a colon, obsolete line folding and conflicting lengths are refused."""
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) == 3 and parts[1][:7].lower() in (b"http://", b"https:/"):
        # the absolute form (RFC 9112 3.2.2), which a server must accept: keep the path
        path_start = parts[1].find(b"/", parts[1].find(b"//") + 2)
        parts[1] = parts[1][path_start:] if path_start > 0 else b"/"
    if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper() \
            or not parts[1].startswith(b"/") or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest(400, "malformed request line: expected 'METHOD /path HTTP/1.1'")
    if len(lines) - 1 > limits.max_headers:
        raise BadRequest(431, f"more than {limits.max_headers} header lines")
    length: int | None = None
    chunked = expect = False
    json_length: int | None = None
    connection = b""
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            raise BadRequest(400, "malformed header line: expected 'Name: value'")
        name, value = name.lower(), value.strip()
        if name == b"content-length":
            if not value.isdigit() or (length is not None and length != int(value[:19])):
                raise BadRequest(400, "Content-Length must be one decimal number")
            length = int(value[:19]) if len(value) < 19 else limits.max_body_bytes + 1
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"connection":
            connection = value.lower()
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
        elif name == b"inference-header-content-length":
            if not value.isdigit() or len(value) > 18:
                raise BadRequest(400, "Inference-Header-Content-Length must be a number")
            json_length = int(value)
    method, http10 = parts[0].decode(), parts[2] == b"HTTP/1.0"
    if chunked or (length is None and method == "POST"):
        raise BadRequest(411, "send the body with a Content-Length header (chunked request "
                         "bodies are not supported)")
    if length is not None and length > limits.max_body_bytes:
        raise BadRequest(413, f"the body ({length} bytes) is over the limit of "
                         f"{limits.max_body_bytes} bytes (--max-body-bytes)")
    tokens = {t.strip() for t in connection.split(b",")}
    keep_alive = b"keep-alive" in tokens if http10 else b"close" not in tokens
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError as err:
        raise BadRequest(400, "the request target must be ASCII (percent-encode it)") from err
    return Head(method, target, length or 0, keep_alive, http10, expect, json_length)


def render_response(response: Response, keep_alive: bool, http10: bool = False) -> bytes:
    """The response bytes, head and body in one buffer (one write, one segment)."""
    connection = ("Connection: keep-alive\r\n" if http10 else "") if keep_alive \
        else "Connection: close\r\n"
    head = (f"HTTP/1.1 {response.status} {REASONS[response.status]}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n{connection}"
            + "".join(f"{k}: {v}\r\n" for k, v in response.headers) + "\r\n")
    return head.encode("ascii") + response.body


class Server:
    """What the connections of one worker share: the app, the limits, the open connections."""

    def __init__(self, app: App, limits: Limits) -> None:
        self.app, self.limits = app, limits
        self.connections: set[HttpConnection] = set()
        self.stopping = False

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time out slow and idle connections; a 1 s tick is cheaper than a timer per read."""
        now = time.monotonic()
        for conn in [c for c in self.connections if c.deadline < now]:
            conn.timed_out()
        self.app.publish()  # other workers' /metrics see this one's log counters within 1 s
        loop.call_later(1.0, self.sweep, loop)

    async def drain(self, grace: float) -> None:
        """Stop: close idle connections now, let requests in flight finish within ``grace``."""
        self.stopping = True
        for conn in list(self.connections):
            if conn.idle():
                conn.close()
        end = time.monotonic() + grace
        while self.connections and time.monotonic() < end:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()


class HttpConnection(asyncio.Protocol):
    """One client connection: reads request heads and bodies within the limits, answers in
    order (pipelining works), and stops reading while the client does not read answers."""

    def __init__(self, server: Server) -> None:
        self.server, self.limits = server, server.limits
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: Head | None = None
        self.deadline = time.monotonic() + self.limits.keep_alive_timeout
        self.paused = self.draining = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        full = len(self.server.connections) >= self.limits.max_connections
        self.server.connections.add(self)
        if full:
            self._refuse(503, f"over {self.limits.max_connections} open connections "
                         "(--max-connections): retry later")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()
            self._process()

    def data_received(self, data: bytes) -> None:
        if self.draining:
            return
        if not self.buf and self.head is None:
            self.deadline = time.monotonic() + self.limits.request_timeout
        self.buf += data
        if not self.paused:
            self._process()

    def idle(self) -> bool:
        return not self.buf and self.head is None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def timed_out(self) -> None:
        if self.draining or self.idle():
            self.close()
        else:
            self._refuse(408, f"the request did not arrive within {self.limits.request_timeout}"
                         " s (--request-timeout)")

    def _refuse(self, status: int, message: str) -> None:
        """Answer an error that ends the connection, then read and drop what the client still
        sends for a short while: closing with unread data would reset the connection and
        could destroy the answer before the client reads it."""
        if self.transport is None or self.draining:
            return
        response = error_response(status, message)
        self.transport.write(render_response(response, keep_alive=False))
        self.server.app.metrics.count(response.endpoint, status)
        self.draining, self.buf, self.head = True, bytearray(), None
        self.deadline = time.monotonic() + self.limits.linger
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()

    def _process(self) -> None:
        while not self.paused and self.transport is not None and not self.draining:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if (len(self.buf) if end < 0 else end + 4) > self.limits.max_header_bytes:
                    self._refuse(431, "the request head is over "
                                 f"{self.limits.max_header_bytes} bytes (--max-header-bytes)")
                    return
                if end < 0:
                    return
                try:
                    self.head = parse_head(bytes(self.buf[:end]), self.limits)
                except BadRequest as err:
                    self._refuse(err.status, err.message)
                    return
                del self.buf[:end + 4]
                if self.head.expect_continue and len(self.buf) < self.head.length:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            head = self.head
            if len(self.buf) < head.length:
                return
            body = bytes(self.buf[:head.length])
            del self.buf[:head.length]
            self.head = None
            self._answer(head, body)

    def _answer(self, head: Head, body: bytes) -> None:
        assert self.transport is not None
        response = self.server.app.handle(head.method, head.target, body, head.json_length)
        keep = head.keep_alive and not self.server.stopping
        self.transport.write(render_response(response, keep, head.http10))
        self.server.app.metrics.count(response.endpoint, response.status)
        if not keep:
            self.transport.close()
            self.transport = None
            return
        self.deadline = time.monotonic() + (
            self.limits.request_timeout if self.buf else self.limits.keep_alive_timeout)


# ---------------------------------------------------------------------------- processes


async def serve(sock: socket.socket, model_dir: Path, limits: Limits, metrics: Metrics,
                on_ready: Callable[[], None], log: LogConfig | None = None) -> int:
    """Serve on ``sock`` until SIGTERM/SIGINT: live at once, ready once the model is loaded
    (in a thread, so /v2/health/live answers meanwhile) and warmed up, and its prediction
    log opened when ``log`` is given. Returns the exit status: 0 after a graceful stop (the
    log flushed), 2 when the model cannot be served or its log cannot be opened."""
    loop = asyncio.get_running_loop()
    state = Server(App(metrics, log=log), limits)
    server = await loop.create_server(lambda: HttpConnection(state), sock=sock, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.call_later(1.0, state.sweep, loop)
    loading = loop.run_in_executor(None, load_model, model_dir)
    stopping = asyncio.ensure_future(stop.wait())
    pending: set[asyncio.Future[Any]] = {loading, stopping}
    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if loading.done():
        try:
            state.app.set_model(loading.result())
        except ModelError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            server.close()
            stopping.cancel()
            return 2
        on_ready()
        await stopping
    server.close()
    await state.drain(grace=5.0)
    # Off the loop: a slow sink must not stop the last answers from going out.
    await loop.run_in_executor(None, state.app.close, LOG_FLUSH_S)
    return 0


def _start_worker(index: int, sock: socket.socket, args: argparse.Namespace,
                  metrics: Metrics, ready_fd: int) -> int:
    """Fork one worker; in the child, serve and never return."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        metrics.use_row(index)

        def ready() -> None:
            os.write(ready_fd, b"1")
            os.close(ready_fd)

        code = asyncio.run(serve(sock, args.model_dir, _limits(args), metrics, ready,
                                 args.log_config))
    except BaseException as err:  # a child must never return into the parent's code
        print(f"error: worker {index}: {type(err).__name__}: {err}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _supervise(sock: socket.socket, args: argparse.Namespace, metrics: Metrics,
               url: str) -> int:
    """Fork ``--workers`` workers on the one listening socket, print the ready line once all
    are ready, forward SIGTERM/SIGINT, and stop the server if a worker dies unexpectedly
    (the container's restart policy, not this process, restarts it)."""
    parent = os.getpid()
    children: set[int] = set()
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        if os.getpid() != parent:  # a child that has not installed its own handler yet
            os._exit(0)
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    read_fd, write_fd = os.pipe()
    for index in range(args.workers):
        children.add(_start_worker(index, sock, args, metrics, write_fd))
    os.close(write_fd)
    got = b""
    while len(got) < args.workers:
        chunk = os.read(read_fd, args.workers)
        if not chunk:
            break
        got += chunk
    os.close(read_fd)
    if len(got) == args.workers and not stopping:
        print(f"ready on {url}", flush=True)
    status = 0
    while children:
        pid, wait_status = os.wait()
        children.discard(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if not stopping:
            print(f"error: worker process {pid} exited with status {code}: stopping the "
                  "server", file=sys.stderr, flush=True)
            status = code if code > 0 else 1
            stop(signal.SIGTERM, None)
        elif code and not status:
            status = code if code > 0 else 1
    return status


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(max_header_bytes=args.max_header_bytes, max_body_bytes=args.max_body_bytes,
                  request_timeout=args.request_timeout,
                  keep_alive_timeout=args.keep_alive_timeout,
                  max_connections=args.max_connections)


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0 (got {text})")
        return value
    return parse


def parse_args(argv: list[str] | None = None,
               environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The command line; argparse exits with status 2 and a usage line on a bad flag (or a
    bad PREDLOG* variable: flags win over variables, variables over the defaults)."""
    parser = argparse.ArgumentParser(
        prog="oip_server.py", description="Serve model.onnx over the Open Inference Protocol "
        "(KServe V2 REST).")
    parser.add_argument("--model-dir", type=Path, required=True,
                        help="folder with model.onnx and model.json")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument("--workers", type=_positive(int), default=1,
                        help="worker processes sharing the port (default 1)")
    parser.add_argument("--max-body-bytes", type=_positive(int), default=16 * 1024 * 1024,
                        help="largest request body accepted; larger: 413 (default 16 MiB)")
    parser.add_argument("--max-header-bytes", type=_positive(int), default=16 * 1024,
                        help="largest request head accepted; larger: 431 (default 16 KiB)")
    parser.add_argument("--request-timeout", type=_positive(float), default=10.0,
                        help="seconds a request may take to arrive; slower: 408 (default 10)")
    parser.add_argument("--keep-alive-timeout", type=_positive(float), default=75.0,
                        help="seconds an idle connection stays open (default 75)")
    parser.add_argument("--max-connections", type=_positive(int), default=1024,
                        help="open connections per worker; more get 503 (default 1024)")
    parser.add_argument("--log", metavar="DIR|s3://BUCKET[/PREFIX]",
                        help="keep the prediction log there and take feedback (env PREDLOG; "
                        "default: no log)")
    parser.add_argument("--log-sample", type=float, metavar="FRACTION",
                        help="fraction of instances logged, 0..1 (env PREDLOG_SAMPLE; "
                        "default 0.1)")
    parser.add_argument("--log-batch-rows", type=int, metavar="N",
                        help="rows per log file at most, 1..1000000 (env PREDLOG_BATCH_ROWS; "
                        "default 1000)")
    parser.add_argument("--log-batch-age", type=float, metavar="SECONDS",
                        help="seconds a log batch stays open at most, 0..3600 (env "
                        "PREDLOG_BATCH_AGE_S; default 5)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535 or args.workers > 64:
        parser.error("--port must be 0..65535 and --workers at most 64")
    try:
        args.log_config = log_config(args, os.environ if environ is None else environ)
    except (ValueError, ModelError) as err:
        parser.error(str(err))
    return args


# flag, variable, parse, default, bounds (inclusive; 0 excluded for the age)
_LOG_SETTINGS: tuple[tuple[str, str, Callable[[str], Any], Any, tuple[float, float]], ...] = (
    ("log_sample", "PREDLOG_SAMPLE", float, 0.1, (0.0, 1.0)),
    ("log_batch_rows", "PREDLOG_BATCH_ROWS", int, 1000, (1, 1_000_000)),
    ("log_batch_age", "PREDLOG_BATCH_AGE_S", float, 5.0, (1e-3, 3600.0)))


def log_config(args: argparse.Namespace, environ: Mapping[str, str]) -> LogConfig | None:
    """The prediction log's settings: each from its flag, else its environment variable,
    else the default; None without --log or PREDLOG. ValueError naming the flag or the
    variable that is wrong."""
    target = args.log if args.log is not None else environ.get("PREDLOG", "")
    if not target:
        return None
    values = []
    for attr, variable, kind, default, (low, high) in _LOG_SETTINGS:
        flag = "--" + attr.replace("_", "-")
        value, where = getattr(args, attr), flag
        if value is None and environ.get(variable):
            where = f"{variable}={environ[variable]!r}"
            try:
                value = kind(environ[variable])
            except ValueError as err:
                raise ValueError(f"{where} is not a number") from err
        value = default if value is None else value
        if not low <= value <= high or value != value:
            raise ValueError(f"{where}: {value} is out of range {low}..{high}")
        values.append(value)
    aws = tuple(sorted((k, v) for k, v in environ.items() if k.startswith("AWS_")))
    if target.startswith("s3://"):
        pw = predlog_writer()
        pw.S3Location.parse(target, dict(aws))  # a bad URL or region stops the start
        if not environ.get("AWS_ACCESS_KEY_ID") or not environ.get("AWS_SECRET_ACCESS_KEY"):
            raise ValueError(f"--log {target} needs AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY in the environment")
    return LogConfig(target, float(values[0]), int(values[1]), float(values[2]), aws)


def main(argv: list[str] | None = None) -> int:
    """Bind, then serve in this process (one worker) or in forked workers; exit status."""
    args = parse_args(argv)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        sock = socket.create_server((args.host, args.port), family=family, backlog=1024)
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror or err}",
              file=sys.stderr)
        return 2
    sock.setblocking(False)
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    metrics = Metrics(args.workers)
    if args.workers > 1:
        return _supervise(sock, args, metrics, url)
    return asyncio.run(serve(sock, args.model_dir, _limits(args), metrics,
                             lambda: print(f"ready on {url}", flush=True), args.log_config))


if __name__ == "__main__":
    sys.exit(main())
