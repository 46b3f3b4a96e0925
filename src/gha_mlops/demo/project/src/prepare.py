"""Stage `prepare`: the digits CSV -> scaled, resized, split and augmented arrays.

Reads params `prepare` and `compute`. Writes to data/prepared/: x_{train,val,test}.npy
(float32, N x 1 x S x S, values in [0, 1]), y_{train,val,test}.npy (int64 labels) and
meta.json. Arrays are written as .npy, not .npz: an .npz is a zip whose entries carry the
time they were written, so two identical runs would give different bytes.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

# First, before torch or numpy load: portable mode pins every CPU kernel dispatcher (torch,
# oneDNN, MKL, numpy, OpenBLAS) to the baseline of the architecture and fixes the threads, so
# the prepared arrays have the same bytes on any x86-64 machine, not only on this one.
from gha_mlops.train import params, portable

portable(threads=params("compute.threads"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gha_mlops.train import atomic_write_bytes, atomic_write_text, deterministic  # noqa: E402

SOURCE = Path("data/digits.csv.gz")  # UCI 8x8 digits: 64 pixels in 0..16, then the label
OUT = Path("data/prepared")


def load_digits(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """Images as a float tensor N x 1 x 8 x 8 scaled to [0, 1], and the labels."""
    with gzip.open(path, "rt") as fh:
        raw = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    images = torch.from_numpy(raw[:, :64].astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return images, raw[:, 64]


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Indices of each split, drawn per class so each split keeps the class balance."""
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    # Sorted, so the order in the files does not depend on the draw order of the classes.
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def augment(images: torch.Tensor, cfg: dict[str, Any], rng: np.random.Generator) -> torch.Tensor:
    """One randomly rotated and shifted copy of each image (bilinear, zero-padded)."""
    n, _, size, _ = images.shape
    angle = np.deg2rad(rng.uniform(-cfg["max_rotation_deg"], cfg["max_rotation_deg"], n))
    # affine_grid works in [-1, 1] coordinates, where one pixel is 2 / size.
    shift = rng.uniform(-cfg["max_shift_px"], cfg["max_shift_px"], (n, 2)) * 2 / size
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0] = np.cos(angle)
    theta[:, 0, 1] = -np.sin(angle)
    theta[:, 1, 0] = np.sin(angle)
    theta[:, 1, 1] = np.cos(angle)
    theta[:, :, 2] = shift
    grid = F.affine_grid(torch.from_numpy(theta), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array))
    atomic_write_bytes(path, buf.getvalue())


def main() -> None:
    report = deterministic(threads=params("compute.threads"))
    cfg = params("prepare")
    # Separate streams for the split and the augmentation, so changing the augmentation
    # params leaves the split (and so the test set) exactly as it was.
    split_rng, augment_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(report["seed"]).spawn(2)
    )

    images, labels = load_digits(SOURCE)
    size = cfg["image_size"]
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    splits = stratified_split(labels, cfg["val_fraction"], cfg["test_fraction"], split_rng)

    data = {name: (images[idx], labels[idx]) for name, idx in splits.items()}
    x_train, y_train = data["train"]
    copies = [
        augment(x_train, cfg["augment"], augment_rng) for _ in range(cfg["augment"]["copies"])
    ]
    data["train"] = (torch.cat([x_train, *copies]), np.tile(y_train, 1 + len(copies)))

    for name, (x, y) in data.items():
        save_npy(OUT / f"x_{name}.npy", x.numpy())
        save_npy(OUT / f"y_{name}.npy", y)
    meta = {
        "source": SOURCE.as_posix(),
        "image_size": size,
        "classes": 10,
        "augmented_copies": len(copies),
        "sizes": {name: len(y) for name, (_, y) in data.items()},
        "class_counts": {
            name: np.bincount(y, minlength=10).tolist() for name, (_, y) in data.items()
        },
        "pixel_range": [0.0, 1.0],
    }
    atomic_write_text(OUT / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"prepare: {meta['sizes']} images of {size}x{size}")


if __name__ == "__main__":
    main()
