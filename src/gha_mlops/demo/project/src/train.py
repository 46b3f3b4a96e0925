"""Stage `train`: fit DigitNet on the prepared training split, on CPU, repeatably.

Reads params `train` and `compute`. Writes models/model.pt (the state_dict),
metrics/train.json (final train and validation loss and accuracy) and
plots/train_history.csv (one row per epoch).
"""

from __future__ import annotations

from pathlib import Path

# First, before torch or numpy load: portable mode pins every CPU kernel dispatcher (torch,
# oneDNN, MKL, numpy, OpenBLAS) to the baseline of the architecture and fixes the threads, so
# the trained model has the same bytes on any x86-64 machine, not only on this one.
from gha_mlops.train import params, portable

portable(threads=params("compute.threads"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from model import DigitNet  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from gha_mlops.train import (  # noqa: E402
    atomic_write_text,
    dataloader_kwargs,
    deterministic,
    progress,
    save_torch,
    write_metrics,
)

DATA = Path("data/prepared")


def load_split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.load(DATA / f"x_{name}.npy"))
    y = torch.from_numpy(np.load(DATA / f"y_{name}.npy"))
    return x, y


@torch.no_grad()
def evaluate(model: DigitNet, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x, y), in eval mode."""
    model.eval()
    logits = model(x)
    loss = F.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).double().mean().item()
    return loss, accuracy


def main() -> None:
    # First: seeds every RNG and pins threads before torch does any work.
    deterministic(threads=params("compute.threads"))
    cfg = params("train")
    x_train, y_train = load_split("train")
    x_val, y_val = load_split("val")

    # The seeded generator from dataloader_kwargs() fixes the shuffle order of every epoch.
    loader = DataLoader(
        TensorDataset(x_train, y_train),
        batch_size=cfg["batch_size"],
        shuffle=True,
        **dataloader_kwargs(),
    )
    model = DigitNet(dropout=cfg["dropout"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    # One cycle: warm up to lr, then anneal to ~0. Converges in few epochs, which keeps the
    # demo fast; the schedule is a pure function of the step, so it is repeatable too.
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg["lr"], total_steps=cfg["epochs"] * len(loader)
    )

    history = ["epoch,train_loss,val_loss,val_acc"]
    for epoch in progress(range(1, cfg["epochs"] + 1), desc="train"):
        model.train()
        total = 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(yb)
        val_loss, val_acc = evaluate(model, x_val, y_val)
        # Fixed precision: the CSV is an output, hashed and compared like the model.
        history.append(f"{epoch},{total / len(y_train):.6f},{val_loss:.6f},{val_acc:.6f}")

    train_loss, train_acc = evaluate(model, x_train, y_train)
    save_torch(model.state_dict(), "models/model.pt")
    write_metrics(
        "metrics/train.json",
        {
            "train_loss": round(train_loss, 6),
            "train_accuracy": round(train_acc, 6),
            "val_loss": round(val_loss, 6),
            "val_accuracy": round(val_acc, 6),
            "epochs": cfg["epochs"],
        },
    )
    atomic_write_text("plots/train_history.csv", "\n".join(history) + "\n")
    print(f"train: val_accuracy={val_acc:.4f} val_loss={val_loss:.4f}")


if __name__ == "__main__":
    main()
