"""``model register``: a run's model becomes a version tag (see docs/registry.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gha_mlops.errors import GhaMlopsError, quoted
from gha_mlops.registry import _git
from gha_mlops.registry._files import find_model_bytes
from gha_mlops.registry._record import lineage_of
from gha_mlops.registry.bump import decide_bump
from gha_mlops.registry.errors import RegistryError
from gha_mlops.registry.grammar import Bump, TagName, bumped, semver_key, tag_name
from gha_mlops.registry.lineage import Lineage, message, read_message
from gha_mlops.runs.record import RunRecord
from gha_mlops.runs.refs import resolve

if TYPE_CHECKING:
    from gha_mlops.registry.service import Registry, SignatureOf, Written


def register(reg: Registry, name: str, run: str, *, version: str | None, bump: Bump | None,
             signature_of: SignatureOf | None, push: bool, remote: str) -> Written:
    """See :meth:`Registry.register`: every check is made before the tag."""
    from gha_mlops.registry.service import Written, check_remote_free, parse_version_arg, push_tags

    version = parse_version_arg(version) if version is not None else None  # input first
    model = reg.config().models.get(name)
    if model is None:
        declared = ", ".join(reg.config().models) or "none"
        raise RegistryError(f"no model {quoted(name)} in registry.models of mlops.yaml",
                            hint=f"declared models: {declared}")
    record = resolve(run, reg.workspace).record
    commit = _run_commit(reg, record)
    notes: list[str] = []
    signature = _signature(reg, model.path, record, signature_of, notes)
    lineage = lineage_of(record, model.path, commit=commit, signature=signature)
    state = reg.state.get(name)
    for known in (state.versions.values() if state else ()):
        if known.commit == commit:
            raise RegistryError(
                f"{name} {known.version} is already registered at commit {commit[:12]}; "
                "GTO finds a stage's version by its commit, so one commit holds one version "
                "of a model",
                hint="commit the change that made the new model, run the pipeline, and "
                     "register that run")
    new_version, reason = _next_version(reg, name, lineage, version, bump)
    if record.git is not None and record.git.dirty:
        notes.append(f"run {record.id} ran with uncommitted changes: commit {commit[:12]} "
                     "may not hold the exact code")
    tag = tag_name(TagName(name, "register", version=new_version))
    if push:
        check_remote_free(reg.workspace, remote, tag)
    text = message(f"Register {name} {new_version} from run {record.id}", lineage)
    _git.create_tag(reg.workspace, tag, commit, text, when=reg.tag_time(name))
    reg.refresh()
    if push:
        push_tags(reg.workspace, remote, [tag])
    return Written((tag,), reg.version(name, new_version), tuple(notes), push, reason)


def _run_commit(reg: Registry, record: RunRecord) -> str:
    if record.kind != "run" or record.status != "succeeded":
        raise RegistryError(f"run {record.id} is a {record.kind} that {record.status}: only "
                            "a succeeded run can be registered",
                            hint="see `gha-mlops runs list`")
    commit = record.git.commit if record.git is not None else None
    if not commit:
        raise RegistryError(f"run {record.id} has no git commit in its record (it ran outside "
                            "a git repository, or before the first commit)",
                            hint="commit the project and run the pipeline again")
    if not _git.commit_exists(reg.workspace, commit):
        raise RegistryError(f"the commit of run {record.id} ({commit[:12]}) is not in this "
                            "repository", hint="fetch it (git fetch) or register the run "
                                               "where it was made")
    return commit


def _signature(reg: Registry, path: str, record: RunRecord,
               signature_of: SignatureOf | None, notes: list[str]) -> dict[str, object] | None:
    if signature_of is None or not path.endswith(".onnx"):
        return None  # a signature is derived from ONNX graphs only
    from gha_mlops.registry._record import model_output_sha256

    found = find_model_bytes(reg.workspace, path, model_output_sha256(record, path))
    if found is None:
        notes.append(f"{path} of run {record.id} is not here: no signature derived, so the "
                     "bump cannot see a signature change")
        return None
    try:
        return signature_of(found)
    except (ImportError, GhaMlopsError) as err:
        notes.append(f"no signature derived ({str(err)[:160]}): the bump cannot see a "
                     "signature change")
        return None


def _next_version(reg: Registry, name: str, lineage: Lineage, version: str | None,
                  bump: Bump | None) -> tuple[str, str]:
    """The new version and why: ``version`` as given (it must be new), else the highest
    existing version bumped by ``bump`` or by :func:`decide_bump`."""
    state = reg.state.get(name)
    existing = list(state.versions.values()) if state else []
    if version is not None:
        new = version
        if state is not None and new in state.versions:
            what = "" if state.versions[new].active else " (deprecated)"
            raise RegistryError(f"{name} {new} exists already{what}",
                                hint="give another --version, or leave it out to bump "
                                     "the highest version")
        return new, "given with --version"
    if not existing:
        return bumped(None, "major"), "the model's first version"
    top = max(existing, key=lambda v: semver_key(v.version))
    if bump is not None:
        return bumped(top.version, bump), f"--bump {bump}"
    decision = decide_bump(read_message(top.message), lineage)
    return bumped(top.version, decision.bump), f"{decision.bump}: {decision.reason}"
