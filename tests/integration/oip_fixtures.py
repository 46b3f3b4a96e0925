"""A tiny ONNX model for the OIP server's tests (no torch, no demo), and a server process.

The model: ``output = input @ W + B`` (FP32, input ``[-1, 4]``, output ``[-1, 3]``) and
``label = argmax(output, axis=1)`` (INT64, ``[-1]``), built with ``onnx.helper``.
"""

from __future__ import annotations

import hashlib
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from gha_mlops.packaging import oip_server

SERVER = Path(oip_server.__file__)
W = np.arange(12, dtype=np.float32).reshape(4, 3) / 2  # halves: outputs print exactly
B = np.array([0.5, -1.0, 2.0], dtype=np.float32)
SIGNATURE = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
             "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]},
                         {"name": "label", "datatype": "INT64", "shape": [-1]}]}


def write_model_dir(folder: Path, *, name: str = "tiny", version: str = "1.0.0") -> Path:
    """model.onnx and model.json (the contract's form) in ``folder``; returns ``folder``."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "B"], ["output"]),
         helper.make_node("ArgMax", ["output"], ["label"], axis=1, keepdims=0)],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        [helper.make_tensor("W", TensorProto.FLOAT, [4, 3], W.ravel().tolist()),
         helper.make_tensor("B", TensorProto.FLOAT, [3], B.tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    blob = model.SerializeToString()
    (folder / "model.onnx").write_bytes(blob)
    manifest = {"name": name, "version": version, "platform": "onnxruntime_onnx", **SIGNATURE,
                "sha256": hashlib.sha256(blob).hexdigest(), "run_id": "r1", "commit": "c" * 40}
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


@dataclass
class RunningServer:
    proc: subprocess.Popen[str]
    url: str

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)


@contextmanager
def running_server(model_dir: Path, *extra: str, timeout: float = 30.0
                   ) -> Iterator[RunningServer]:
    """Start the server file as a subprocess on a free port of 127.0.0.1; wait for its ready
    line; stop it with SIGTERM (and check it exits 0) when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--model-dir", str(model_dir), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        end = time.monotonic() + timeout
        line = ""
        while time.monotonic() < end and not line:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline()
                if not line:
                    break
        assert line.startswith("ready on http://"), (line, proc.poll(), proc.stderr and
                                                      proc.stderr.read())
        yield RunningServer(proc, line.split()[-1])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
