"""Stage `package`: the trained model as TorchScript, with a model card.

Reads params `prepare` and `train` (shown in the card). Writes package/model.ts, loadable
with ``torch.jit.load`` and no Python code of ours, and package/MODEL_CARD.md. The card holds
only what the inputs determine (hashes, parameters, seed, metrics), never a run id or a
time, so two runs of the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
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

from gha_mlops.train import atomic_write_text, lineage, params, resolve_seed, save_torchscript  # noqa: E402

MODEL = Path("models/model.pt")
OUT = Path("package")


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
import torch  # noqa: E402

model = torch.jit.load("model.ts")
logits = model(images)  # float32, N x 1 x {size} x {size}, pixel values in [0, 1]
digits = logits.argmax(dim=1)
```

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


@torch.no_grad()
def main() -> None:
    prepare, train = params("prepare"), params("train")
    size = prepare["image_size"]
    model = load_model(str(MODEL))

    # Trace with a fixed example: DigitNet has no data-dependent branches to lose. Tracing's
    # own check is off (it costs a second of imports); the reloaded file is checked below.
    example = torch.zeros(1, 1, size, size)
    scripted = torch.jit.trace(model, example, check_trace=False)
    save_torchscript(scripted, OUT / "model.ts")

    # Check the shipped file, not the object in memory: it must agree with the eager model.
    test = torch.from_numpy(np.load("data/prepared/x_test.npy"))
    reloaded = torch.jit.load(str(OUT / "model.ts"))
    if not torch.equal(reloaded(test), model(test)):
        raise SystemExit("package: the TorchScript model disagrees with the trained model")

    metrics = json.loads(Path("metrics/eval.json").read_text())
    hyper = flatten(prepare, "prepare") | flatten(train, "train")
    files = {"model.ts": sha256(OUT / "model.ts"), str(MODEL): sha256(MODEL)}
    atomic_write_text(OUT / "MODEL_CARD.md", model_card(size, hyper, metrics, files))
    print(f"package: {OUT / 'model.ts'} ({files['model.ts'][:12]})")


if __name__ == "__main__":
    main()
