"""``gha-mlops report``: compare a head run with a baseline run, check the gates."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gha_mlops.config import DEFAULT_CONFIG
from gha_mlops.errors import UsageError

if TYPE_CHECKING:
    pass

@click.command()
@click.argument("head", default="latest")
@click.option("--baseline", "-b", default=None, metavar="RUN|FILE|URL",
              help="The run to compare with (the champion): a run id, a unique prefix, "
                   "`latest~N`, a run record file (e.g. from a downloaded artifact), or an "
                   "http(s) URL of a record JSON or an artifact zip. Default: with a "
                   "`registry:` in mlops.yaml, the run of the model at its champion stage "
                   "(docs/registry.md); else, in GitHub Actions, the record of the latest successful run on the base branch "
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
    from gha_mlops import bootstrap
    from gha_mlops.gha import Actions
    from gha_mlops.reporting import pr_report as service

    context = bootstrap.github_context(os.environ)
    host = bootstrap.image_host(images_url, images_base_url, report_id, context)
    with contextlib.ExitStack() as opened:  # closes the GitHub client and the image host
        ports = service.ReportPorts(
            github=lambda: opened.enter_context(bootstrap.github(os.environ)),
            download=bootstrap.baseline_downloader(context), actions=Actions(os.environ),
            echo=click.echo, warn=_warn, images=host and opened.enter_context(host))
        if from_artifact is None:
            service.run_report(service.ReportRequest(
                head, baseline, base_branch, baseline_artifact, output, config, report_id,
                publish, repo, pr, issue, sha, assets_branch), context, ports)
        elif not publish:
            raise UsageError("--from-artifact publishes a stored report: add --publish")
        else:
            service.publish_stored_report(from_artifact, context, ports,
                                          assets_branch=assets_branch)


def _warn(text: str) -> None:
    click.echo(text, err=True)
