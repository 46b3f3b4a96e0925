"""Split data/points.csv (x,y per line) into train and test points."""

import json
from pathlib import Path

from gha_mlops.train import atomic_write_text, params

cfg = params("prepare")
rows = [line.split(",") for line in Path("data/points.csv").read_text().split()[1:]]
points = [(float(x), float(y)) for x, y in rows]
cut = int(len(points) * (1 - cfg["test_fraction"]))
atomic_write_text("features.json", json.dumps({"train": points[:cut], "test": points[cut:]}))
