"""Mean squared error and R^2 of the line on the test points."""

import json
from pathlib import Path

from gha_mlops.train import write_metrics

test = json.loads(Path("features.json").read_text())["test"]
model = json.loads(Path("models/line.json").read_text())
pred = [model["a"] * x + model["b"] for x, _ in test]
mse = sum((p - y) ** 2 for p, (_, y) in zip(pred, test, strict=True)) / len(test)
mean = sum(y for _, y in test) / len(test)
r2 = 1 - mse * len(test) / sum((y - mean) ** 2 for _, y in test)
write_metrics("metrics/eval.json", {"test_mse": round(mse, 9), "r2": round(r2, 9)})
