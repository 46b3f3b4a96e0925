"""Packaging a registered model: a portable ONNX export with its signature, and a service image.

Modules (each imports only the SDK it needs, lazily where it is heavy):

- :mod:`gha_mlops.packaging.signature`: the model's input/output signature (names, Open
  Inference Protocol datatypes, shapes with -1 for a dynamic dimension), read from an ONNX graph.
- :mod:`gha_mlops.packaging.export`: a model file (ONNX, torch.export ``.pt2``, TorchScript read
  only, scikit-learn pickle read with a restricted unpickler) to a checked ONNX file.
"""

from __future__ import annotations
