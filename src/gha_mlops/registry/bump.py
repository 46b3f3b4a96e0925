"""The default version bump, a pure function of two lineages (docs/registry.md).

- **major** when the model's input/output signature changes (both known and their digests
  differ): clients of the model must change;
- **minor** when a dataset version or a params value changes: the same interface, a model
  trained differently;
- **patch** otherwise: the same data and params (a code change, a re-run).

A previous lineage that cannot be read counts as
a **minor** change. The first version of a model is :data:`~gha_mlops.registry.grammar.FIRST_VERSION` (1.0.0).
"""

from __future__ import annotations

from dataclasses import dataclass

from gha_mlops.registry.grammar import Bump
from gha_mlops.registry.lineage import Lineage


@dataclass(frozen=True)
class BumpDecision:
    bump: Bump
    reason: str


def decide_bump(previous: Lineage, new: Lineage) -> BumpDecision:
    """The bump from ``previous`` (the lineage of the model's highest version) to ``new``."""
    old_sig, new_sig = previous.signature_digest(), new.signature_digest()
    if old_sig is not None and new_sig is not None and old_sig != new_sig:
        return BumpDecision("major", "the model's input/output signature changed")
    if not previous.known:
        return BumpDecision("minor", "the previous version's lineage is unknown: "
                            "assumed to differ")
    changed = sorted(k for k in set(previous.datasets) | set(new.datasets)
                     if previous.datasets.get(k) != new.datasets.get(k))
    if changed:
        return BumpDecision("minor", "dataset changed: " + ", ".join(changed[:5]))
    if previous.params_hash != new.params_hash:
        return BumpDecision("minor", "a params value changed")
    return BumpDecision("patch", "same signature, datasets and params")
