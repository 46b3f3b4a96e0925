"""A report's verdict in words: the one value every place that states it renders from.

``report.md``'s title, ``report.json``'s ``headline`` and the check run's title all come from
one :class:`Outcome`, so they cannot disagree (before, ``report.json`` said "all gates pass"
where the Markdown said "no gates declared").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gha_mlops.reporting.gates import Verdict

OutcomeState = Literal["pass", "fail", "none"]
"""``none``: no gates are declared (which passes, as nothing can fail)."""

_ICON: dict[OutcomeState, str] = {"pass": "✅", "fail": "❌", "none": "📊"}


@dataclass(frozen=True)
class Outcome:
    """The verdict of a report: its ``state`` and ``headline``, the short sentence that says
    it ("no gates declared", "all 2 gates pass", "1 of 2 gates failed")."""

    state: OutcomeState
    headline: str

    @property
    def passed(self) -> bool:
        """True unless a gate failed (no gates at all passes)."""
        return self.state != "fail"

    @property
    def title(self) -> str:
        """The report's Markdown title, e.g. ``## ✅ Model comparison: all 2 gates pass``."""
        return f"## {_ICON[self.state]} Model comparison: {self.headline}"


def outcome(verdict: Verdict) -> Outcome:
    """The :class:`Outcome` of ``verdict``."""
    total = len(verdict.results)
    if not total:
        return Outcome("none", "no gates declared")
    if verdict.passed:
        return Outcome("pass", "the gate passes" if total == 1 else f"all {total} gates pass")
    if total == 1:
        return Outcome("fail", "the gate failed")
    return Outcome("fail", f"{len(verdict.failed)} of {total} gates failed")
