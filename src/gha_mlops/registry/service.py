"""The registry as a service: read its state from git tags, write events as tags.

:func:`open_registry` gives a :class:`Registry` for a workspace. Reading (``resolve``,
``models``, ``history``) needs no ``mlops.yaml``; writing (``register``, ``promote``,
``demote``, ``deprecate``) checks the request against its ``registry:`` section first, and
makes no tag when anything is wrong. Every tag follows GTO's grammar (:mod:`.grammar`) and is
dated one second after the model's newest event at least, so GTO, which orders events by the
tagger date, orders them as they were made.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gha_mlops.errors import quoted
from gha_mlops.git import GitError, toplevel
from gha_mlops.registry import _git
from gha_mlops.registry._cache import cached_tags
from gha_mlops.registry._git import RawTag
from gha_mlops.registry.errors import RegistryError
from gha_mlops.registry.grammar import (
    MODEL_NAME_RE,
    Bump,
    TagName,
    parse_version,
    tag_name,
)
from gha_mlops.registry.index import Event, ModelState, fold
from gha_mlops.registry.lineage import Lineage, read_images, read_message, read_profile

SignatureOf = Callable[[Path], "dict[str, Any] | None"]
_DIGEST = "sha256:"


@dataclass(frozen=True)
class ModelVersion:
    """A registered version: ``tag`` (``digits@v1.2.0``) on ``commit``; ``stages`` it holds;
    ``deprecated`` when it was deregistered or its model deprecated."""

    name: str
    version: str
    tag: str
    commit: str
    lineage: Lineage
    stages: tuple[str, ...] = ()
    deprecated: bool = False
    tag_object: str = ""
    created_at: int = 0


@dataclass(frozen=True)
class Written:
    """What a write did: the tags made (and pushed), notes for the user."""

    tags: tuple[str, ...]
    version: ModelVersion | None = None
    notes: tuple[str, ...] = ()
    pushed: bool = False
    bump_reason: str | None = None


@dataclass
class Registry:
    """The registry of ``workspace``'s git repository (see the module's docstring)."""

    workspace: Path
    now: Callable[[], float] = time.time
    # What was read, kept until a write (``refresh``): the tags, the models folded from them.
    _state: dict[str, ModelState] | None = field(default=None, init=False, repr=False)
    _tags: list[RawTag] | None = field(default=None, init=False, repr=False)
    _models: dict[str, ModelState | None] = field(default_factory=dict, init=False,
                                                  repr=False)

    # ------------------------------------------------------------------ reading

    def tags(self) -> list[RawTag]:
        """Every annotated tag (one ``git for-each-ref``, or the cache of it)."""
        if self._tags is None:
            if toplevel(self.workspace) is None:
                raise RegistryError(f"{self.workspace} is not in a git repository",
                                    hint="the registry lives in git tags: `git init` and "
                                         "commit the project first")
            self._tags = cached_tags(self.workspace)
        return self._tags

    @property
    def state(self) -> dict[str, ModelState]:
        """Every model's state, by name."""
        if self._state is None:
            self._state = fold(self.tags())
        return self._state

    def refresh(self) -> None:
        self._state, self._tags, self._models = None, None, {}

    def model(self, name: str) -> ModelState:
        """One model's state; only its own tags are folded (a model's tags start with its
        name and '@' or '#'), unless every model's are already."""
        if self._state is not None:
            found = self._state.get(name)
        elif name in self._models:
            found = self._models[name]
        else:
            prefix = (name.replace(":", "=") + "@", name.replace(":", "=") + "#")
            found = fold(t for t in self.tags() if t.name.startswith(prefix)).get(name)
            self._models[name] = found
        if found is None:
            known = ", ".join(sorted(self.state)[:10]) or "none yet"
            raise RegistryError(f"no model {quoted(name)} in the registry",
                                hint=f"registered models: {known}; register one with "
                                     "`gha-mlops model register NAME`")
        return found

    def resolve(self, ref: str) -> ModelVersion:
        """``NAME`` (latest active version), ``NAME@X.Y.Z`` / ``NAME@vX.Y.Z``, or
        ``NAME#STAGE`` (the version holding the stage)."""
        name, sep, rest = _split_ref(ref)
        state = self.model(name)
        if sep == "@":
            try:
                version = parse_version(rest)
            except ValueError:
                raise RegistryError(f"{quoted(ref)}: {quoted(rest)} is not a version X.Y.Z",
                                    hint="write NAME@1.2.0 or NAME@v1.2.0") from None
        elif sep == "#":
            held = state.holders.get(rest)
            if held is None:
                raise RegistryError(f"no version of {name} is at stage {quoted(rest)}",
                                    hint="stages held: " + (", ".join(
                                        f"{s}={v}" for s, v in state.holders.items())
                                        or "none"))
            version = held
        else:
            latest = state.latest
            if latest is None:
                raise RegistryError(f"{name} has no active version",
                                    hint="register one with `gha-mlops model register`")
            version = latest
        return self.version(name, version)

    def version(self, name: str, version: str, *, images: bool = True) -> ModelVersion:
        """``name`` ``version``; ``images=False`` leaves the git note unread (a listing of
        many versions reads none)."""
        state = self.model(name)
        found = state.versions.get(version)
        if found is None:
            known = ", ".join(v.version for v in state.active_versions()[:10]) or "none"
            raise RegistryError(f"{name} has no version {quoted(version)}",
                                hint=f"active versions: {known}")
        lineage = read_message(found.message)
        if images:
            note = _git.note_of(self.workspace, found.object)
            lineage = replace(lineage, images=read_images(note) or lineage.images,
                              profile=read_profile(note))
        return ModelVersion(name=name, version=version, tag=found.tag, commit=found.commit,
                            lineage=lineage, stages=state.stages_of(version),
                            deprecated=not found.active or state.deprecated,
                            tag_object=found.object, created_at=found.time)

    def history(self, name: str) -> list[Event]:
        """The model's events, oldest first."""
        return list(self.model(name).events)

    # ------------------------------------------------------------------ files

    def model_file(self, mv: ModelVersion) -> Path:
        """The model's bytes: the workspace file if its sha256 matches the lineage, else the
        content cache's object; :class:`RegistryError` when neither holds them."""
        from gha_mlops.registry._files import model_file

        return model_file(self.workspace, mv)

    def record_image(self, mv: ModelVersion, image: str, digest: str) -> None:
        """Add an image built from ``mv`` to its lineage: a line in the git note on the
        version's tag object (``refs/notes/gha-mlops``); the tag is not rewritten."""
        if not image or len(image) > 500 or any(c.isspace() for c in image):
            raise RegistryError(f"{quoted(image)} is not an image reference")
        if not (digest.startswith(_DIGEST) and len(digest) == len(_DIGEST) + 64
                and all(c in "0123456789abcdef" for c in digest[len(_DIGEST):])):
            raise RegistryError(f"{quoted(digest)} is not an image digest (sha256:<64 hex>)")
        line = json.dumps({"image": image, "digest": digest}, sort_keys=True)
        _git.append_note(self.workspace, self._tag_object(mv), line)

    def record_profile(self, mv: ModelVersion, data: bytes, rows: int) -> str:
        """Keep the reference profile packaged with ``mv`` (its canonical bytes, one line)
        with the version and name it in its lineage: the bytes as the version's note in
        ``refs/notes/gha-mlops-profiles``, their sha256 and ``rows`` as a line of its lineage
        note (as :meth:`record_image`); a later one replaces both. The sha256."""
        if not data or b"\n" in data or not data.isascii():
            raise RegistryError("a profile is one line of ASCII JSON")
        if not 0 < rows <= 10**12:
            raise RegistryError(f"a profile of {rows} rows is not a profile")
        obj = self._tag_object(mv)
        digest = hashlib.sha256(data).hexdigest()
        _git.set_profile_note(self.workspace, obj, data)
        line = json.dumps({"profile": {"rows": rows, "sha256": digest}}, sort_keys=True)
        _git.append_note(self.workspace, obj, line)
        return digest

    def profile_bytes(self, mv: ModelVersion, limit: int) -> bytes | None:
        """The profile bytes kept with ``mv`` (its profile note; None when there is none or
        it is over ``limit`` bytes). Unchecked: compare with the lineage's sha256."""
        obj = mv.tag_object or _git.rev_parse(self.workspace, f"refs/tags/{mv.tag}")
        return _git.profile_note(self.workspace, obj, limit) if obj else None

    def _tag_object(self, mv: ModelVersion) -> str:
        obj = mv.tag_object or _git.rev_parse(self.workspace, f"refs/tags/{mv.tag}")
        if not obj:
            raise RegistryError(f"the tag {mv.tag} is not in this repository")
        return obj

    # ------------------------------------------------------------------ writing

    def register(self, name: str, run: str = "latest", *, version: str | None = None,
                 bump: Bump | None = None, signature_of: SignatureOf | None = None,
                 push: bool = False, remote: str = "origin") -> Written:
        """Register the model ``name`` of run ``run`` (see docs/registry.md)."""
        from gha_mlops.registry._register import register

        return register(self, name, run, version=version, bump=bump,
                        signature_of=signature_of, push=push, remote=remote)

    def promote(self, name: str, version: str, stage: str, *, push: bool = False,
                remote: str = "origin") -> Written:
        """Assign ``stage`` to ``name@version`` (``NAME#STAGE#N`` on its commit)."""
        self._declared_stage(stage)
        mv = self._active(name, parse_version_arg(version))
        if stage in mv.stages:
            raise RegistryError(f"{name} {mv.version} is already at stage {stage}")
        event = TagName(name, "assign", stage=stage, counter=self.model(name).max_counter + 1)
        return self._write(event, mv.commit, f"Promote {name} {mv.version} to {stage}", push,
                           remote, mv)

    def demote(self, name: str, stage: str, *, push: bool = False,
               remote: str = "origin") -> Written:
        """Unassign ``stage`` from the version holding it (``NAME#STAGE!#N``)."""
        state = self.model(name)
        held = state.holders.get(stage)
        if held is None:
            raise RegistryError(f"no version of {name} is at stage {quoted(stage)}",
                                hint="stages held: " + (", ".join(
                                    f"{s}={v}" for s, v in state.holders.items()) or "none"))
        mv = self.version(name, held)
        event = TagName(name, "unassign", stage=stage, counter=state.max_counter + 1)
        return self._write(event, mv.commit, f"Demote {name} {held} from {stage}", push,
                           remote, mv)

    def deprecate(self, name: str, version: str | None = None, *, push: bool = False,
                  remote: str = "origin") -> Written:
        """Deregister ``name@version`` (``NAME@vX.Y.Z!#N``), or without a version deprecate
        the whole model (``NAME@deprecated#N``)."""
        state = self.model(name)
        counter = state.max_counter + 1
        if version is None:
            if state.deprecated:
                raise RegistryError(f"{name} is already deprecated")
            commit = _git.rev_parse(self.workspace, "HEAD^{commit}") or state.events[-1].commit
            return self._write(TagName(name, "deprecate", counter=counter), commit,
                               f"Deprecate {name}", push, remote, None)
        mv = self._active(name, parse_version_arg(version))
        return self._write(TagName(name, "deregister", version=mv.version, counter=counter),
                           mv.commit, f"Deprecate {name} {mv.version}", push, remote, mv)

    # ------------------------------------------------------------------ helpers

    def config(self) -> Any:
        """``registry:`` of the workspace's mlops.yaml (a ``RegistryConfig``)."""
        from gha_mlops.config import DEFAULT_CONFIG, load_pipeline

        config = self.workspace / DEFAULT_CONFIG
        registry = load_pipeline(config).registry
        if registry is None:
            raise RegistryError(f"{config} has no `registry:` section",
                                hint="declare the models and stages, e.g. `registry: "
                                     "{models: {digits: {path: package/model.onnx}}}` "
                                     "(docs/registry.md)", file=config)
        return registry

    def _declared_stage(self, stage: str) -> None:
        stages = self.config().stages
        if stage not in stages:
            raise RegistryError(f"stage {quoted(stage)} is not declared in registry.stages",
                                hint="declared stages: " + ", ".join(stages)
                                + "; add it to `registry.stages` in mlops.yaml")

    def _active(self, name: str, version: str) -> ModelVersion:
        mv = self.version(name, version)
        if mv.deprecated:
            what = "the model is deprecated" if self.model(name).deprecated else (
                "the version was deprecated (deregistered)")
            raise RegistryError(f"{name} {version} cannot be used: {what}",
                                hint="register a new version")
        return mv

    def tag_time(self, name: str) -> int:
        """Now, or one second after the model's newest event if that is later."""
        state = self.state.get(name)
        last = state.last_time if state is not None else 0
        return max(int(self.now()), last + 1)

    def _write(self, event: TagName, commit: str, headline: str, push: bool, remote: str,
               mv: ModelVersion | None, body: str = "") -> Written:
        tag = tag_name(event)
        if push:
            check_remote_free(self.workspace, remote, tag)
        _git.create_tag(self.workspace, tag, commit, headline + "\n" + body,
                        when=self.tag_time(event.model))
        self.refresh()
        if push:
            push_tags(self.workspace, remote, [tag])
        return Written((tag,), mv, pushed=push)


def parse_version_arg(text: str) -> str:
    try:
        return parse_version(text)
    except ValueError:
        raise RegistryError(f"{quoted(text)} is not a version X.Y.Z",
                            hint="write it as 1.2.0 or v1.2.0") from None


def _split_ref(ref: str) -> tuple[str, str, str]:
    cut = min((i for i in (ref.find("@"), ref.find("#")) if i >= 0), default=-1)
    name, sep, rest = (ref, "", "") if cut < 0 else (ref[:cut], ref[cut], ref[cut + 1:])
    if not MODEL_NAME_RE.fullmatch(name):
        raise RegistryError(f"{quoted(ref)} does not name a model",
                            hint="write NAME, NAME@1.2.0 or NAME#STAGE")
    return name, sep, rest


def check_remote_free(repo: Path, remote: str, tag: str) -> None:
    """:class:`RegistryError` when ``remote`` already has the tag ``tag`` (with other
    content: the tag is about to be made here, so any object there is another)."""
    there = _git.remote_ref(repo, remote, f"refs/tags/{tag}")
    local = _git.rev_parse(repo, f"refs/tags/{tag}")
    if there is not None and there != local:
        raise RegistryError(
            f"the tag {tag} exists on {remote} with other content ({there[:12]}); nothing "
            "was written and nothing is ever forced",
            hint="someone registered or promoted concurrently: `git fetch --tags "
                 f"{remote}` and run the command again")


def push_tags(repo: Path, remote: str, tags: list[str]) -> None:
    """Push ``tags`` (and the notes refs there are) to ``remote``, never forced."""
    refs = [f"refs/tags/{t}" for t in tags]
    refs += [ref for ref in (_git.NOTES_REF, _git.PROFILE_NOTES_REF)
             if _git.rev_parse(repo, ref) is not None]
    try:
        _git.push(repo, remote, refs)
    except GitError as err:
        raise RegistryError(
            f"{', '.join(tags)} made here, but the push to {remote} failed: {err.stderr[:300]}",
            hint=f"nothing was forced; push it when {remote} can take it: `git push {remote} "
                 + " ".join(f"'{r}'" for r in refs) + "`") from err


def open_registry(workspace: Path) -> Registry:
    """The registry of the git repository holding ``workspace`` (the folder of mlops.yaml).
    Tags are signed by git's committer identity (its configuration, or
    ``GIT_COMMITTER_NAME``/``GIT_COMMITTER_EMAIL``), else by ``gha-mlops``."""
    return Registry(workspace.absolute())


__all__ = ["ModelVersion", "Registry", "Written", "open_registry"]
