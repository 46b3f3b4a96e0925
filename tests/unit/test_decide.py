"""The stage-outcome decision as a table: every rule of :mod:`gha_mlops.pipeline.decide`."""

from __future__ import annotations

from typing import Any

import pytest

from gha_mlops.pipeline.decide import CachedRun, decide, parse_entry

A = "a" * 64
B = "b" * 64
C = "c" * 64
TREE = "d" * 64 + ".dir"
DECLARED = ("model.bin", "prepared")
OUTS = {"model.bin": A, "prepared": TREE}
ENTRY: dict[str, Any] = {"outs": OUTS, "stage": "train", "run_id": "20260101-000000-abcdef",
                         "metrics": {"m.json": {"acc": 0.9}}, "runtime": {"seconds": 1}}
SAME = dict(OUTS)


# force, entry, all_cached, current  ->  outcome, restore
ROWS: list[tuple[str, bool, object, bool, dict[str, str | None], str, tuple[str, ...]]] = [
    ("force wins over a good entry", True, ENTRY, True, SAME, "run", ()),
    ("force without an entry", True, None, False, {}, "run", ()),
    ("no entry", False, None, False, {}, "run", ()),
    ("entry, outputs as cached", False, ENTRY, True, SAME, "cached", ()),
    ("one output changed", False, ENTRY, True, {**SAME, "model.bin": B}, "restore",
     ("model.bin",)),
    ("one output missing", False, ENTRY, True, {**SAME, "prepared": None}, "restore",
     ("prepared",)),
    ("every output differs, entry order", False, ENTRY, True,
     {"model.bin": None, "prepared": C}, "restore", ("model.bin", "prepared")),
    ("an output not hashed counts as differing", False, ENTRY, True, {"model.bin": A},
     "restore", ("prepared",)),
    ("an output no longer in the object store", False, ENTRY, False, SAME, "run", ()),
    ("damaged: not an object", False, ["outs"], True, SAME, "run", ()),
    ("damaged: no outs", False, {"stage": "train"}, True, SAME, "run", ()),
    ("damaged: outs not an object", False, {"outs": [A, TREE]}, True, SAME, "run", ()),
    ("damaged: a digest that names a path", False,
     {"outs": {"model.bin": "../../etc/passwd", "prepared": TREE}}, True, SAME, "run", ()),
    ("damaged: a digest not a string", False, {"outs": {"model.bin": 1, "prepared": TREE}},
     True, SAME, "run", ()),
    ("damaged: an output the stage does not declare", False,
     {"outs": {**OUTS, "../outside": A}}, True, SAME, "run", ()),
    ("damaged: a declared output missing", False, {"outs": {"model.bin": A}}, True, SAME,
     "run", ()),
]


@pytest.mark.parametrize(("force", "entry", "all_cached", "current", "outcome", "restore"),
                         [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_stage_outcome(force: bool, entry: object, all_cached: bool,
                       current: dict[str, str | None], outcome: str,
                       restore: tuple[str, ...]) -> None:
    decision = decide(force=force, declared=DECLARED, entry=entry, all_cached=all_cached,
                      current=current)
    assert (decision.outcome, decision.restore) == (outcome, restore)
    assert decision.why  # every decision says why
    # The outputs to take over come with every decision that does not run, and only then.
    assert (decision.cached is not None) == (outcome != "run")
    if decision.cached is not None:
        assert dict(decision.cached.outs) == OUTS


def test_an_entry_is_read_into_typed_fields_and_wrong_types_are_dropped() -> None:
    assert parse_entry(ENTRY, DECLARED) == CachedRun(
        outs=OUTS, metrics=ENTRY["metrics"], runtime=ENTRY["runtime"], run_id=ENTRY["run_id"])
    odd = {"outs": OUTS, "metrics": "x", "runtime": [1], "run_id": 7}
    assert parse_entry(odd, DECLARED) == CachedRun(OUTS, {}, {}, None)

