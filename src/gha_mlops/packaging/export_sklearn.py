"""scikit-learn pickles to ONNX, read with a restricted unpickler.

A pickle is a program: ``pickle.load`` calls whatever callable the file names. A model file
from a pull request is hostile, so the unpickler resolves only

- classes defined in scikit-learn, numpy and scipy (the estimators, arrays, dtypes, sparse
  matrices), except ``numpy.memmap``, ``DataSource`` and ``NpzFile`` (they open files);
- numpy's universal functions (``numpy.log`` as a FunctionTransformer's ``func``);
- functions of scikit-learn (score functions, kernels), outside the modules that touch files,
  the network or run checks (``datasets``, ``utils._testing``, ``estimator_checks``...);
- the reconstruction functions numpy's and Python's own pickles use, and a few harmless
  builtins;

and refuses anything else by name, before it is called. joblib files (``.joblib``, compressed
or not) are read through joblib's unpickler with the same rule, which it also applies to
object arrays inside.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gha_mlops.errors import MissingExtraError, quoted
from gha_mlops.packaging.export import Converted, ExportError

_PACKAGES = ("sklearn", "numpy", "scipy")
# Module name parts whose functions read or write files, reach the network, or run code.
_DENIED_PARTS = {"testing", "tests", "_testing", "f2py", "distutils", "datasets", "externals",
                 "estimator_checks", "_show_versions", "ctypeslib", "_pytesttester", "io",
                 "_npyio_impl", "npyio", "format", "_datasource", "lib"}
_FUNCTIONS = {
    ("copyreg", "_reconstructor"), ("copyreg", "__newobj__"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__randomstate_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"), ("_codecs", "encode"),
}
_BUILTINS = {"slice", "set", "frozenset", "complex", "bytearray", "range", "object", "float",
             "int", "bool", "str", "bytes", "list", "dict", "tuple"}
_JOBLIB = {("joblib.numpy_pickle", "NumpyArrayWrapper"), ("joblib.numpy_pickle", "NDArrayWrapper")}


def allowed_global(module: str, name: str) -> Any:
    """The object ``module.name`` if the rule above allows unpickling it, else
    :class:`ExportError` naming it."""
    import importlib
    import types

    parts = module.split(".")
    ok = (module, name) in _FUNCTIONS or (module, name) in _JOBLIB or (
        module == "builtins" and name in _BUILTINS) or (
        parts[0] in _PACKAGES and not _DENIED_PARTS.intersection(parts)
        and not name.startswith("__"))
    obj = None
    if ok:
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            obj = None
    if obj is not None and parts[0] in _PACKAGES and (module, name) not in _FUNCTIONS:
        import numpy as np

        denied = tuple(t for t in (np.memmap, getattr(np, "DataSource", None),
                                   getattr(np.lib.npyio, "NpzFile", None)) if t is not None)
        ok = (isinstance(obj, type) and not issubclass(obj, denied)) or isinstance(
            obj, np.ufunc) or (parts[0] == "sklearn" and isinstance(obj, types.FunctionType))
    if not ok or obj is None:
        raise ExportError(
            f"the pickle names {quoted(f'{module}.{name}')}, which the restricted unpickler "
            "does not load: a model pickle may only use scikit-learn, numpy and scipy classes "
            "(loading anything else could run code)",
            hint="export the model to ONNX where it was trained (skl2onnx), or keep the "
                 "pickle to estimators and arrays (docs/model-export.md, 'scikit-learn')")
    return obj


def load_restricted(source: Path) -> Any:
    """The object in the pickle or joblib file ``source``, every global checked by
    :func:`allowed_global`."""
    try:
        from joblib.numpy_pickle import NumpyUnpickler  # type: ignore[import-untyped]
        from joblib.numpy_pickle_utils import (  # type: ignore[import-untyped]
            _validate_fileobject_and_memmap,
        )
    except ImportError as err:
        raise _missing_sklearn() from err

    class Restricted(NumpyUnpickler):  # type: ignore[misc]
        def find_class(self, module: str, name: str) -> Any:
            return allowed_global(module, name)

    with open(source, "rb") as fh, _validate_fileobject_and_memmap(fh, str(source)) as (f, _):
        if isinstance(f, str):  # joblib < 0.10 layout, read by code we cannot restrict
            raise ExportError(f"{source}: a joblib file older than joblib 0.10",
                              hint="re-save the model with a current joblib")
        try:
            return Restricted(str(source), f, ensure_native_byte_order=True).load()
        except ExportError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                KeyError, IndexError, MemoryError) as err:
            raise ExportError(f"{source}: not a readable pickle ({err})") from err


def _missing_sklearn() -> MissingExtraError:
    return MissingExtraError(
        "exporting a scikit-learn model needs scikit-learn and skl2onnx, which are not "
        "installed", hint="pip install 'gha-mlops[sklearn]'")


def from_sklearn_pickle(source: Path, check_inputs: Any | None) -> Converted:
    """A scikit-learn estimator (or pipeline) to ONNX with a float32 input ``input`` of
    shape ``[-1, n_features]``; classifiers give ``label`` and ``probabilities`` (no ZipMap:
    tensors only, as the Open Inference Protocol serves)."""
    try:
        import numpy as np
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
        from skl2onnx.common.exceptions import MissingShapeCalculator
        from sklearn.base import is_classifier
    except ImportError as err:
        raise _missing_sklearn() from err
    model = load_restricted(source)
    if not hasattr(model, "fit"):
        raise ExportError(f"{source}: the pickle holds a {type(model).__name__}, not a "
                          "scikit-learn estimator")
    n_features = getattr(model, "n_features_in_", None)
    if n_features is None and check_inputs is not None:
        n_features = np.asarray(check_inputs).shape[1]
    if not isinstance(n_features, int):
        raise ExportError(f"{source}: the estimator does not say how many features it takes",
                          hint="fit it with a current scikit-learn, or give check data")
    try:
        proto = to_onnx(model, initial_types=[("input", FloatTensorType([None, n_features]))],
                        options={"zipmap": False} if is_classifier(model) else None)
    except (MissingShapeCalculator, RuntimeError, ValueError, NotImplementedError) as err:
        raise ExportError(f"{source}: skl2onnx cannot convert a {type(model).__name__}: "
                          f"{str(err).splitlines()[0]}") from err
    if check_inputs is None:
        return Converted(proto.SerializeToString(), None, None)
    x = np.asarray(check_inputs, dtype=np.float32)
    return Converted(proto.SerializeToString(), _expected(model, x, len(proto.graph.output)),
                     [x])


def _expected(model: Any, x: Any, n_outputs: int) -> Sequence[Any]:
    """The estimator's own outputs, in skl2onnx's order: (label, probabilities) for a
    classifier, the prediction for a regressor, the transform for a transformer."""
    if hasattr(model, "predict_proba") and n_outputs == 2:
        return [model.predict(x), model.predict_proba(x)]
    if hasattr(model, "predict"):
        return [model.predict(x)]
    return [model.transform(x)]
