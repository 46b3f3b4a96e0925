"""A minimal MLServer runtime serving an ONNX file with onnxruntime (MLServer has no official
ONNX runtime), for bench_serving.py's side-by-side figures. Same session options as
oip_server.py (one intra-op thread, sequential), so the comparison is of the servers.

It runs inside MLServer's own venv (benchmarks/.venv-mlserver), never in ours.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):  # type: ignore[misc]  # MLServer is not installed in our venv
    """model-settings.json: ``"parameters": {"uri": "/abs/path/model.onnx"}``."""

    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(self.settings.parameters.uri, options,
                                             providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(
            model_name=self.name, model_version=self.version, id=payload.id,
            outputs=[NumpyCodec.encode_output(name, np.asarray(value))
                     for name, value in zip(self._outputs, results, strict=True)])
