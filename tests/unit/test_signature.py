"""stage_signature is a pure function: a table of what changes it and what does not."""

from __future__ import annotations

from typing import Any

import pytest

from gha_mlops.pipeline.signature import stage_signature

BASE: dict[str, Any] = {
    "cmd": "python train.py",
    "deps": {"data": "a" * 64 + ".dir", "train.py": "b" * 64},
    "params": {"train.lr": 0.1},
    "env_lock": "c" * 64,
    "seed": 42,
    "outs": [("model.pt", "out"), ("metrics.json", "metric")],
}


def sig(**changes: Any) -> str:
    return stage_signature(**{**BASE, **changes})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cmd", "python train.py --fast"),
        ("deps", {"data": "d" * 64 + ".dir", "train.py": "b" * 64}),
        ("deps", {"data": "a" * 64 + ".dir"}),
        ("params", {"train.lr": 0.2}),
        ("params", {"train.lr": 0.1, "train.epochs": 3}),
        ("params", {"train.lr": "0.1"}),
        ("env_lock", None),
        ("env_lock", "e" * 64),
        ("seed", 43),
        ("outs", [("model.pt", "out")]),
        ("outs", [("model.pt", "out"), ("metrics.json", "out")]),
    ],
)
def test_every_input_changes_the_signature(field: str, value: Any) -> None:
    assert sig(**{field: value}) != sig()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deps", {"train.py": "b" * 64, "data": "a" * 64 + ".dir"}),
        ("params", {"train.lr": 0.1}),
        ("outs", [("metrics.json", "metric"), ("model.pt", "out")]),
    ],
)
def test_order_of_mappings_and_outputs_does_not(field: str, value: Any) -> None:
    assert sig(**{field: value}) == sig()


def test_signature_is_hex_sha256() -> None:
    s = sig()
    assert len(s) == 64 and int(s, 16) >= 0
