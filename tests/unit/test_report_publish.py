"""Publishing logic over a fake GitHub port: sticky comments, check runs with a status
fallback, images by commit-SHA URLs, and the targets."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from gha_mlops.github.port import Comment, GitHubError
from gha_mlops.reporting.publish import Target, marker, publish
from gha_mlops.testing.fakes import FakeGitHub

PR = Target("octo/model", "pull_request", sha="a" * 40, number=7)


def render(urls: Mapping[str, str]) -> str:
    return "report\n" + "\n".join(f"![{k}]({v})" for k, v in sorted(urls.items()))


def test_one_sticky_comment_per_report_edited_in_place() -> None:
    gh = FakeGitHub()
    gh.comments[7] = [Comment(1, "LGTM"), Comment(2, "unrelated <!-- gha-mlops-report:other -->")]
    first = publish(gh, PR, render, report_id="main", passed=True, headline="ok")
    assert first.comment_created and marker("main") in first.comment.body  # type: ignore[union-attr]
    second = publish(gh, PR, lambda _: "report v2", report_id="main", passed=False,
                     headline="worse")
    assert not second.comment_created
    bodies = [c.body for c in gh.comments[7]]
    assert len(bodies) == 3 and bodies[2].endswith("report v2")
    assert bodies[1].startswith("unrelated")  # another report's comment is left alone
    assert [c["conclusion"] for c in gh.checks] == ["success", "failure"]
    # Publishing the same body again edits nothing.
    publish(gh, PR, lambda _: "report v2", report_id="main", passed=False, headline="worse")
    assert gh.calls.count("edit") == 1


def test_images_go_to_the_assets_branch_and_are_linked_by_commit_sha() -> None:
    gh = FakeGitHub()
    out = publish(gh, PR, render, report_id="main", passed=True, headline="ok",
                  images={"metrics.png": b"\x89PNG1", "loss.png": b"\x89PNG2"},
                  server_url="https://ghe.example.com/")
    [files] = gh.commits
    assert set(files) == {"main/aaaaaaaaaaaa/metrics.png", "main/aaaaaaaaaaaa/loss.png"}
    url = out.image_urls["loss.png"]
    assert url == f"https://ghe.example.com/octo/model/raw/{out.assets_commit}/main/aaaaaaaaaaaa/loss.png"
    assert url in gh.comments[7][0].body


def test_a_token_without_checks_write_sets_a_commit_status_instead() -> None:
    gh = FakeGitHub(checks_allowed=False)
    out = publish(gh, PR, render, report_id="main", passed=False, headline="accuracy dropped")
    assert out.status_instead_of_check
    assert gh.statuses == [{"sha": "a" * 40, "state": "failure", "context": "gha-mlops report"}]


def test_push_comments_on_the_commit_and_summary_publishes_nothing() -> None:
    gh = FakeGitHub()
    publish(gh, Target("octo/model", "push", sha="b" * 40), render, report_id="r",
            passed=True, headline="ok")
    assert gh.commit_comments and gh.commit_comments[0][0] == "b" * 40 and gh.checks
    gh2 = FakeGitHub()
    out = publish(gh2, Target("octo/model", "summary"), render, report_id="r", passed=True,
                  headline="ok")
    assert out.comment is None and not gh2.calls and not gh2.checks


def test_other_errors_are_not_swallowed() -> None:
    class Broken(FakeGitHub):
        def create_check_run(self, *args: object, **kwargs: object) -> str:
            raise GitHubError("HTTP 422", status=422)

    with pytest.raises(GitHubError, match="422"):
        publish(Broken(), PR, render, report_id="main", passed=True, headline="ok")


def test_marker_ids_are_sanitized() -> None:
    assert marker("a b-->c") == "<!-- gha-mlops-report:a-b-c -->"  # no early "-->"
    assert marker("") == "<!-- gha-mlops-report:default -->"
