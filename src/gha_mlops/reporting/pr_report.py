"""The pull-request report as a service: baseline, compare, gates, render, publish.

:func:`run_report` compares a head run with a baseline run (named, downloaded, or the
champion found through the Actions API), checks the pipeline's gates, writes the report
(``--output``), prints it, appends it to the step summary and publishes it to GitHub.
:func:`publish_stored_report` publishes a report another workflow wrote (the fork-safe
pattern), after checking that it belongs to this repository and to the run that triggered
this workflow. Both take their ports as arguments and never read ``os.environ``: the facts of
the environment come as a :class:`~gha_mlops.reporting.context.GitHubContext`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gha_mlops._fs import atomic_write_bytes, atomic_write_text
from gha_mlops.config import DEFAULT_CONFIG
from gha_mlops.config.model import Gate
from gha_mlops.errors import GhaMlopsError, UsageError
from gha_mlops.gha.runtime import Actions
from gha_mlops.gha.safe import log_block, log_text
from gha_mlops.github.port import GitHubAPI
from gha_mlops.reporting import publish as pub
from gha_mlops.reporting.charts import Charts, PendingCharts, declared_images
from gha_mlops.reporting.compare import Comparison, compare, read_run_files
from gha_mlops.reporting.context import Echo, GitHubContext
from gha_mlops.reporting.gates import Verdict, evaluate_gates, gate_failed_error
from gha_mlops.reporting.images import ImageHost
from gha_mlops.reporting.markdown import COMMENT_LIMIT, render
from gha_mlops.reporting.outcome import outcome
from gha_mlops.reporting.run_summary import summary_room_bytes
from gha_mlops.runs.refs import Located, resolve

# Characters reserved per image in report.md for its link to grow into a commit-SHA URL.
_URL_ROOM = 256


@dataclass(frozen=True)
class ReportRequest:
    """What ``gha-mlops report`` was asked (its options, parsed)."""

    head: str = "latest"
    baseline: str | None = None
    base_branch: str | None = None
    baseline_artifact: str = "gha-mlops-run"
    output: Path | None = None
    config: Path | None = None  # None: mlops.yaml, which may be absent
    report_id: str = "default"
    publish: bool = False
    repo: str | None = None
    pr: int | None = None
    issue: int | None = None
    sha: str | None = None
    assets_branch: str = "gha-mlops-assets"


@dataclass(frozen=True)
class ReportPorts:
    """The adapters the report uses. ``github`` is called (once at most) only when GitHub is
    needed, so a local report needs no token; ``download`` fetches a ``--baseline URL``;
    ``images`` hosts the plots (None: the assets branch); ``echo`` and ``warn`` print a line
    to stdout and stderr."""

    github: Callable[[], GitHubAPI]
    download: Callable[[str], bytes]
    actions: Actions
    echo: Echo
    warn: Callable[[str], None]
    images: ImageHost | None = None


@dataclass(frozen=True)
class _Compared:
    comparison: Comparison
    verdict: Verdict
    charts: PendingCharts


def run_report(request: ReportRequest, context: GitHubContext, ports: ReportPorts) -> Verdict:
    """Compare, render, write, print and publish (see the module documentation); returns the
    verdict, or raises :class:`~gha_mlops.reporting.gates.GateFailedError` (exit 1) after
    everything was written and published when a gate fails."""
    github = _Lazy(ports.github)
    with tempfile.TemporaryDirectory(prefix="gha-mlops-baseline-") as tmp:
        done = _compare(request, context, ports, github, Path(tmp))
    if request.output is not None:
        _write_output(request, context, done, ports)
    else:
        # Markdown keeps names in code raw; printed to a job's log, no line may be a command.
        ports.echo(log_block(render(done.comparison, done.verdict, report_id=request.report_id,
                                    limit=COMMENT_LIMIT)), nl=False)
    if ports.actions.active and context.step_summary is not None:
        room = max(summary_room_bytes(context.step_summary) // 4, 4096)  # <= 4 bytes a char
        # Images on disk cannot be shown in a step summary: the text only.
        ports.actions.summary(render(done.comparison, done.verdict,
                                     report_id=request.report_id, limit=room))
    if request.publish:
        _publish(request, context, done, ports, github)
    if not done.verdict.passed:
        raise gate_failed_error(done.verdict)
    return done.verdict


class _Lazy:
    """The GitHub port, built on first use."""

    def __init__(self, build: Callable[[], GitHubAPI]) -> None:
        self._build = build
        self._port: GitHubAPI | None = None

    def __call__(self) -> GitHubAPI:
        if self._port is None:
            self._port = self._build()
        return self._port


def _compare(request: ReportRequest, context: GitHubContext, ports: ReportPorts,
             github: _Lazy, scratch: Path) -> _Compared:
    config = request.config if request.config is not None else Path(DEFAULT_CONFIG)
    workspace = config.absolute().parent
    gates = _gates(config, explicit=request.config is not None)
    head = _files_root(resolve(request.head, workspace))
    base = _files_root(_registry_baseline(request, config, workspace, ports.warn)
                       or _baseline(request, context, ports, github, workspace, scratch))
    directions = {name: g.direction for name, g in gates.items() if g.direction}
    base_rec, head_rec = base[0].record, head[0].record
    base_files, head_files = read_run_files(base_rec, base[1]), read_run_files(head_rec, head[1])
    comparison = compare(base_rec, head_rec, base_files=base_files, head_files=head_files,
                         directions=directions)
    # Drawn once, for the files and for publishing, in worker processes: importing matplotlib
    # and drawing take about a second, which overlaps the GitHub calls that need no image.
    charts = PendingCharts(comparison, background=request.publish,
                           declared=declared_images(base_files, head_files),
                           first=tuple(gates), warn=ports.warn)
    return _Compared(comparison, evaluate_gates(comparison, gates), charts)


def _files_root(located: Located) -> tuple[Located, Path]:
    """The run and the folder its files are read from: its workspace, else the folder of its
    record file."""
    return located, located.files_root or located.path.absolute().parent


def _gates(config: Path, *, explicit: bool) -> dict[str, Gate]:
    """The gates of ``config``; none when the default mlops.yaml does not exist (two record
    files can be compared anywhere)."""
    from gha_mlops.config import load_pipeline

    if not explicit and not config.exists():
        return {}
    return dict(load_pipeline(config).gates)


def _registry_baseline(request: ReportRequest, config: Path, workspace: Path,
                       warn: Callable[[str], None]) -> Located | None:
    """Without ``--baseline``, when mlops.yaml has a ``registry:``: the run of the model at
    its champion stage (``registry.champion``), the first declared model that has one. None
    (the Actions API's champion is used) when there is no registry, no model at the stage,
    or its run is not recorded in this workspace (said in a note)."""
    if request.baseline is not None or not config.exists():
        return None
    from gha_mlops.config import load_pipeline
    from gha_mlops.registry import open_registry
    from gha_mlops.runs.store import RunStore

    registry = load_pipeline(config).registry
    if registry is None or not registry.models:
        return None
    reg = open_registry(workspace)
    try:
        state = reg.state
    except GhaMlopsError:  # not a git repository: no registry to read
        return None
    for name in registry.models:
        held = state[name].holders.get(registry.champion) if name in state else None
        if held is None:
            continue
        run_id = reg.version(name, held, images=False).lineage.run_id
        if RunStore.of(workspace).has(run_id):
            warn(f"baseline: the champion {log_text(name)} {held} at stage "
                 f"{log_text(registry.champion)} (run {log_text(run_id)})")
            return resolve(run_id, workspace)
        warn(f"note: the champion {log_text(name)} {held} at stage "
             f"{log_text(registry.champion)} was made by run {log_text(run_id or '?')}, "
             "which is not recorded here; looking for the champion as without a registry")
        return None
    return None


def _baseline(request: ReportRequest, context: GitHubContext, ports: ReportPorts,
              github: _Lazy, workspace: Path, scratch: Path) -> Located:
    """The baseline run: ``--baseline`` (a run, a record file or a URL downloaded into
    ``scratch``), else the champion found through the Actions API."""
    from gha_mlops.reporting import baseline as bl

    if request.baseline is not None:
        return resolve(request.baseline, workspace, download=ports.download, scratch=scratch)
    if not context.repository or not context.token:
        raise UsageError("no --baseline, and no champion to find: GITHUB_REPOSITORY or "
                         "GITHUB_TOKEN is not set",
                         hint="pass --baseline RUN|FILE|URL, or run in GitHub Actions with "
                              "env: GITHUB_TOKEN: ${{ github.token }} (permissions: "
                              "actions: read)")
    branch = request.base_branch or bl.base_branch(
        context.event_name, bl.load_event(context.event_environ()))
    if not branch:
        raise UsageError("which branch holds the champion? the event payload names no base "
                         "or default branch", hint="pass --base-branch NAME or --baseline")
    champion, record = bl.fetch_champion(github(), context.repository, branch, scratch,
                                         request.baseline_artifact)
    ports.warn(f"baseline: the champion from run {champion.run.html_url or champion.run.id} "
               f"on {log_text(branch)} ({log_text(champion.run.head_sha[:12])})")
    return resolve(str(record), workspace)


def _write_output(request: ReportRequest, context: GitHubContext, done: _Compared,
                  ports: ReportPorts) -> None:
    """``--output DIR``: report.md (within a comment's limit), report-full.md when that was
    cut, report.json (for ``--from-artifact``) and the plots."""
    output = request.output
    assert output is not None
    images = _write_plots(done.charts.get(), output)
    comparison, verdict, report_id = done.comparison, done.verdict, request.report_id
    # Room for the image links' file names to become commit-SHA URLs when published.
    markdown = render(comparison, verdict, report_id=report_id, images=images,
                      limit=COMMENT_LIMIT - _URL_ROOM * len(images))
    atomic_write_text(output / "report.md", markdown)
    full = render(comparison, verdict, report_id=report_id, images=images, limit=None)
    if full != markdown:
        atomic_write_text(output / "report-full.md", full)
    atomic_write_text(output / "report.json", stored_json(
        report_id, verdict, images, repo=request.repo, pr=request.pr, issue=request.issue,
        sha=request.sha, context=context))
    ports.echo(f"wrote {log_text(output / 'report.md')}, report.json and {len(images)} plots")


def _write_plots(charts: Charts, output: Path) -> dict[str, str]:
    """Write the plots into ``output``; title -> file name."""
    images: dict[str, str] = {}
    for name, (title, png) in charts.items():
        atomic_write_bytes(output / name, png)
        images[title] = name
    return images


def stored_json(report_id: str, verdict: Verdict, images: dict[str, str], *,
                repo: str | None, pr: int | None, issue: int | None, sha: str | None,
                context: GitHubContext | None = None) -> str:
    """report.json: what publishing from another workflow needs (``--from-artifact``): the
    verdict, its headline (report.md's title), the target the event names (none outside
    Actions) and the plots, title -> file name in ``images``."""
    context = context or GitHubContext()
    target: pub.Target | None
    try:
        target = pub.target_from_event(context.event_environ(), repo=repo, pr=pr,
                                       issue=issue, sha=sha)
    except UsageError:  # outside Actions: no repository, nowhere to publish to
        target = None
    return pub.stored_report_json(pub.StoredReport(
        report_id, bool(verdict.passed), outcome(verdict).headline, target,
        tuple((name, title) for title, name in images.items()), "report.md",
        context.run_url(target.repo) if target is not None else None))


def _publish(request: ReportRequest, context: GitHubContext, done: _Compared,
             ports: ReportPorts, github: _Lazy) -> None:
    target = pub.target_from_event(context.event_environ(), repo=request.repo, pr=request.pr,
                                   issue=request.issue, sha=request.sha)
    if target.kind == "summary":
        ports.echo("published to the step summary only (not a pull request or push; "
                   "--pr N or --issue N names a target)")
        return
    titles: dict[str, str] = {}

    def images() -> dict[str, bytes]:
        charts = done.charts.get()
        titles.update({name: title for name, (title, _) in charts.items()})
        return {name: png for name, (_, png) in charts.items()}

    details = context.run_url(target.repo)
    out = pub.publish(
        github(), target,
        lambda urls: render(done.comparison, done.verdict, report_id=request.report_id,
                            images={titles[n]: u for n, u in urls.items()},
                            full_report_url=details),
        report_id=request.report_id, passed=done.verdict.passed,
        headline=outcome(done.verdict).headline, images=images,
        assets_branch=request.assets_branch, server_url=context.server, details_url=details,
        host=ports.images)
    _echo_published(ports, out)


def _echo_published(ports: ReportPorts, out: pub.Published) -> None:
    """What publishing did, one line each: the comment, and the check run or status."""
    if out.comment is not None:
        verb = "created" if out.comment_created else "updated"
        ports.echo(f"{verb} comment {out.comment.url or out.comment.id}")
    if out.check_url or out.status_instead_of_check:
        ports.echo("commit status set (the token may not create check runs)"
                   if out.status_instead_of_check else f"check run {out.check_url}")


def publish_stored_report(folder: Path, context: GitHubContext, ports: ReportPorts, *,
                          assets_branch: str = "gha-mlops-assets") -> pub.StoredReport:
    """``--from-artifact DIR --publish``: publish the report DIR holds (report.json, validated)
    to its target, refusing one that names another repository or another commit than the
    workflow run that triggered this one. Raises :class:`GhaMlopsError` (exit 1) after
    publishing when the stored report failed its gates."""
    stored = pub.load_stored_report(folder)
    target = stored.target
    json_path = folder / pub.STORED_FILE
    if target is None or target.kind == "summary":
        ports.echo(f"nothing to publish: {json_path} names no pull request, push or issue")
    else:
        details = _check_stored_target(target, json_path, context)
        out = pub.publish_stored(ports.github(), folder, stored, assets_branch=assets_branch,
                                 server_url=context.server, details_url=details)
        if out is None:
            ports.warn(f"not published: pull request #{target.number} has moved on from "
                       f"{log_text(target.sha[:12])} (a newer run reports on it)")
        else:
            _echo_published(ports, out)
    if not stored.passed:
        raise GhaMlopsError(f"the stored report failed its gates: {stored.headline}",
                            hint=f"see {folder / stored.markdown}")
    return stored


def _check_stored_target(target: pub.Target, json_path: Path,
                         context: GitHubContext) -> str | None:
    """Refuse a stored report's target outside this repository, or on another commit than
    the triggering workflow run's; returns that run's page (the check run's details)."""
    from gha_mlops.reporting import baseline as bl

    here = context.repository
    if target.repo.lower() != here.lower():
        raise UsageError(f"{json_path}: target.repo is {target.repo}, but this workflow "
                         f"runs in {here or '(GITHUB_REPOSITORY unset)'}: refusing to "
                         "publish there", hint="publish from a workflow of the target "
                         "repository", file=json_path)
    run = bl.load_event(context.event_environ()).get("workflow_run")
    run_sha = str(run.get("head_sha") or "") if isinstance(run, dict) else ""
    if run_sha and target.sha and run_sha != target.sha:
        raise UsageError(f"{json_path}: target.sha is {target.sha}, but the workflow run "
                         f"that uploaded it ran on {run_sha}: refusing to publish",
                         hint="download the artifact of the triggering run "
                              "(run-id: ${{ github.event.workflow_run.id }})",
                         file=json_path)
    return (str(run.get("html_url") or "") or None) if isinstance(run, dict) else None
