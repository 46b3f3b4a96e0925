"""Stage `evaluate`: score the trained model on the held-out test split.

Reads params `compute`. Writes metrics/eval.json (accuracy, macro F1, test loss, per-class
precision/recall/F1 and the confusion matrix), plots/confusion.png and plots/loss.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# First, before torch or numpy load: portable mode pins every CPU kernel dispatcher (torch,
# oneDNN, MKL, numpy, OpenBLAS) to the baseline of the architecture and fixes the threads, so
# the scores have the same bytes on any x86-64 machine, not only on this one.
from gha_mlops.train import params, portable

portable(threads=params("compute.threads"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from model import load_model  # noqa: E402

from gha_mlops.train import deterministic, save_figure, write_metrics  # noqa: E402

DATA = Path("data/prepared")
CLASSES = 10


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """counts[i, j] = how many images of digit i were predicted as j."""
    counts = np.zeros((CLASSES, CLASSES), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def per_class_scores(counts: np.ndarray) -> dict[str, dict[str, Any]]:
    """Precision, recall and F1 of each digit (0 where undefined, as scikit-learn does)."""
    scores = {}
    for c in range(CLASSES):
        tp = int(counts[c, c])
        predicted, actual = int(counts[:, c].sum()), int(counts[c, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[str(c)] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "support": actual,
        }
    return scores


def confusion_figure(counts: np.ndarray, accuracy: float) -> Figure:
    # A bare Figure, not pyplot: no global state, nothing left open.
    fig = Figure(figsize=(5, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        if n:
            color = "white" if n > counts.max() / 2 else "black"
            ax.text(j, i, str(n), ha="center", va="center", fontsize=8, color=color)
    ax.set(
        xticks=range(CLASSES),
        yticks=range(CLASSES),
        xlabel="predicted",
        ylabel="true",
        title=f"Test confusion matrix (accuracy {accuracy:.2%})",
    )
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def loss_figure(history_csv: Path) -> Figure:
    history = np.genfromtxt(history_csv, delimiter=",", names=True)
    fig = Figure(figsize=(6, 3.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(history["epoch"], history["train_loss"], marker="o", label="train loss")
    ax.plot(history["epoch"], history["val_loss"], marker="o", label="validation loss")
    ax.set(xlabel="epoch", ylabel="cross-entropy", title="Training history")
    ax.grid(alpha=0.3)
    acc = ax.twinx()
    acc.plot(history["epoch"], history["val_acc"], color="tab:green", ls="--", label="val accuracy")
    acc.set_ylabel("validation accuracy")
    lines = ax.get_lines() + acc.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], loc="center right")
    return fig


@torch.no_grad()
def main() -> None:
    deterministic(threads=params("compute.threads"))
    x = torch.from_numpy(np.load(DATA / "x_test.npy"))
    y = torch.from_numpy(np.load(DATA / "y_test.npy"))
    model = load_model("models/model.pt")

    logits = model(x)
    loss = F.cross_entropy(logits, y).item()
    predicted = logits.argmax(dim=1).numpy()
    counts = confusion_matrix(y.numpy(), predicted)
    accuracy = float(np.trace(counts) / counts.sum())
    per_class = per_class_scores(counts)
    macro_f1 = float(np.mean([s["f1"] for s in per_class.values()]))

    write_metrics(
        "metrics/eval.json",
        {
            "test_accuracy": round(accuracy, 6),
            "macro_f1": round(macro_f1, 6),
            "test_loss": round(loss, 6),
            "test_size": int(counts.sum()),
            "per_class": per_class,
            "confusion_matrix": counts.tolist(),
        },
    )
    save_figure(confusion_figure(counts, accuracy), "plots/confusion.png")
    save_figure(loss_figure(Path("plots/train_history.csv")), "plots/loss.png")
    print(f"evaluate: accuracy={accuracy:.4f} macro_f1={macro_f1:.4f}")


if __name__ == "__main__":
    main()
