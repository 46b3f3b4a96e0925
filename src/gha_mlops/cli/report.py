"""``gha-mlops report``: compare a head run with a baseline run, check the gates."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gha_mlops.config import DEFAULT_CONFIG, STATE_DIR
from gha_mlops.gha.safe import log_block, log_text

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gha_mlops.config.model import Gate
    from gha_mlops.reporting.compare import Comparison, RunFiles
    from gha_mlops.reporting.publish import Target

# Characters reserved per image in report.md for its link to grow into a commit-SHA URL.
_URL_ROOM = 256

# Room left in the step summary for what may follow (the CLI's error note, later steps' text).
_SUMMARY_RESERVE = 8 * 1024


@click.command()
@click.argument("head", default="latest")
@click.option("--baseline", "-b", default=None, metavar="RUN|FILE|URL",
              help="The run to compare with (the champion): a run id, a unique prefix, "
                   "`latest~N`, a run record file (e.g. from a downloaded artifact), or an "
                   "http(s) URL of a record JSON or an artifact zip. Default, in GitHub "
                   "Actions: the record of the latest successful run on the base branch "
                   "that uploaded --baseline-artifact.")
@click.option("--base-branch", metavar="NAME", help="Find the champion on this branch "
              "[default: the pull request's base, else the repository's default branch].")
@click.option("--baseline-artifact", default="gha-mlops-run", show_default=True,
              metavar="NAME", help="The artifact holding the champion's run record.")
@click.option("--from-artifact", type=click.Path(file_okay=False, path_type=Path),
              metavar="DIR", help="With --publish: publish the report a `--output DIR` run "
              "wrote (report.md, report.json, the PNGs), e.g. in a workflow_run workflow "
              "for fork pull requests; nothing is recomputed.")
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
@click.option("--images", "images_url", metavar="s3://BUCKET/PREFIX",
              help="With --publish: put the plots in this bucket instead of the assets branch "
                   "(objects named by content; the bucket or --images-base-url must be "
                   "readable by whoever reads the pull request).")
@click.option("--images-base-url", metavar="URL",
              help="With --images: the public URL of the bucket prefix (a CDN or website "
                   "endpoint) [default: the bucket's S3 URL].")
@click.option("--assets-branch", default="gha-mlops-assets", show_default=True,
              help="With --publish: the branch the plots are committed to.")
def report(head: str, baseline: str | None, base_branch: str | None,
           baseline_artifact: str, from_artifact: Path | None, output: Path | None,
           config: Path | None, report_id: str, publish: bool, repo: str | None,
           pr: int | None, issue: int | None, sha: str | None, images_url: str | None,
           images_base_url: str | None, assets_branch: str) -> None:
    """Compare run HEAD (default: latest) with a baseline run: metrics, parameters, data,
    stages and model, as Markdown, with the `gates:` of mlops.yaml checked.

    Exits 1 when a gate fails. In GitHub Actions the report also goes to the step summary.
    """
    if from_artifact is not None:
        _publish_stored(from_artifact, publish=publish, assets_branch=assets_branch)
        return
    with tempfile.TemporaryDirectory(prefix="gha-mlops-baseline-") as tmp:
        _report(head, baseline, base_branch=base_branch, artifact=baseline_artifact,
                scratch=Path(tmp), output=output, config=config, report_id=report_id,
                publish=publish, repo=repo, pr=pr, issue=issue, sha=sha,
                assets_branch=assets_branch,
                uploader=_bucket_uploader(images_url, images_base_url, report_id))


def _report(head: str, baseline: str | None, *, base_branch: str | None, artifact: str,
            scratch: Path, output: Path | None, config: Path | None, report_id: str,
            publish: bool, repo: str | None, pr: int | None, issue: int | None,
            sha: str | None, assets_branch: str, uploader: Any = None) -> None:
    from gha_mlops.gha import Actions
    from gha_mlops.reporting.compare import compare, read_run_files
    from gha_mlops.reporting.gates import evaluate_gates, gate_failed_error
    from gha_mlops.reporting.markdown import COMMENT_LIMIT, render

    config_path = config if config is not None else Path(DEFAULT_CONFIG)
    workspace = config_path.absolute().parent
    gates = _gates(config_path, explicit=config is not None)
    head_record, head_root = _load(head, workspace)
    base_ref = _baseline(baseline, base_branch=base_branch, artifact=artifact, scratch=scratch)
    base_record, base_root = _load(base_ref, workspace)
    directions = {name: g.direction for name, g in gates.items() if g.direction}
    base_files = read_run_files(base_record, base_root)
    head_files = read_run_files(head_record, head_root)
    comparison = compare(base_record, head_record, base_files=base_files,
                         head_files=head_files, directions=directions)
    verdict = evaluate_gates(comparison, gates)
    # Drawn once, for the files and for publishing, in a worker process: importing matplotlib
    # and drawing take about a second, which overlaps the GitHub calls that need no image.
    pending = _Charts(comparison, background=publish,
                      declared=_declared_images(base_files, head_files), first=tuple(gates))
    if output is not None:
        images = _write_plots(pending.get(), output)
        # Room for the image links' file names to become commit-SHA URLs when published.
        markdown = render(comparison, verdict, report_id=report_id, images=images,
                          limit=COMMENT_LIMIT - _URL_ROOM * len(images))
        _write(output / "report.md", markdown)
        full = render(comparison, verdict, report_id=report_id, images=images, limit=None)
        if full != markdown:
            _write(output / "report-full.md", full)
        _write(output / "report.json", _stored(report_id, verdict, images, repo=repo, pr=pr,
                                               issue=issue, sha=sha))
        click.echo(f"wrote {log_text(output / 'report.md')}, report.json and {len(images)} plots")
    else:
        # Markdown keeps names in code raw; printed to a job's log, no line may be a command.
        click.echo(log_block(render(comparison, verdict, report_id=report_id,
                                    limit=COMMENT_LIMIT)), nl=False)
    actions = Actions(os.environ)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if actions.active and target:
        # Images on disk cannot be shown in a step summary: the text only.
        actions.summary(render(comparison, verdict, report_id=report_id,
                               limit=_summary_room(Path(target))))
    if publish:
        _publish(comparison, verdict, pending, report_id=report_id, repo=repo, pr=pr,
                 issue=issue, sha=sha, assets_branch=assets_branch, uploader=uploader)
    if not verdict.passed:
        raise gate_failed_error(verdict)


def _publish(comparison: Comparison, verdict: Any, pending: _Charts, *,
             report_id: str, repo: str | None, pr: int | None, issue: int | None,
             sha: str | None, assets_branch: str, uploader: Any = None) -> None:
    from gha_mlops.github.pygithub import connect
    from gha_mlops.reporting import publish as pub
    from gha_mlops.reporting.markdown import render

    environ = os.environ
    target = pub.target_from_event(environ, repo=repo, pr=pr, issue=issue, sha=sha)
    if target.kind == "summary":
        click.echo("published to the step summary only (not a pull request or push; "
                   "--pr N or --issue N names a target)")
        return
    token = _token()
    titles: dict[str, str] = {}

    def images() -> dict[str, bytes]:
        charts = pending.get()
        titles.update({name: title for name, (title, _) in charts.items()})
        return {name: png for name, (_, png) in charts.items()}

    server = environ.get("GITHUB_SERVER_URL", "https://github.com")
    details = _details_url(target.repo)
    port = connect(token, environ.get("GITHUB_API_URL", "https://api.github.com"))
    headline = _headline(verdict)
    out = pub.publish(
        port, target,
        lambda urls: render(comparison, verdict, report_id=report_id,
                            images={titles[n]: u for n, u in urls.items()},
                            full_report_url=details),
        report_id=report_id, passed=verdict.passed, headline=headline, images=images,
        assets_branch=assets_branch, server_url=server, details_url=details,
        upload_images=uploader)
    _echo_published(out)


def _bucket_uploader(url: str | None, base_url: str | None, report_id: str) -> Any:
    """``--images s3://BUCKET/PREFIX``: a function putting the plots in the bucket, each under
    a name made of its content hash (immutable, like a commit-SHA URL), and returning their
    URLs; None without ``--images``."""
    if not url:
        return None
    import hashlib

    from gha_mlops.errors import UsageError
    from gha_mlops.reporting.markdown import sanitize_report_id

    if not url.startswith("s3://") or len(url) <= 5:
        raise UsageError(f"--images must be an s3://BUCKET/PREFIX URL, got {url!r}",
                         hint="leave it out to keep the plots on the gha-mlops-assets branch")
    bucket, _, prefix = url[5:].partition("/")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    root = (base_url or (f"{endpoint.rstrip('/')}/{bucket}" if endpoint else
                         f"https://{bucket}.s3.amazonaws.com")
            + (f"/{prefix.strip('/')}" if prefix.strip("/") and not base_url else ""))

    def upload(images: Mapping[str, bytes]) -> dict[str, str]:
        from gha_mlops.data.stores import open_store

        store = open_store(url, endpoint_url=endpoint)
        urls = {}
        try:
            for name, data in images.items():
                key = (f"{sanitize_report_id(report_id)}/"
                       f"{hashlib.sha256(data).hexdigest()[:16]}-{name}")
                store.upload_bytes(key, data)
                urls[name] = f"{root.rstrip('/')}/{key}"
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()
        return urls

    return upload


def _headline(verdict: Any) -> str:
    """The verdict's headline, the very words of report.md's title (one :class:`Outcome`)."""
    from gha_mlops.reporting.outcome import outcome

    return outcome(verdict).headline


def _details_url(target_repo: str) -> str | None:
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
    run_id = os.environ.get("GITHUB_RUN_ID")
    return f"{server}/{target_repo}/actions/runs/{run_id}" if run_id else None


def _token() -> str:
    from gha_mlops.errors import UsageError

    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    if not token:
        raise UsageError("--publish needs a token: GITHUB_TOKEN is not set",
                         hint="pass it to the step: env: GITHUB_TOKEN: ${{ github.token }}")
    return token


def _baseline(baseline: str | None, *, base_branch: str | None, artifact: str,
              scratch: Path) -> str:
    """What ``_load`` reads as the baseline: ``baseline`` itself, or a record downloaded (a
    URL) or found through the Actions API (no ``--baseline``) into ``scratch``."""
    from gha_mlops.errors import UsageError
    from gha_mlops.reporting import baseline as bl

    environ = os.environ
    api_url = environ.get("GITHUB_API_URL", "https://api.github.com")
    token = environ.get("GITHUB_TOKEN") or environ.get("GH_TOKEN")
    if baseline is not None and baseline.startswith(("https://", "http://")):
        from gha_mlops.github.pygithub import download

        data = download(baseline, token=token, api_url=api_url,
                        what=f"download the baseline {baseline}")
        return str(bl.record_from_download(data, scratch, source=baseline))
    if baseline is not None:
        return baseline
    repo = environ.get("GITHUB_REPOSITORY", "")
    if not repo or not token:
        raise UsageError("no --baseline, and no champion to find: GITHUB_REPOSITORY or "
                         "GITHUB_TOKEN is not set",
                         hint="pass --baseline RUN|FILE|URL, or run in GitHub Actions with "
                              "env: GITHUB_TOKEN: ${{ github.token }} (permissions: "
                              "actions: read)")
    branch = base_branch or bl.base_branch(environ.get("GITHUB_EVENT_NAME", ""),
                                           bl.load_event(environ))
    if not branch:
        raise UsageError("which branch holds the champion? the event payload names no base "
                         "or default branch", hint="pass --base-branch NAME or --baseline")
    from gha_mlops.github.pygithub import connect

    champion, record = bl.fetch_champion(connect(token, api_url), repo, branch, scratch,
                                         artifact)
    click.echo(f"baseline: the champion from run {champion.run.html_url or champion.run.id} "
               f"on {log_text(branch)} ({log_text(champion.run.head_sha[:12])})", err=True)
    return str(record)


def _stored(report_id: str, verdict: Any, images: dict[str, str], *, repo: str | None,
            pr: int | None, issue: int | None, sha: str | None) -> str:
    """report.json: what publishing from another workflow needs (``--from-artifact``)."""
    from gha_mlops.errors import UsageError
    from gha_mlops.reporting import publish as pub

    target: Target | None
    try:
        target = pub.target_from_event(os.environ, repo=repo, pr=pr, issue=issue, sha=sha)
    except UsageError:  # outside Actions: no repository, nowhere to publish to
        target = None
    return pub.stored_report_json(pub.StoredReport(
        report_id, bool(verdict.passed), _headline(verdict), target,
        tuple((name, title) for title, name in images.items()), "report.md",
        _details_url(target.repo) if target is not None else None))


def _publish_stored(folder: Path, *, publish: bool, assets_branch: str) -> None:
    """``--from-artifact DIR --publish``: publish what DIR holds; exit 1 if it failed."""
    from gha_mlops.errors import GhaMlopsError, UsageError
    from gha_mlops.github.pygithub import connect
    from gha_mlops.reporting import baseline as bl
    from gha_mlops.reporting import publish as pub

    if not publish:
        raise UsageError("--from-artifact publishes a stored report: add --publish")
    stored = pub.load_stored_report(folder)
    environ = os.environ
    target = stored.target
    json_path = folder / pub.STORED_FILE
    if target is None or target.kind == "summary":
        click.echo(f"nothing to publish: {json_path} names no pull request, push or issue")
    else:
        here = environ.get("GITHUB_REPOSITORY", "")
        if target.repo.lower() != here.lower():
            raise UsageError(f"{json_path}: target.repo is {target.repo}, but this workflow "
                             f"runs in {here or '(GITHUB_REPOSITORY unset)'}: refusing to "
                             "publish there", hint="publish from a workflow of the target "
                             "repository", file=json_path)
        payload = bl.load_event(environ)
        run = payload.get("workflow_run")
        run_sha = str(run.get("head_sha") or "") if isinstance(run, dict) else ""
        if run_sha and target.sha and run_sha != target.sha:
            raise UsageError(f"{json_path}: target.sha is {target.sha}, but the workflow run "
                             f"that uploaded it ran on {run_sha}: refusing to publish",
                             hint="download the artifact of the triggering run "
                                  "(run-id: ${{ github.event.workflow_run.id }})",
                             file=json_path)
        details = (str(run.get("html_url") or "") or None) if isinstance(run, dict) else None
        out = pub.publish_stored(
            connect(_token(), environ.get("GITHUB_API_URL", "https://api.github.com")),
            folder, stored, assets_branch=assets_branch,
            server_url=environ.get("GITHUB_SERVER_URL", "https://github.com"),
            details_url=details)
        if out is None:
            click.echo(f"not published: pull request #{target.number} has moved on from "
                       f"{log_text(target.sha[:12])} (a newer run reports on it)", err=True)
        else:
            _echo_published(out)
    if not stored.passed:
        raise GhaMlopsError(f"the stored report failed its gates: {stored.headline}",
                            hint=f"see {folder / stored.markdown}")


def _echo_published(out: Any) -> None:
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


class _Charts:
    """The report's plots, drawn in forked worker processes when ``background`` (Linux; two
    workers sharing the charts where there are two CPUs), else when first asked for;
    :meth:`get` waits for them."""

    def __init__(self, comparison: Comparison, *, background: bool,
                 declared: Mapping[str, tuple[str, bytes]] | None = None,
                 first: tuple[str, ...] = ()) -> None:
        import sys

        self._comparison = comparison
        self._first = first  # the gated metrics: first in the metric chart
        self._declared = dict(declared or {})
        self._result: dict[str, tuple[str, bytes]] | None = None
        self._futures: list[Any] = []
        if background and sys.platform == "linux":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            parts = 2 if (os.cpu_count() or 1) > 1 else 1
            try:
                self._pool = ProcessPoolExecutor(parts,
                                                 mp_context=multiprocessing.get_context("fork"))
                self._futures = [self._pool.submit(_charts, comparison, part, parts, first)
                                 for part in range(parts)]
            except (OSError, ValueError):  # no fork here: draw when asked
                self._futures = []

    def get(self) -> dict[str, tuple[str, bytes]]:
        if self._result is None:
            if self._futures:
                try:
                    # Worker k drew charts k, k + parts, ...: interleave them back in order.
                    shares = [list(f.result().items()) for f in self._futures]
                    merged = [item for i in range(max(map(len, shares), default=0))
                              for share in shares if i < len(share) for item in [share[i]]]
                    self._result = dict(merged)
                finally:
                    self._pool.shutdown()
            else:
                self._result = _charts(self._comparison, first=self._first)
            self._result.update(self._declared)
        return self._result


def _declared_images(base: RunFiles, head: RunFiles) -> dict[str, tuple[str, bytes]]:
    """The image plots the stages declare (``plots:``), baseline and head side by side: file
    name -> (title, bytes), as :func:`~gha_mlops.reporting.compare.read_run_files` found
    them (the recorded bytes, from the cache or the workspace, at most 5 MiB)."""
    import re

    out: dict[str, tuple[str, bytes]] = {}
    for path in sorted({*base.images, *head.images}):
        slug = re.sub(r"[^A-Za-z0-9]+", "-", path.rsplit(".", 1)[0]).strip("-")
        suffix = "." + path.rsplit(".", 1)[1].lower()
        for side, files in (("baseline", base), ("head", head)):
            data = files.images.get(path)
            if data is not None:
                out[f"declared-{slug}-{side}{suffix}"] = (f"{path} ({side})", data)
    return out


def _charts(comparison: Comparison, part: int = 0, parts: int = 1,
            first: tuple[str, ...] = ()) -> dict[str, tuple[str, bytes]]:
    """The report's plots, file name -> (title, PNG). Without matplotlib the report goes
    without plots and a warning says what to install."""
    from gha_mlops.errors import MissingExtraError
    from gha_mlops.reporting.plots import report_plots

    try:
        return report_plots(comparison, part=part, parts=parts, first=first)
    except MissingExtraError as err:
        if part == 0:  # one warning, however many workers
            click.echo(f"warning: no plots: {err.message} ({err.hint})", err=True)
        return {}


def _write_plots(charts: Mapping[str, tuple[str, bytes]], output: Path) -> dict[str, str]:
    """Write the plots into ``output``; title -> file name."""
    from gha_mlops._fs import atomic_write_bytes

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
