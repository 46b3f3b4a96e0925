"""Publishing a report to GitHub through the :class:`~gha_mlops.github.port.GitHubPort`.

- One **sticky comment** per pull request (or issue) and report id: found by its hidden marker
  among all the comments (every page), edited in place, created only when absent.
- A **check run** with the verdict on the head commit; where the token may not create check
  runs (403), a commit **status** instead.
- **Images** committed to a dedicated assets branch through the Git Data API and linked by
  commit-SHA URLs (immutable: a later report never changes an earlier comment's pictures).
- Targets: a pull request (comment + check), a push (commit comment + check), an issue
  (comment), or nothing but the step summary (``kind="summary"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gha_mlops.github.port import Comment, GitHubError, GitHubPort
from gha_mlops.reporting.markdown import marker, sanitize_report_id


@dataclass(frozen=True)
class Target:
    repo: str  # owner/name
    kind: str  # "pull_request", "push", "issue" or "summary"
    sha: str = ""
    number: int | None = None  # the pull request or issue


@dataclass
class Published:
    comment: Comment | None = None
    comment_created: bool = False
    check_url: str = ""
    status_instead_of_check: bool = False
    image_urls: dict[str, str] = field(default_factory=dict)
    assets_commit: str = ""


def publish(port: GitHubPort, target: Target, render: Callable[[Mapping[str, str]], str], *,
            report_id: str, passed: bool, headline: str,
            images: Mapping[str, bytes] | None = None, assets_branch: str = "gha-mlops-assets",
            server_url: str = "https://github.com", check_name: str = "gha-mlops report",
            details_url: str | None = None) -> Published:
    """Publish the report ``render(image_urls)`` (Markdown, already within GitHub's limits and
    carrying :func:`marker` ``(report_id)``) to ``target``."""
    out = Published()
    if target.kind == "summary":
        return out
    if images:
        folder = f"{sanitize_report_id(report_id)}/{(target.sha or 'no-sha')[:12]}"
        files = {f"{folder}/{name}": data for name, data in images.items()}
        out.assets_commit = port.commit_files(
            target.repo, assets_branch, files,
            f"gha-mlops report {report_id} images for {(target.sha or '')[:12]}")
        out.image_urls = {name: f"{server_url.rstrip('/')}/{target.repo}/raw/"
                          f"{out.assets_commit}/{folder}/{name}" for name in images}
    body = render(out.image_urls)
    tag = marker(report_id)
    if tag not in body:
        body = f"{tag}\n{body}"
    if target.kind in ("pull_request", "issue"):
        if target.number is None:
            raise GitHubError(f"a {target.kind} target needs its number")
        existing = next((c for c in port.issue_comments(target.repo, target.number)
                         if tag in c.body), None)
        if existing is None:
            out.comment = port.create_issue_comment(target.repo, target.number, body)
            out.comment_created = True
        elif existing.body != body:
            out.comment = port.edit_issue_comment(target.repo, target.number, existing.id,
                                                  body)
        else:
            out.comment = existing
    elif target.kind == "push":
        out.comment = port.create_commit_comment(target.repo, target.sha, body)
        out.comment_created = True
    if target.kind in ("pull_request", "push") and target.sha:
        conclusion = "success" if passed else "failure"
        try:
            out.check_url = port.create_check_run(
                target.repo, target.sha, name=check_name, conclusion=conclusion,
                title=headline, summary=body, details_url=details_url)
        except GitHubError as err:
            if err.status != 403:
                raise
            # Tokens without checks: write (and fork PRs' tokens) may still set a status.
            port.create_status(target.repo, target.sha, state=conclusion, context=check_name,
                               description=headline, target_url=details_url)
            out.status_instead_of_check = True
    return out


def target_from_event(environ: Mapping[str, str], *, repo: str | None = None,
                      pr: int | None = None, issue: int | None = None,
                      sha: str | None = None) -> Target:
    """Where a report goes, from the workflow's event (``GITHUB_EVENT_NAME``,
    ``GITHUB_EVENT_PATH``, ``GITHUB_REPOSITORY``, ``GITHUB_SHA``) unless given:
    ``pull_request``/``pull_request_target`` -> the PR (comment and check on its head commit),
    ``push`` -> a commit comment and check, anything else -> the step summary only, or the
    issue ``issue`` names."""
    import json

    from gha_mlops.errors import UsageError

    repo = repo or environ.get("GITHUB_REPOSITORY", "")
    if not repo or "/" not in repo:
        raise UsageError("which repository? GITHUB_REPOSITORY is not set",
                         hint="pass --repo OWNER/NAME (outside GitHub Actions)")
    if pr is not None:
        return Target(repo, "pull_request", sha=sha or environ.get("GITHUB_SHA", ""), number=pr)
    if issue is not None:
        return Target(repo, "issue", number=issue)
    event = environ.get("GITHUB_EVENT_NAME", "")
    payload: dict[str, object] = {}
    path = environ.get("GITHUB_EVENT_PATH")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = json.load(fh)
            payload = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read the event payload {path}: {err}") from None
    pull = payload.get("pull_request")
    if event.startswith("pull_request") and isinstance(pull, dict):
        head = pull.get("head") if isinstance(pull.get("head"), dict) else {}
        assert isinstance(head, dict)
        return Target(repo, "pull_request", sha=sha or str(head.get("sha") or ""),
                      number=int(str(pull.get("number"))))
    if event == "push":
        return Target(repo, "push", sha=sha or environ.get("GITHUB_SHA", ""))
    return Target(repo, "summary")
