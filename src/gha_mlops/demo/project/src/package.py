"""Stage `package`: the trained model as ONNX, with its signature and a model card.

Reads params `prepare` and `train` (shown in the card). Writes package/model.onnx (any ONNX
runtime serves it, with no Python code of ours; `gha-mlops package` builds its image from it),
package/signature.json (its inputs and outputs, the Open Inference Protocol form) and
package/MODEL_CARD.md. The export is checked on the test split; the card holds only what the
inputs determine (hashes, parameters, seed, metrics), never a run id or a time, so two runs of
the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# First, before torch or numpy load: portable mode pins every CPU kernel dispatcher (torch,
# oneDNN, MKL, numpy, OpenBLAS) to the baseline of the architecture and fixes the threads, so
# the packaged model has the same bytes on any x86-64 machine, not only on this one.
from gha_mlops.train import portable

portable()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from model import load_model  # noqa: E402

from gha_mlops.packaging.signature import signature_of  # noqa: E402
from gha_mlops.train import (  # noqa: E402
    ExportMismatchError,
    atomic_write_text,
    export_onnx,
    lineage,
    params,
    resolve_seed,
)

MODEL = Path("models/model.pt")
OUT = Path("package")
# onnxruntime's kernels sum in another order than torch's: on the test split the logits
# differ by up to ~1e-5 (measured 7.6e-6), far below what changes a predicted digit.
ATOL, RTOL = 1e-5, 1e-4


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flatten(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"prefix.a.b": 1}, for a table of parameters."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}.{key}"))
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


def table(header: tuple[str, str], rows: Mapping[str, Any]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in rows.items()]
    return "\n".join(lines)


def model_card(
    size: int, hyper: dict[str, Any], metrics: dict[str, Any], files: dict[str, str]
) -> str:
    info = lineage()  # {} when the script is run by hand, outside `gha-mlops run`
    env_lock = info.get("env_lock") or {}
    provenance = {
        "seed": info.get("seed", resolve_seed()),
        "stage signature": info.get("signature", "(not run by gha-mlops)"),
        "environment lock": (
            f"{env_lock['path']} (sha256 {env_lock['sha256']})" if env_lock else "(not recorded)"
        ),
        "torch": torch.__version__,
    }
    deps = info.get("deps") or {}
    scores = {
        "accuracy": metrics["test_accuracy"],
        "macro F1": metrics["macro_f1"],
        "cross-entropy": metrics["test_loss"],
    }
    return f"""# DigitNet: handwritten digit classifier

A small convolutional network that reads a {size}x{size} grey image of a handwritten digit
and returns 10 logits, one per digit. Built by the gha-mlops demo pipeline; every value below
follows from the pipeline's inputs, so the same inputs give this card byte for byte.

## Use

```python
import onnxruntime

session = onnxruntime.InferenceSession("model.onnx")
(logits,) = session.run(None, {{"input": images}})  # float32, N x 1 x {size} x {size}, in [0, 1]
digits = logits.argmax(axis=1)
```

`signature.json` lists the inputs and outputs (names, datatypes, shapes; -1 is the batch).
The export was checked on the test split: the ONNX logits equal the trained model's within
atol {ATOL:g} + rtol {RTOL:g} x |logit|.

Preprocessing: the 8x8 images with pixel values 0..16 are divided by 16 and resized to
{size}x{size} with bilinear interpolation (`torch.nn.functional.interpolate`,
`align_corners=False`).

## Test metrics ({metrics["test_size"]} held-out images)

{table(("metric", "value"), scores)}

## Parameters

{table(("parameter", "value"), hyper)}

## Files

{table(("file", "sha256"), files)}

## Lineage

{table(("item", "value"), provenance)}

Inputs of the package stage:

{table(("path", "hash"), deps) if deps else "(none recorded: run with `gha-mlops run` to record them)"}

## Data

UCI ML hand-written digits (Alpaydin and Kaynak, 1998), 1797 images, split 70/15/15 per class.
Licensed CC BY 4.0: https://archive.ics.uci.edu/dataset/80
"""


def main() -> None:
    prepare, train = params("prepare"), params("train")
    size = prepare["image_size"]
    model = load_model(str(MODEL))

    # torch.export, then ONNX: a dynamic batch, the same bytes every run, and the written
    # file is checked against the trained model on the whole test split before it appears.
    test = torch.from_numpy(np.load("data/prepared/x_test.npy"))
    try:
        export_onnx(model, torch.zeros(2, 1, size, size), OUT / "model.onnx", check_inputs=test,
                    atol=ATOL, rtol=RTOL, output_names=("logits",))
    except ExportMismatchError as err:
        sys.exit(f"package: {err.message}")
    # Read back from the written graph: names, datatypes and shapes as a server will see them.
    signature = signature_of(OUT / "model.onnx").to_json()
    atomic_write_text(OUT / "signature.json", json.dumps(signature, indent=2) + "\n")

    metrics = json.loads(Path("metrics/eval.json").read_text())
    hyper = flatten(prepare, "prepare") | flatten(train, "train")
    files = {name: sha256(OUT / name) for name in ("model.onnx", "signature.json")}
    files[str(MODEL)] = sha256(MODEL)
    atomic_write_text(OUT / "MODEL_CARD.md", model_card(size, hyper, metrics, files))
    print(f"package: {OUT / 'model.onnx'} ({files['model.onnx'][:12]})")

if __name__ == "__main__":
    main()
