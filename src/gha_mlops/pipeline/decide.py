"""The stage-outcome decision: run a stage, take it as cached, or restore its outputs.

Pure: the engine gathers plain values (the ``--force`` flag, the run cache's entry for the
stage's signature as read from disk, whether the object store holds every output that entry
names, the digest of each declared output in the workspace now) and this module decides; no
I/O, no clock. The rules, first match wins:

1. ``--force``: run.
2. No entry for the signature: run.
3. A damaged entry (not an object; ``outs`` not exactly the stage's declared outputs, each an
   object digest): run. The entry comes from disk (a cache restored in CI, a checkout) and
   names paths the engine would write to: it is trusted only in this shape.
4. An output the entry names is missing from the object store: run (it cannot be restored).
5. Every declared output in the workspace has the entry's digest: cached.
6. Otherwise: restore the outputs that differ (missing or changed), in the entry's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from gha_mlops.store.hashing import is_object_digest

Outcome = Literal["run", "cached", "restore"]


# Immutable values as named tuples, not frozen dataclasses: the engine imports this module on
# every run, and a dataclass costs ~0.5 ms to define against ~0.1 ms (a no-op run is ~70 ms).


class CachedRun(NamedTuple):
    """What the run cache recorded of the run that produced a signature's outputs: the
    outputs (path -> object digest), their metrics and runtime report, and the producing run's
    id (None when the entry names none)."""

    outs: Mapping[str, str]
    metrics: Mapping[str, Any]
    runtime: Mapping[str, Any]
    run_id: str | None


class Decision(NamedTuple):
    """What to do with a stage and why. ``restore`` names the outputs to put back from the
    object store (only for ``restore``); ``cached`` is the entry the outputs come from (for
    ``cached`` and ``restore``, None for ``run``)."""

    outcome: Outcome
    why: str
    restore: tuple[str, ...] = ()
    cached: CachedRun | None = None


def parse_entry(entry: object, declared: Sequence[str]) -> CachedRun | None:
    """The run-cache ``entry`` (a parsed JSON document) of a stage whose outputs are
    ``declared``, or None when it is damaged (rule 3). Fields besides ``outs`` that have the
    wrong type are dropped, not trusted."""
    if not isinstance(entry, Mapping):
        return None
    outs = entry.get("outs")
    if not isinstance(outs, Mapping) or set(outs) != set(declared):
        return None
    if not all(is_object_digest(digest) for digest in outs.values()):
        return None
    metrics, runtime, run_id = (entry.get(k) for k in ("metrics", "runtime", "run_id"))
    return CachedRun(
        outs={str(path): str(digest) for path, digest in outs.items()},
        metrics=metrics if isinstance(metrics, Mapping) else {},
        runtime=runtime if isinstance(runtime, Mapping) else {},
        run_id=run_id if isinstance(run_id, str) else None,
    )


def decide(*, force: bool, declared: Sequence[str], entry: object, all_cached: bool,
           current: Mapping[str, str | None]) -> Decision:
    """The outcome of a stage whose outputs are ``declared``.

    ``entry`` is the run cache's entry for the stage's signature as read (None: there is
    none); ``all_cached`` whether the object store holds every output it names; ``current``
    the digest of each output path in the workspace (None: missing). A path absent from
    ``current`` counts as differing, so a caller that did not hash restores rather than
    trusts.
    """
    if force:
        return Decision("run", "--force runs every stage")
    if entry is None:
        return Decision("run", "the run cache has no entry for its signature")
    cached = parse_entry(entry, declared)
    if cached is None:
        return Decision("run", "its run-cache entry is damaged")
    if not all_cached:
        return Decision("run", "an output its run-cache entry names is no longer cached")
    differ = tuple(path for path, digest in cached.outs.items() if current.get(path) != digest)
    if differ:
        return Decision("restore", "outputs differ from the cached ones: " + ", ".join(differ),
                        differ, cached)
    return Decision("cached", "its outputs are the cached ones", (), cached)
