"""Finding the baseline of a report when none is named: the **champion**, the run record that
the latest successful workflow run on the base branch uploaded as an artifact.

Pure orchestration over :class:`~gha_mlops.github.port.ActionsPort` (the adapter does the
HTTP): walk the base branch's successful runs newest first, skip runs a pull request started
(their artifacts come from unreviewed code, possibly a fork) and runs without the artifact or
with only an expired one, download the first one found, and unpack the run record (and the
metrics and plot files beside it) into a directory the report reads it from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gha_mlops.errors import ExitCode, GhaMlopsError, UsageError
from gha_mlops.github.port import ActionsPort, ArtifactRef, GitHubError, WorkflowRunRef

# Unpacking a downloaded run is the RUN resolver's (one reader of artifacts); re-exported.
from gha_mlops.runs.refs import extract_record as extract_record

DEFAULT_ARTIFACT = "gha-mlops-run"
MAX_RUNS = 30  # successful runs looked at before giving up


class NoChampionError(GhaMlopsError):
    """The base branch has no usable champion: nothing to compare with."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Champion:
    run: WorkflowRunRef
    artifact: ArtifactRef
    archive: bytes  # the artifact's zip


def load_event(environ: Mapping[str, str]) -> dict[str, Any]:
    """The workflow's event payload (``GITHUB_EVENT_PATH``), or ``{}`` when there is none."""
    path = environ.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read the event payload {path}: {err}") from None
    return loaded if isinstance(loaded, dict) else {}


def base_branch(event_name: str, payload: Mapping[str, Any]) -> str | None:
    """The branch whose champion a report compares with: a pull request's base branch
    (``pull_request.base.ref``), else the repository's default branch
    (``repository.default_branch``); ``None`` when the payload has neither."""
    pull = payload.get("pull_request")
    if event_name.startswith("pull_request") and isinstance(pull, dict):
        base = pull.get("base")
        if isinstance(base, dict) and base.get("ref"):
            return str(base["ref"])
    repository = payload.get("repository")
    if isinstance(repository, dict) and repository.get("default_branch"):
        return str(repository["default_branch"])
    return None


def find_champion(port: ActionsPort, repo: str, branch: str,
                  artifact: str = DEFAULT_ARTIFACT, *, max_runs: int = MAX_RUNS) -> Champion:
    """The artifact ``artifact`` of the newest successful run on ``branch`` that has a live
    one, among the last ``max_runs`` successful runs. Raises :class:`NoChampionError` when
    there is none (saying whether expired artifacts were seen); GitHub's errors (a 403 naming
    ``actions: read``) pass through."""
    expired: list[WorkflowRunRef] = []
    seen = 0
    for run in port.successful_runs(repo, branch):
        if seen >= max_runs:
            break
        seen += 1
        if run.event.startswith("pull_request") or run.head_repo.lower() != repo.lower():
            continue  # a pull request's run: not the branch's reviewed state
        named = [a for a in port.run_artifacts(repo, run.id) if a.name == artifact]
        live = [a for a in named if not a.expired]
        if named and not live:
            expired.append(run)
        for candidate in reversed(live):  # the last uploaded first
            try:
                data = port.download_artifact(repo, candidate.id)
            except GitHubError as err:
                if err.status != 410:
                    raise
                expired.append(run)  # expired between the listing and the download
                continue
            return Champion(run, candidate, data)
    if expired:
        runs = ", ".join(r.html_url or str(r.id) for r in expired[:3])
        raise NoChampionError(
            f"the champion's artifact {artifact} on {branch} has expired (run {runs})",
            hint="run the base branch's workflow again to upload a fresh one (or raise its "
                 "retention-days), or pass --baseline")
    raise NoChampionError(
        f"no champion yet: the base branch {branch} has no successful run with artifact "
        f"{artifact}; merge a first model or pass --baseline",
        hint=f"looked at the last {seen} successful run(s) of {branch}; the workflow on "
             f"{branch} must upload it (actions/run with upload: \"true\", artifact-name: "
             f"{artifact}), or name another with --baseline-artifact / --base-branch")


def fetch_champion(port: ActionsPort, repo: str, branch: str, dest: Path,
                   artifact: str = DEFAULT_ARTIFACT, *,
                   max_runs: int = MAX_RUNS) -> tuple[Champion, Path]:
    """:func:`find_champion`, unpacked into ``dest``: the champion and its record's path."""
    champion = find_champion(port, repo, branch, artifact, max_runs=max_runs)
    source = f"artifact {artifact} of run {champion.run.html_url or champion.run.id}"
    return champion, extract_record(champion.archive, dest, source=source)
