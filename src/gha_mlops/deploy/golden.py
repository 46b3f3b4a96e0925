"""Golden requests: inputs and the outputs the exported model gave for them, replayed against
a new backend before it takes any traffic (docs/deploy-gates.md).

``gha-mlops package`` writes them into the serving image at :data:`IMAGE_PATH` with
:func:`golden_doc` (the first rows of the model's check data and the exported model's
outputs for them); a rollout reads the file from the new container, validates it
(:func:`load_golden`: hostile by default, it comes out of an image) and replays it
(:func:`check_golden`). The file::

    {"format": "gha-mlops.golden/1", "atol": 1e-05, "rtol": 0.0001,
     "cases": [{"inputs": [[[0.5, 1.0, 2.0, 0.0]]],
                "outputs": [[[3.5, 4.0, 10.0]], [2]]}]}

Each case holds one nested list per model input and per output, in the order of the model's
metadata, each a batch of one. A float output matches when ``|got - want| <= atol + rtol *
|want|``; integers, booleans and strings must be equal.

Pure Python: numpy arrays are accepted through their ``tolist()``, numpy is never imported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gha_mlops.deploy import probe
from gha_mlops.deploy.errors import DeployError
from gha_mlops.errors import GhaMlopsError

FORMAT = "gha-mlops.golden/1"
IMAGE_PATH = "/model/golden.json"
MAX_BYTES = 4 * 1024 * 1024
MAX_CASES = 64
MAX_DEPTH = 16  # dimensions of one tensor
MAX_FAILURE_LINES = 5
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})
_HINT = ("re-package the model (`gha-mlops package` writes golden.json), or set golden: "
         "false for the environment to deploy without golden requests")


@dataclass(frozen=True)
class GoldenCase:
    """One golden request: a nested list per model input, and the expected nested list per
    model output, both in the model metadata's order."""

    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]


@dataclass(frozen=True)
class GoldenSet:
    """The validated contents of a golden.json: its cases and tolerances."""

    cases: tuple[GoldenCase, ...]
    atol: float
    rtol: float


@dataclass(frozen=True)
class GoldenReport:
    """How a replay went: the number of ``cases`` sent, the ``failures``, one line each (at
    most :data:`MAX_FAILURE_LINES`, then one line counting the rest), and how many cases
    ``failed`` (all of them, shown or not; left out: one per line)."""

    cases: int
    failures: tuple[str, ...]
    failed: int = -1

    def __post_init__(self) -> None:
        if self.failed < 0:
            object.__setattr__(self, "failed", len(self.failures))

    @property
    def passed(self) -> bool:
        return not self.failures


# ---------------------------------------------------------------------------- tensors


def _kind(value: Any) -> str | None:
    """``bool``, ``number`` (finite), ``string``; None for anything else."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _shape(value: Any, where: str) -> tuple[tuple[int, ...], list[Any]]:
    """The shape and row-major values of a nested list: rectangular, at most
    :data:`MAX_DEPTH` deep, at least one value, all numbers, all booleans or all strings;
    DeployError naming ``where`` otherwise. Iterative: depth costs no recursion."""
    if not isinstance(value, list):
        raise DeployError(f"{where}: expected a nested list of values, got "
                          f"{type(value).__name__}", hint=_HINT)
    shape: list[int] = []
    level: list[Any] = [value]
    while level and isinstance(level[0], list):
        if len(shape) >= MAX_DEPTH:
            raise DeployError(f"{where}: nested deeper than {MAX_DEPTH} levels", hint=_HINT)
        size = len(level[0])
        if any(not isinstance(item, list) or len(item) != size for item in level):
            raise DeployError(f"{where}: not a rectangular array (rows of different lengths "
                              f"at depth {len(shape)})", hint=_HINT)
        shape.append(size)
        level = [x for item in level for x in item]
    if not level:
        raise DeployError(f"{where}: holds no values (shape {shape})", hint=_HINT)
    kinds = {_kind(x) for x in level}
    if None in kinds:
        bad = next(x for x in level if _kind(x) is None)
        raise DeployError(f"{where}: holds {_show(bad)} ({type(bad).__name__}); values must "
                          "be finite numbers, booleans or strings (rectangular, no mixed "
                          "depths)", hint=_HINT)
    if len(kinds) > 1:
        raise DeployError(f"{where}: mixes {' and '.join(sorted(k for k in kinds if k))}; "
                          "one tensor holds one kind of value", hint=_HINT)
    return tuple(shape), level


def _show(value: Any, limit: int = 60) -> str:
    text = f"{value:.9g}" if isinstance(value, float) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _rows(value: Any) -> list[Any]:
    rows = value.tolist() if hasattr(value, "tolist") else value
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        raise GhaMlopsError(f"golden requests: expected an array with one row per example, "
                            f"got {type(value).__name__}")
    return list(rows)


def golden_doc(inputs: Sequence[Any], outputs: Sequence[Any], *, atol: float, rtol: float,
               cases: int = 8) -> dict[str, Any]:
    """The golden.json document for ``inputs`` and ``outputs`` (one array-like per model
    input and output, in the signature's order, rows first: numpy arrays or nested lists):
    case ``i`` is row ``i`` of each, as a batch of one.

    At most ``cases`` cases (1..:data:`MAX_CASES`), fewer when there are fewer rows; a row
    with a value JSON cannot carry (NaN, infinity) is skipped, and so are the rows that would
    take the file over :data:`MAX_BYTES` (a model with large inputs may get none: the replay
    then checks nothing and says so). GhaMlopsError on nonsense arguments."""
    if not (math.isfinite(atol) and atol >= 0 and math.isfinite(rtol) and rtol >= 0):
        raise GhaMlopsError(f"golden requests: atol ({atol}) and rtol ({rtol}) must be "
                            "finite and >= 0")
    if not 1 <= cases <= MAX_CASES or not inputs or not outputs:
        raise GhaMlopsError(f"golden requests: need 1..{MAX_CASES} cases (got {cases}) and "
                            "at least one input and one output")
    columns = [_rows(x) for x in (*inputs, *outputs)]
    doc: dict[str, Any] = {"format": FORMAT, "atol": atol, "rtol": rtol, "cases": []}
    size = len(json.dumps(doc))
    for i in range(min(len(c) for c in columns)):
        if len(doc["cases"]) >= cases:
            break
        tensors = [[column[i]] for column in columns]
        try:
            for k, tensor in enumerate(tensors):
                _shape(tensor, f"row {i} of array {k}")
            text = json.dumps(tensors, allow_nan=False)
        except (DeployError, ValueError):
            continue  # NaN, infinity or an odd value: this row cannot be a golden case
        if size + len(text) + 40 > MAX_BYTES:
            break
        size += len(text) + 40
        doc["cases"].append({"inputs": tensors[:len(inputs)], "outputs": tensors[len(inputs):]})
    return doc


# ---------------------------------------------------------------------------- loading


def _tolerance(doc: dict[str, Any], key: str, where: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise DeployError(f"{where}: {key} must be a number >= 0 (got {_show(value)})",
                          hint=_HINT)
    return float(value)


def _case(item: Any, where: str, counts: tuple[int, int] | None) -> GoldenCase:
    if not isinstance(item, dict):
        raise DeployError(f"{where}: expected an object with inputs and outputs", hint=_HINT)
    tensors: dict[str, tuple[Any, ...]] = {}
    for key in ("inputs", "outputs"):
        value = item.get(key)
        if not isinstance(value, list) or not value:
            raise DeployError(f"{where}.{key}: expected a non-empty list (one nested list per "
                              f"model {key[:-1]})", hint=_HINT)
        for k, tensor in enumerate(value):
            _shape(tensor, f"{where}.{key}[{k}]")
        tensors[key] = tuple(value)
    if counts is not None and (len(tensors["inputs"]), len(tensors["outputs"])) != counts:
        raise DeployError(f"{where}: has {len(tensors['inputs'])} inputs and "
                          f"{len(tensors['outputs'])} outputs; the first case has "
                          f"{counts[0]} and {counts[1]}", hint=_HINT)
    return GoldenCase(tensors["inputs"], tensors["outputs"])


def load_golden(data: bytes, *, where: str) -> GoldenSet:
    """Validate golden.json's bytes into a GoldenSet; DeployError naming ``where`` and the
    key when they are over :data:`MAX_BYTES`, not JSON, of another format, or hold more than
    :data:`MAX_CASES` cases or a tensor that is not a rectangular nested list (at most
    :data:`MAX_DEPTH` deep) of finite numbers, booleans or strings."""
    if len(data) > MAX_BYTES:
        raise DeployError(f"{where}: {len(data)} bytes, over the limit of {MAX_BYTES}",
                          hint=_HINT)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise DeployError(f"{where}: not JSON ({type(err).__name__})", hint=_HINT) from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DeployError(f"{where}: expected a JSON object with format {FORMAT!r} (got "
                          f"{_show(got)})", hint=_HINT)
    atol, rtol = _tolerance(doc, "atol", where), _tolerance(doc, "rtol", where)
    items = doc.get("cases")
    if not isinstance(items, list) or len(items) > MAX_CASES:
        raise DeployError(f"{where}: cases must be a list of at most {MAX_CASES} cases",
                          hint=_HINT)
    cases: list[GoldenCase] = []
    for i, item in enumerate(items):
        counts = (len(cases[0].inputs), len(cases[0].outputs)) if cases else None
        cases.append(_case(item, f"{where}: cases[{i}]", counts))
    return GoldenSet(tuple(cases), atol, rtol)


# ---------------------------------------------------------------------------- replaying


def _signature(meta: dict[str, Any], key: str, where: str) -> list[tuple[str, str]]:
    value = meta.get(key)
    if not isinstance(value, list) or not all(
            isinstance(t, dict) and isinstance(t.get("name"), str)
            and isinstance(t.get("datatype"), str) for t in value):
        raise DeployError(f"{where}: the model metadata's {key} is not a list of "
                          "{name, datatype, shape} objects",
                          hint="is the backend the gha-mlops OIP server?")
    return [(t["name"], t["datatype"]) for t in value]


def _same(got: Any, want: Any, tolerant: bool, atol: float, rtol: float) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(want, (int, float)):
        if not isinstance(got, (int, float)):
            return False
        if tolerant:
            return abs(got - want) <= atol + rtol * abs(want)
        return got == want
    return isinstance(got, str) and got == want


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    index = []
    for size in reversed(shape):
        flat, rest = divmod(flat, size)
        index.append(rest)
    return index[::-1]


def _compare(label: str, got: Any, want: Any, datatype: str, golden: GoldenSet) -> str | None:
    """The failure line for one output (None: it matches)."""
    want_shape, want_values = _shape(want, label)
    if not isinstance(got, dict):
        return f"{label} is missing from the answer"
    got_shape, data = got.get("shape"), got.get("data")
    if not isinstance(got_shape, list) or not isinstance(data, list):
        return f"{label}: the answer has no shape and data for it"
    if got_shape != list(want_shape):
        return f"{label} has shape {_show(got_shape)}, want {list(want_shape)}"
    try:
        _, values = _shape(data, label)
    except DeployError as err:
        return f"{label}: the answer's data is not an array of values ({err.message})"
    if len(values) != len(want_values):
        return f"{label} has {len(values)} values, want {len(want_values)}"
    tolerant = datatype in _FLOAT_TYPES
    wrong = [j for j, (g, w) in enumerate(zip(values, want_values, strict=True))
             if not _same(g, w, tolerant, golden.atol, golden.rtol)]
    if not wrong:
        return None
    j = wrong[0]
    line = (f"{label} differs at {_index(j, want_shape)}: got {_show(values[j])}, want "
            f"{_show(want_values[j])}")
    if tolerant:
        line += f" (atol {golden.atol:g}, rtol {golden.rtol:g})"
    return line + (f"; {len(wrong)} of {len(values)} values differ" if len(wrong) > 1 else "")


def _replay(base_url: str, model: str, i: int, case: GoldenCase,
            signature: tuple[list[tuple[str, str]], list[tuple[str, str]]], golden: GoldenSet,
            timeout: float) -> list[str]:
    ins, outs = signature
    request = {"id": f"golden-{i}", "inputs": [
        {"name": name, "datatype": datatype, "shape": list(shape), "data": values}
        for (name, datatype), (shape, values) in zip(
            ins, (_shape(t, f"case {i}") for t in case.inputs), strict=True)]}
    try:
        answer = probe.infer(base_url, model, request, timeout=timeout)
    except DeployError as err:
        return [f"case {i}: the request failed: {err.message}"]
    items = answer.get("outputs")
    by_name = {o.get("name"): o for o in items if isinstance(o, dict)} \
        if isinstance(items, list) else {}
    lines = [_compare(f"case {i}: output {name!r}", by_name.get(name), want, datatype, golden)
             for (name, datatype), want in zip(outs, case.outputs, strict=True)]
    return [line for line in lines if line is not None]


def check_golden(base_url: str, model: str, golden: GoldenSet, *, timeout: float = 10
                 ) -> GoldenReport:
    """Replay every case against the backend at ``base_url``: read the model's metadata
    (input and output names and datatypes), POST each case as a JSON inference request and
    compare every output, by position in the metadata's order, with the expected one.

    A case that fails to send or gets a status but 200 is a failure line naming the case;
    a golden set whose number of inputs or outputs is not the model's is one failure line.
    DeployError only when the metadata cannot be read."""
    meta = probe.model_metadata(base_url, model, timeout=timeout)
    where = f"{base_url}/v2/models/{model}"
    ins, outs = _signature(meta, "inputs", where), _signature(meta, "outputs", where)
    first = golden.cases[0] if golden.cases else None
    if first is not None and (len(first.inputs), len(first.outputs)) != (len(ins), len(outs)):
        return GoldenReport(len(golden.cases), (
            f"the golden set has {len(first.inputs)} inputs and {len(first.outputs)} outputs "
            f"per case; model {model!r} has {len(ins)} and {len(outs)}: it is not the model "
            "the golden requests were recorded for",), len(golden.cases))
    failures: list[str] = []
    failed = 0
    for i, case in enumerate(golden.cases):
        lines = _replay(base_url, model, i, case, (ins, outs), golden, timeout)
        failures += lines
        failed += bool(lines)
    shown = tuple(line[:400] for line in failures[:MAX_FAILURE_LINES])
    if len(failures) > MAX_FAILURE_LINES:
        shown += (f"... and {len(failures) - MAX_FAILURE_LINES} more failures",)
    return GoldenReport(len(golden.cases), shown, failed)
