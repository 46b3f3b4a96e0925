"""``gha-mlops report``: compare a head run with a baseline run, check the gates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gha_mlops.config import DEFAULT_CONFIG, STATE_DIR

if TYPE_CHECKING:
    from gha_mlops.config.model import Gate
    from gha_mlops.reporting.compare import Comparison

# Room left in the step summary for what may follow (the CLI's error note, later steps' text).
_SUMMARY_RESERVE = 8 * 1024


@click.command()
@click.argument("head", default="latest")
@click.option("--baseline", "-b", required=True, metavar="RUN|FILE",
              help="The run to compare with (the champion): a run id, a unique prefix, "
                   "`latest~N`, or a run record file (e.g. from a downloaded artifact).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              metavar="DIR", help="Write report.md and the plots (PNG) into DIR.")
@click.option("--config", "-c", "config", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help=f"The pipeline file, whose `gates:` are checked [default: {DEFAULT_CONFIG}]; "
                   "its directory is the workspace.")
@click.option("--report-id", default="default", show_default=True,
              help="Names the report in its hidden marker, so a later run updates the same "
                   "pull-request comment (e.g. one id per workflow).")
@click.option("--publish", is_flag=True,
              help="Also publish to GitHub: the sticky pull-request comment (or a commit "
                   "comment on push), a check run with the verdict, and the plots on an assets "
                   "branch. Needs GITHUB_TOKEN; the target comes from the workflow's event.")
@click.option("--repo", metavar="OWNER/NAME", help="With --publish: the repository "
              "[default: $GITHUB_REPOSITORY].")
@click.option("--pr", type=int, metavar="N", help="With --publish: this pull request.")
@click.option("--issue", type=int, metavar="N", help="With --publish: comment on this issue "
              "(e.g. from a workflow_dispatch run).")
@click.option("--sha", metavar="SHA", help="With --publish: the commit for the check run.")
@click.option("--assets-branch", default="gha-mlops-assets", show_default=True,
              help="With --publish: the branch the plots are committed to.")
def report(head: str, baseline: str, output: Path | None, config: Path | None,
           report_id: str, publish: bool, repo: str | None, pr: int | None,
           issue: int | None, sha: str | None, assets_branch: str) -> None:
    """Compare run HEAD (default: latest) with a baseline run: metrics, parameters, data,
    stages and model, as Markdown, with the `gates:` of mlops.yaml checked.

    Exits 1 when a gate fails. In GitHub Actions the report also goes to the step summary.
    """
    from gha_mlops.gha import Actions
    from gha_mlops.reporting.compare import compare, read_run_files
    from gha_mlops.reporting.gates import evaluate_gates, gate_failed_error
    from gha_mlops.reporting.markdown import COMMENT_LIMIT, render

    config_path = config if config is not None else Path(DEFAULT_CONFIG)
    workspace = config_path.absolute().parent
    gates = _gates(config_path, explicit=config is not None)
    head_record, head_root = _load(head, workspace)
    base_record, base_root = _load(baseline, workspace)
    directions = {name: g.direction for name, g in gates.items() if g.direction}
    comparison = compare(base_record, head_record,
                         base_files=read_run_files(base_record, base_root),
                         head_files=read_run_files(head_record, head_root),
                         directions=directions)
    verdict = evaluate_gates(comparison, gates)
    if output is not None:
        images = _write_plots(comparison, output)
        markdown = render(comparison, verdict, report_id=report_id, images=images)
        _write(output / "report.md", markdown)
        full = render(comparison, verdict, report_id=report_id, images=images, limit=None)
        if full != markdown:
            _write(output / "report-full.md", full)
        click.echo(f"wrote {output / 'report.md'} and {len(images)} plots")
    else:
        click.echo(render(comparison, verdict, report_id=report_id, limit=COMMENT_LIMIT),
                   nl=False)
    actions = Actions(os.environ)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if actions.active and target:
        # Images on disk cannot be shown in a step summary: the text only.
        actions.summary(render(comparison, verdict, report_id=report_id,
                               limit=_summary_room(Path(target))))
    if publish:
        _publish(comparison, verdict, report_id=report_id, repo=repo, pr=pr, issue=issue,
                 sha=sha, assets_branch=assets_branch)
    if not verdict.passed:
        raise gate_failed_error(verdict)


def _publish(comparison: Comparison, verdict: Any, *, report_id: str, repo: str | None,
             pr: int | None, issue: int | None, sha: str | None, assets_branch: str) -> None:
    from gha_mlops.errors import UsageError
    from gha_mlops.github.pygithub import connect
    from gha_mlops.reporting import publish as pub
    from gha_mlops.reporting.markdown import render

    environ = os.environ
    target = pub.target_from_event(environ, repo=repo, pr=pr, issue=issue, sha=sha)
    if target.kind == "summary":
        click.echo("published to the step summary only (not a pull request or push; "
                   "--pr N or --issue N names a target)")
        return
    token = environ.get("GITHUB_TOKEN") or environ.get("GH_TOKEN")
    if not token:
        raise UsageError("--publish needs a token: GITHUB_TOKEN is not set",
                         hint="pass it to the step: env: GITHUB_TOKEN: ${{ github.token }}")
    try:
        from gha_mlops.reporting.plots import report_plots

        charts = report_plots(comparison)
    except ImportError:
        charts = {}
    images = {name: png for name, (_, png) in charts.items()}
    titles = {name: title for name, (title, _) in charts.items()}
    server = environ.get("GITHUB_SERVER_URL", "https://github.com")
    run_id = environ.get("GITHUB_RUN_ID")
    details = f"{server}/{target.repo}/actions/runs/{run_id}" if run_id else None
    port = connect(token, environ.get("GITHUB_API_URL", "https://api.github.com"))
    failed = len(getattr(verdict, "failed", []) or [])
    headline = ("all gates pass" if verdict.passed else f"{failed} gate(s) failed")
    out = pub.publish(
        port, target,
        lambda urls: render(comparison, verdict, report_id=report_id,
                            images={titles[n]: u for n, u in urls.items()},
                            full_report_url=details),
        report_id=report_id, passed=verdict.passed, headline=headline, images=images,
        assets_branch=assets_branch, server_url=server, details_url=details)
    if out.comment is not None:
        verb = "created" if out.comment_created else "updated"
        click.echo(f"{verb} comment {out.comment.url or out.comment.id}")
    if out.check_url or out.status_instead_of_check:
        click.echo("commit status set (the token may not create check runs)"
                   if out.status_instead_of_check else f"check run {out.check_url}")


def _gates(config: Path, *, explicit: bool) -> dict[str, Gate]:
    """The gates of ``config``; none when the default mlops.yaml does not exist (two record
    files can be compared anywhere)."""
    from gha_mlops.config import load_pipeline

    if not explicit and not config.exists():
        return {}
    return dict(load_pipeline(config).gates)


def _load(ref: str, workspace: Path) -> tuple[dict[str, Any], Path]:
    """The record ``ref`` names and the directory its files are read from: the workspace for
    a run of it; for a record file, the workspace it sits in (``.gha-mlops/runs/``), else
    the record file's directory."""
    from gha_mlops.errors import UsageError
    from gha_mlops.pipeline.records import RunStore
    from gha_mlops.reporting.run_summary import load_record_file

    path = Path(ref)
    if ref.endswith(".json") or path.is_file():
        if not path.is_file():
            raise UsageError(f"no run record file {ref}",
                             hint="give a record file, a run id, `latest` or `latest~N`")
        parent = path.absolute().parent
        root = (parent.parent.parent if parent.name == "runs" and parent.parent.name == STATE_DIR
                else parent)
        return load_record_file(path), root
    return RunStore(workspace / STATE_DIR / "runs").load(ref), workspace


def _write_plots(comparison: Comparison, output: Path) -> dict[str, str]:
    """Draw the plots into ``output``; title -> file name. Without matplotlib the report is
    written without plots and a warning says what to install."""
    from gha_mlops._fs import atomic_write_bytes
    from gha_mlops.errors import MissingExtraError
    from gha_mlops.reporting.plots import report_plots

    try:
        charts = report_plots(comparison)
    except MissingExtraError as err:
        click.echo(f"warning: no plots: {err.message} ({err.hint})", err=True)
        return {}
    images: dict[str, str] = {}
    for name, (title, png) in charts.items():
        atomic_write_bytes(output / name, png)
        images[title] = name
    return images


def _write(path: Path, text: str) -> None:
    from gha_mlops._fs import atomic_write_text

    atomic_write_text(path, text)


def _summary_room(path: Path) -> int:
    from gha_mlops.reporting.run_summary import STEP_SUMMARY_LIMIT

    try:
        used = path.stat().st_size
    except OSError:
        used = 0
    # The limit is in bytes, render's in characters: a character is at most 4 bytes.
    return max((STEP_SUMMARY_LIMIT - used - _SUMMARY_RESERVE) // 4, 4096)
