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

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gha_mlops.github.port import Comment, GitHubError, GitHubPort, StoredReportPort
from gha_mlops.reporting.images import AssetsBranchHost, ImageHost
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
            images: Mapping[str, bytes] | Callable[[], Mapping[str, bytes]] | None = None,
            assets_branch: str = "gha-mlops-assets", host: ImageHost | None = None,
            server_url: str = "https://github.com", check_name: str = "gha-mlops report",
            details_url: str | None = None) -> Published:
    """Publish the report ``render(image_urls)`` (Markdown, already within GitHub's limits and
    carrying :func:`marker` ``(report_id)``) to ``target``. Images go to ``host`` when given
    (the caller closes it), else to ``assets_branch`` (:class:`AssetsBranchHost`)."""
    out = Published()
    if target.kind == "summary":
        return out
    tag = marker(report_id)
    existing: Comment | None = None
    if target.kind in ("pull_request", "issue"):
        if target.number is None:
            raise GitHubError(f"a {target.kind} target needs its number")
        # Looked up before the images are needed: they may still be drawing (``images`` may
        # be a callable that waits for them).
        existing = next((c for c in port.issue_comments(target.repo, target.number)
                         if tag in c.body), None)
    if callable(images):
        images = images()
    if images and host is not None:  # the user's own storage (a bucket)
        out.image_urls = host.upload(images)
    elif images:
        assets = AssetsBranchHost(
            port, target.repo, assets_branch,
            f"{sanitize_report_id(report_id)}/{(target.sha or 'no-sha')[:12]}",
            server_url=server_url,
            message=f"gha-mlops report {report_id} images for {(target.sha or '')[:12]}")
        out.image_urls = assets.upload(images)
        out.assets_commit = assets.commit
    body = render(out.image_urls)
    if tag not in body:
        body = f"{tag}\n{body}"
    if target.kind in ("pull_request", "issue"):
        assert target.number is not None
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


# ---------------------------------------------------------------------- stored reports
#
# The fork-safe pattern: a `pull_request` workflow (no secrets, a read-only token on forks)
# writes `report.md`, the PNGs and `report.json` with `--output DIR` and uploads DIR; a
# `workflow_run` workflow (with the token) publishes them without recomputing. report.md
# links each image by its bare file name, `](metrics.png)`; publishing replaces that
# placeholder with the commit-SHA URL of the image on the assets branch.

STORED_SCHEMA = 1
STORED_FILE = "report.json"


@dataclass(frozen=True)
class StoredReport:
    report_id: str
    passed: bool
    headline: str
    target: Target | None  # None: written outside a workflow that has one
    images: tuple[tuple[str, str], ...] = ()  # (file name, title)
    markdown: str = "report.md"
    details_url: str | None = None


def stored_report_json(report: StoredReport) -> str:
    """``report.json``'s text for ``report``."""
    target = report.target
    doc: dict[str, Any] = {
        "schema": STORED_SCHEMA, "report_id": report.report_id, "passed": report.passed,
        "headline": report.headline, "markdown": report.markdown,
        "target": None if target is None else {"repo": target.repo, "kind": target.kind,
                                               "number": target.number, "sha": target.sha},
        "images": [{"file": f, "title": t} for f, t in report.images],
        "details_url": report.details_url}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def load_stored_report(folder: Path) -> StoredReport:
    """``folder/report.json``, validated: every error names the file and the key."""
    from gha_mlops.errors import UsageError

    path = folder / STORED_FILE
    hint = ("write it with `gha-mlops report --output DIR` and upload DIR whole; download "
            "that artifact into the folder given to --from-artifact")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist", hint=hint) from None
    except (OSError, ValueError) as err:
        raise UsageError(f"{path} is not valid JSON: {err}", hint=hint) from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: expected a JSON object", hint=hint, file=path)

    def bad(key: str, expected: str) -> UsageError:
        return UsageError(f"{path}: key {key!r} is missing or not {expected}", hint=hint,
                          file=path)

    def get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], expected: str,
            prefix: str = "") -> Any:
        value = obj.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise bad(prefix + key, expected)
        return value

    if doc.get("schema") != STORED_SCHEMA:
        raise UsageError(f"{path}: key 'schema' is {doc.get('schema')!r}, this gha-mlops "
                         f"reads schema {STORED_SCHEMA}",
                         hint="use the same gha-mlops version in both workflows", file=path)
    report_id = get(doc, "report_id", str, "a string")
    passed = get(doc, "passed", bool, "true or false")
    headline = get(doc, "headline", str, "a string")
    markdown = get(doc, "markdown", str, "a file name")
    details = doc.get("details_url")
    if details is not None and not isinstance(details, str):
        raise bad("details_url", "a string or null")
    raw_target = doc.get("target")
    target = None
    if raw_target is not None:
        if not isinstance(raw_target, dict):
            raise bad("target", "an object or null")
        kind = get(raw_target, "kind", str, "pull_request, push, issue or summary", "target.")
        if kind not in ("pull_request", "push", "issue", "summary"):
            raise bad("target.kind", "pull_request, push, issue or summary")
        number = raw_target.get("number")
        if kind in ("pull_request", "issue"):
            number = get(raw_target, "number", int, "an integer", "target.")
        repo = get(raw_target, "repo", str, "OWNER/NAME", "target.")
        if repo.count("/") != 1:
            raise bad("target.repo", "OWNER/NAME")
        sha = raw_target.get("sha") or ""
        if not isinstance(sha, str):
            raise bad("target.sha", "a string")
        target = Target(repo, kind, sha=sha, number=number if isinstance(number, int) else None)
    images: list[tuple[str, str]] = []
    raw_images = doc.get("images")
    if not isinstance(raw_images, list):
        raise bad("images", "a list")
    for i, item in enumerate(raw_images):
        if not isinstance(item, dict):
            raise bad(f"images[{i}]", "an object")
        images.append((get(item, "file", str, "a file name", f"images[{i}]."),
                       get(item, "title", str, "a string", f"images[{i}].")))
    for name in [markdown, *(f for f, _ in images)]:
        if not _plain_name(name):
            raise UsageError(f"{path}: {name!r} is not a plain file name", hint=hint,
                             file=path)
        if not (folder / name).is_file():
            raise UsageError(f"{folder / name} is missing (named in {path})", hint=hint)
    return StoredReport(report_id, passed, headline, target, tuple(images), markdown, details)


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def link_images(markdown: str, files: Sequence[str], urls: Mapping[str, str]) -> str:
    """``markdown`` with each image link to a bare file name, ``](NAME)``, pointed at
    ``urls[NAME]``."""
    for name in files:
        if name in urls:
            markdown = markdown.replace(f"]({name})", f"]({urls[name]})")
    return markdown


def publish_stored(port: StoredReportPort, folder: Path, report: StoredReport, *,
                   assets_branch: str = "gha-mlops-assets",
                   server_url: str = "https://github.com",
                   details_url: str | None = None) -> Published | None:
    """Publish a report stored in ``folder`` (:func:`load_stored_report`) to its target, as
    :func:`publish` would have. Returns ``None`` without writing anything when the pull
    request's head is no longer the stored commit (a newer push publishes its own report, or
    report.json names the wrong pull request)."""
    target = report.target
    assert target is not None
    if target.kind == "pull_request" and target.number is not None:
        head = port.pull_head_sha(target.repo, target.number)
        if target.sha and head != target.sha:
            return None
    markdown = (folder / report.markdown).read_text(encoding="utf-8")
    files = [name for name, _ in report.images]
    images = {name: (folder / name).read_bytes() for name in files}
    return publish(port, target, lambda urls: link_images(markdown, files, urls),
                   report_id=report.report_id, passed=report.passed, headline=report.headline,
                   images=images, assets_branch=assets_branch, server_url=server_url,
                   details_url=details_url or report.details_url)
