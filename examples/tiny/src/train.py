"""Fit y = a*x + b by gradient descent; write the model, metrics and the loss curve."""

import json
from pathlib import Path

from gha_mlops.train import atomic_write_text, params, write_metrics

cfg = params("train")
train = json.loads(Path("features.json").read_text())["train"]
a = b = 0.0
rows = ["epoch,loss"]
for epoch in range(cfg["epochs"]):
    ga = sum(2 * (a * x + b - y) * x for x, y in train) / len(train)
    gb = sum(2 * (a * x + b - y) for x, y in train) / len(train)
    a, b = a - cfg["lr"] * ga, b - cfg["lr"] * gb
    loss = sum((a * x + b - y) ** 2 for x, y in train) / len(train)
    rows.append(f"{epoch},{loss:.6f}")
atomic_write_text("models/line.json", json.dumps({"a": round(a, 9), "b": round(b, 9)}))
atomic_write_text("plots/loss.csv", "\n".join(rows) + "\n")
write_metrics("metrics/train.json", {"train_mse": round(loss, 9)})
