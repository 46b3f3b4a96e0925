"""Promotion gates: each ``gates:`` entry of mlops.yaml checked against a :class:`Comparison`.

A pure function (:func:`evaluate_gates`) with one :class:`GateResult` per gate and a sentence
for every rule that failed, e.g. "test_accuracy dropped 0.0031, more than the allowed 0.002".
Rules:

- ``min`` / ``max``: bounds on the head's value;
- ``min_delta`` / ``max_delta``: bounds on ``head - baseline``;
- ``max_relative_drop``: the largest move in the worse direction (the gate's ``direction``,
  else the metric's default) as a fraction of ``|baseline|``.

A gated metric missing from the head run, or NaN/±inf there, fails; one that neither run has
(most often a typo) says where the gate is written and which metric is closest to its name. A rule against the
baseline cannot be checked when the baseline has no finite value for the metric (a metric
new in this pull request): it is skipped and says so, and a gate whose every rule was
skipped passes as ``skipped``. The verdict passes when no gate fails.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gha_mlops.config.model import Gate
from gha_mlops.errors import ExitCode, GhaMlopsError
from gha_mlops.reporting._markdown import format_number
from gha_mlops.reporting.compare import Comparison, Direction, MetricDiff

GateStatus = Literal["pass", "fail", "skipped"]


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate: ``reasons`` hold one sentence per failed (or skipped) rule;
    ``metric`` is the metric the gate resolved to, when exactly one."""

    gate: Gate
    status: GateStatus
    reasons: tuple[str, ...] = ()
    metric: MetricDiff | None = None

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    @property
    def rules(self) -> str:
        """The gate's rules as written, e.g. ``min_delta: -0.002, max: 20``."""
        parts = [f"{name}: {format_number(value)}"
                 for name, value in (("min", self.gate.min), ("max", self.gate.max),
                                     ("min_delta", self.gate.min_delta),
                                     ("max_delta", self.gate.max_delta),
                                     ("max_relative_drop", self.gate.max_relative_drop))
                 if value is not None]
        if self.gate.direction:
            parts.append(f"direction: {self.gate.direction}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Verdict:
    """Every gate's result; passes when none failed (and when there are no gates)."""

    results: tuple[GateResult, ...] = ()

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if not r.passed)


class GateFailedError(GhaMlopsError):
    """At least one promotion gate failed: the head model may not replace the baseline."""

    exit_code = ExitCode.FAILURE


def gate_failed_error(verdict: Verdict) -> GateFailedError:
    """The error that ends ``gha-mlops report`` when ``verdict`` failed: the message lists
    every failed gate with its reasons."""
    failed = verdict.failed
    lines = ["; ".join(r.reasons) for r in failed]
    noun = "gate" if len(verdict.results) == 1 else "gates"
    return GateFailedError(
        f"{len(failed)} of {len(verdict.results)} {noun} failed: " + " | ".join(lines),
        hint="improve the model, or change the rules under `gates:` in mlops.yaml if they "
             "are too strict",
        notes=lines if len(lines) > 1 else None)


def evaluate_gates(comparison: Comparison, gates: Mapping[str, Gate]) -> Verdict:
    """Check each gate of ``gates`` (name -> gate, in order) against ``comparison``."""
    return Verdict(tuple(evaluate_gate(comparison, gate) for gate in gates.values()))


def evaluate_gate(comparison: Comparison, gate: Gate) -> GateResult:
    """Check one gate; see the module documentation for the rules."""
    name = gate.metric
    found = comparison.find(name)
    if len(found) > 1:
        files = ", ".join(m.file for m in found)
        return GateResult(gate, "fail", (f"{name} is ambiguous: it is in {files}; name one "
                                         f"as FILE:KEY, e.g. {found[0].name}",))
    if not found:
        return GateResult(gate, "fail", (f"{name} is missing from the head run (and from the "
                                         f"baseline){_did_you_mean(comparison, gate)}",))
    metric = found[0]
    head, base = metric.head, metric.base
    if head is None:
        return GateResult(gate, "fail", (f"{name} is missing from the head run (the baseline "
                                         f"has {format_number(base)})",), metric)
    if not math.isfinite(head):
        return GateResult(gate, "fail", (f"{name} is {format_number(head)} on the head run, "
                                         "not a finite number",), metric)
    failures: list[str] = []
    skipped: list[str] = []
    checked = 0
    if gate.min is not None:
        checked += 1
        if head < gate.min:
            failures.append(f"{name} is {_n(head)}, below the minimum {_n(gate.min)} "
                            f"by {_n(gate.min - head)}")
    if gate.max is not None:
        checked += 1
        if head > gate.max:
            failures.append(f"{name} is {_n(head)}, above the maximum {_n(gate.max)} "
                            f"by {_n(head - gate.max)}")
    relative_rules = [r for r in ("min_delta", "max_delta", "max_relative_drop")
                      if getattr(gate, r) is not None]
    if relative_rules and (base is None or not math.isfinite(base)):
        what = "has no value for it" if base is None else f"has {format_number(base)}"
        skipped.append(f"{', '.join(relative_rules)} not checked: the baseline {what}")
    elif base is not None:
        checked += len(relative_rules)
        failures += _relative_failures(gate, name, base, head, gate.direction or
                                       metric.direction)
    if failures:
        return GateResult(gate, "fail", tuple(failures + skipped), metric)
    return GateResult(gate, "pass" if checked else "skipped", tuple(skipped), metric)


def _did_you_mean(comparison: Comparison, gate: Gate) -> str:
    """Where the gate is written and the metric closest to its name, for a gate whose metric
    neither run has: most often a typo in ``gates:``."""
    file, sep, key = gate.metric.partition(":")
    keys = sorted({m.key for m in comparison.metrics if not sep or m.file == file})
    close = difflib.get_close_matches(key if sep else gate.metric, keys, n=1)
    if close and sep:
        close = [f"{file}:{close[0]}"]
    where = f" (gates.{gate.metric} at {gate.source})" if gate.source else ""
    return where + (f"; did you mean {close[0]}?" if close else "")


def _relative_failures(gate: Gate, name: str, base: float, head: float,
                       direction: Direction) -> list[str]:
    failures: list[str] = []
    delta = head - base
    if gate.min_delta is not None and delta < gate.min_delta:
        if gate.min_delta <= 0:
            failures.append(f"{name} dropped {_n(-delta)}, more than the allowed "
                            f"{_n(-gate.min_delta)}")
        else:
            failures.append(f"{name} changed by {_signed(delta)}, less than the required "
                            f"{_signed(gate.min_delta)}")
    if gate.max_delta is not None and delta > gate.max_delta:
        if gate.max_delta >= 0:
            failures.append(f"{name} rose {_n(delta)}, more than the allowed "
                            f"{_n(gate.max_delta)}")
        else:
            failures.append(f"{name} changed by {_signed(delta)}, it must fall by at least "
                            f"{_n(-gate.max_delta)}")
    if gate.max_relative_drop is not None:
        worse = -delta if direction == "higher" else delta
        verb = "dropped" if direction == "higher" else "rose"
        if base == 0:
            if worse > 0:
                failures.append(f"{name} {verb} from 0 to {_n(head)}: a change relative to a "
                                "baseline of 0 has no bound")
        elif worse / abs(base) > gate.max_relative_drop:
            failures.append(f"{name} {verb} {_pct(worse / abs(base))} ({_n(base)} -> "
                            f"{_n(head)}), more than the allowed "
                            f"{_pct(gate.max_relative_drop)}")
    return failures


def _n(value: float) -> str:
    """A number for a sentence: 6 significant digits, float noise gone (0.0031, not
    0.0031000000000000472)."""
    return format_number(float(f"{value:.6g}"))


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + _n(abs(value))


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.4g}%"
