"""The registry's state, folded from its tags the way GTO folds them (pure).

:func:`fold` takes every tag of the repository (``_git.list_tags``: one ``git for-each-ref``)
and returns each model's versions, which of them are active, which version holds each stage
and whether the model is deprecated, with GTO's rules (``gto/base.py``):

- events of a model are ordered by the tagger date (then the counter);
- a version is active when its last registration event is a registration, not a
  deregistration;
- a stage tag applies to the version registered at the tag's commit; a stage is *held* by the
  active version whose last event for that stage is an assignment, the most recently assigned
  one when several are;
- a model is deprecated when its newest event is a ``@deprecated`` tag;
- the latest version is the highest SemVer among the active ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from gha_mlops.registry._git import RawTag
from gha_mlops.registry.grammar import TagName, parse_tag, semver_key


class Event(NamedTuple):
    """One registry tag: what it says (``event``) and the git facts of it. (A named tuple:
    one per tag, made 10,000 at a time.)"""

    event: TagName
    tag: str
    object: str
    commit: str
    time: int
    author: str
    email: str
    message: str
    version: str | None = None  # for stage events: the version at the tag's commit


@dataclass
class VersionState:
    version: str
    tag: str
    object: str
    commit: str
    time: int
    message: str
    active: bool = True
    # stage -> (active, time of the last assignment)
    stages: dict[str, tuple[bool, int]] = field(default_factory=dict)


@dataclass
class ModelState:
    name: str
    versions: dict[str, VersionState] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    deprecated: bool = False
    holders: dict[str, str] = field(default_factory=dict)  # stage -> version
    max_counter: int = 0
    last_time: int = 0
    # commit -> the version registered there last (GTO maps a stage tag to it)
    at_commit: dict[str, VersionState] = field(default_factory=dict)

    def active_versions(self) -> list[VersionState]:
        """Active versions, highest SemVer first."""
        return sorted((v for v in self.versions.values() if v.active),
                      key=lambda v: semver_key(v.version), reverse=True)

    @property
    def latest(self) -> str | None:
        active = self.active_versions()
        return active[0].version if active else None

    def stages_of(self, version: str) -> tuple[str, ...]:
        return tuple(s for s, v in self.holders.items() if v == version)


def fold(tags: Iterable[RawTag]) -> dict[str, ModelState]:
    """Every model's state from the repository's tags (see the module's docstring)."""
    by_model: dict[str, list[tuple[RawTag, TagName]]] = {}
    for raw in tags:
        if "@" not in raw.name and "#" not in raw.name:
            continue  # a release tag: the grammar needs one of them
        parsed = parse_tag(raw.name)
        if parsed is not None:
            by_model.setdefault(parsed.model, []).append((raw, parsed))
    models: dict[str, ModelState] = {}
    for name, entries in by_model.items():
        entries.sort(key=lambda e: (e[0].time, e[1].counter or 0, e[0].name))
        state = ModelState(name)
        for raw, parsed in entries:
            _apply(state, raw, parsed)
        _finish(state)
        models[name] = state
    return dict(sorted(models.items()))


def _apply(state: ModelState, raw: RawTag, parsed: TagName) -> None:
    state.max_counter = max(state.max_counter, parsed.counter or 0)
    state.last_time = max(state.last_time, raw.time)
    version = parsed.version
    if parsed.action in ("register", "deregister"):
        assert version is not None
        known = state.versions.get(version)
        if known is None:
            known = state.versions[version] = VersionState(
                version, raw.name, raw.object, raw.target, raw.time, raw.message)
            state.at_commit[raw.target] = known
        elif parsed.action == "register":  # registered again after a deregistration
            known.tag, known.object, known.message = raw.name, raw.object, raw.message
        known.active = parsed.action == "register"
    elif parsed.action in ("assign", "unassign"):
        target = state.at_commit.get(raw.target)
        if target is None:
            return  # no version registered there (yet): GTO would invent one; not ours
        version = target.version
        assert parsed.stage is not None
        if parsed.action == "assign":
            target.stages[parsed.stage] = (True, raw.time)
        else:
            target.stages[parsed.stage] = (False, target.stages.get(parsed.stage, (False, 0))[1])
    state.events.append(Event(parsed, raw.name, raw.object, raw.target, raw.time,
                              raw.tagger, raw.email, raw.message, version))


def _finish(state: ModelState) -> None:
    state.deprecated = bool(state.events) and state.events[-1].event.action == "deprecate"
    best: dict[str, tuple[int, tuple[int, int, int, int, str], str]] = {}
    for v in state.active_versions():
        for stage, (active, when) in v.stages.items():
            key = (when, semver_key(v.version), v.version)
            if active and (stage not in best or key[:2] > best[stage][:2]):
                best[stage] = key
    state.holders = {stage: key[2] for stage, key in sorted(best.items())}
