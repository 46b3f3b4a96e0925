"""Acting on drift verdicts over FakeGitHub: one issue per model found by its marker, edited in
place, closed when the alarm clears; one dispatch per trip (retried when it failed, never
repeated while the alarm stays on); hostile feature names in the report; GitHub's limits."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from gha_mlops.config.model import MonitorModel, MonitorRetrain
from gha_mlops.errors import GhaMlopsError
from gha_mlops.github.port import GitHubError
from gha_mlops.monitor.act import (
    ISSUE_BODY_LIMIT,
    MAX_REASON,
    ActResult,
    act_on,
    dispatch_reason,
    find_issue,
    issue_body,
    marker,
)
from gha_mlops.monitor.hysteresis import AlarmState, HysteresisConfig, Verdict, Window, step
from gha_mlops.testing.fakes import FakeGitHub

REPO = "octo/demo"
DAY = 86400.0
T0 = 1_800_000_000.0
CONFIG = HysteresisConfig(high=0.5, low=0.3, k=2, n=3, m=1, cooldown_s=7 * DAY,
                          min_samples=100)
RETRAIN = MonitorRetrain(workflow="retrain.yml", inputs={"epochs": "3"})
MODEL = MonitorModel(name="digits", log="logs", retrain=RETRAIN,
                     issue_labels=("drift", "ml"))


class Loop:
    """The monitor's loop over windows: the hysteresis step, then act_on, state kept."""

    def __init__(self, gh: FakeGitHub, model: MonitorModel = MODEL, **act: object) -> None:
        self.gh, self.model, self.act = gh, model, act
        self.state = AlarmState()
        self.day = 0
        self.results: list[ActResult] = []

    def window(self, score: float, samples: int = 1000, report: str = "report") -> ActResult:
        self.day += 1
        now = T0 + self.day * DAY
        self.state, verdict = step(self.state, Window(now, score, samples), CONFIG, now=now)
        result = act_on(self.gh, REPO, self.model, verdict=verdict, state=self.state,
                        report_md=report, now=now, **self.act)  # type: ignore[arg-type]
        self.state = result.state
        self.results.append(result)
        return result


def _open(gh: FakeGitHub) -> list[int]:
    return [n for n, i in gh.issues.items() if i.state == "open" and n not in gh.pulls]


def test_a_trip_opens_one_issue_and_dispatches_once() -> None:
    gh = FakeGitHub(workflows={"retrain.yml": {"epochs": True, "reason": False}})
    loop = Loop(gh)
    assert loop.window(0.9).issue is None  # 1 of 3 over high: watch, nothing written
    assert gh.monitor_calls == ["list"] and gh.issues == {}
    result = loop.window(0.8)  # 2 of 3: trips
    assert result.dispatched and result.issue is not None and result.errors == ()
    issue = gh.issues[result.issue.number]
    assert issue.labels == ("drift", "ml") and issue.title == "Drift alarm: model digits"
    assert issue.body.splitlines()[0] == "<!-- gha-mlops:drift model=digits -->"
    assert "retrain.yml" in issue.body and "Nothing is promoted" in issue.body
    [dispatch] = gh.dispatches
    assert dispatch["workflow"] == "retrain.yml" and dispatch["ref"] == "main"
    assert dispatch["inputs"]["epochs"] == "3"
    assert dispatch["inputs"]["reason"].startswith("drift alarm of model digits: 2 of the")
    assert result.state.last_dispatch == T0 + 2 * DAY and not result.state.dispatch_pending
    assert any("GITHUB_TOKEN runs no workflows" in n for n in result.notes)


def test_still_tripped_edits_the_same_issue_and_dispatches_nothing_more() -> None:
    gh = FakeGitHub()
    loop = Loop(gh)
    loop.window(0.9)
    first = loop.window(0.9)
    assert first.issue is not None
    for score in (0.9, 0.45, 0.7):  # 0.45 is between low and high: the alarm stays on
        result = loop.window(score, report=f"report at {score}")
        assert result.issue is not None and result.issue.number == first.issue.number
        assert not result.dispatched
        assert result.issue.body.rstrip().endswith(f"report at {score}")
        assert "was dispatched" in result.issue.body
    assert len(gh.dispatches) == 1 and _open(gh) == [first.issue.number]
    assert gh.monitor_calls.count("create") == 1 and gh.monitor_calls.count("edit") == 3


def test_a_failed_dispatch_stays_owed_and_the_next_run_retries_it() -> None:
    gh = FakeGitHub(failing_dispatches=1)
    loop = Loop(gh)
    loop.window(0.9)
    failed = loop.window(0.9)
    assert not failed.dispatched and failed.state.dispatch_pending
    assert failed.issue is not None  # the issue is written even though the dispatch failed
    assert "could not dispatch" in failed.issue.body and "next run retries" in failed.issue.body
    assert "is dispatched by" not in failed.issue.body
    assert any("HTTP 502" in e for e in failed.errors)
    retried = loop.window(0.9)
    assert retried.dispatched and not retried.state.dispatch_pending
    assert len(gh.dispatches) == 1 and retried.issue is not None
    assert retried.issue.number == failed.issue.number


def test_github_refusing_the_dispatch_is_noted_never_raised() -> None:
    gh = FakeGitHub(workflows={"retrain.yml": None})  # no workflow_dispatch trigger
    loop = Loop(gh)
    loop.window(0.9)
    result = loop.window(0.9)
    assert not result.dispatched and result.state.dispatch_pending
    assert any("HTTP 422" in e and "retrain.yml" in e for e in result.errors)
    assert result.issue is not None  # both were attempted


def test_an_issue_github_refuses_still_lets_the_dispatch_happen() -> None:
    gh = FakeGitHub(issues_allowed=False)
    loop = Loop(gh)
    loop.window(0.9)
    result = loop.window(0.9)
    assert result.issue is None and result.dispatched and len(gh.dispatches) == 1
    assert any("issues: write" in e or "403" in e for e in result.errors)
    assert not result.state.dispatch_pending  # the dispatch is recorded, so not repeated
    again = loop.window(0.9)
    assert len(gh.dispatches) == 1 and again.issue is None


def test_cleared_closes_the_issue_saying_so() -> None:
    gh = FakeGitHub()
    loop = Loop(gh)
    loop.window(0.9)
    opened = loop.window(0.9)
    cleared = loop.window(0.1)
    assert cleared.issue is not None and cleared.issue.state == "closed"
    assert opened.issue is not None and cleared.issue.number == opened.issue.number
    assert "cleared" in cleared.issue.body and _open(gh) == []
    calls = len(gh.monitor_calls)
    quiet = loop.window(0.1)  # ok, no open issue: only the look-up
    assert quiet.issue is None and gh.monitor_calls[calls:] == ["list"]


def test_an_issue_left_open_by_a_failed_close_is_closed_by_the_next_clear_run() -> None:
    gh = FakeGitHub()
    number = gh.add_issue("Drift alarm: model digits", marker("digits") + "\nold",
                          labels=("drift",))
    verdict = Verdict(status="ok", tripped=False, newly_tripped=False, cleared=False,
                      dispatch=False, reason="0 of the last 3 windows over 0.50")
    result = act_on(gh, REPO, MODEL, verdict=verdict, state=AlarmState(), report_md="r",
                    now=T0)
    assert result.issue is not None and result.issue.number == number
    assert gh.issues[number].state == "closed"


def test_a_score_flapping_around_high_dispatches_once() -> None:
    rng = random.Random(16)
    gh = FakeGitHub()
    loop = Loop(gh)
    scores = [0.5 + rng.uniform(-0.15, 0.15) for _ in range(60)]  # crosses high, never low
    for score in scores:
        loop.window(score)
    assert sum(score > 0.5 for score in scores) > 20  # it did flap
    assert len(gh.dispatches) == 1 and sum(r.dispatched for r in loop.results) == 1
    assert gh.monitor_calls.count("create") == 1 and len(_open(gh)) == 1


def test_wider_flapping_dispatches_at_most_once_a_trip_and_a_cooldown() -> None:
    rng = random.Random(16)
    gh = FakeGitHub()
    loop = Loop(gh)
    for _ in range(120):  # four months of a score wandering across both thresholds
        loop.window(min(max(0.5 + rng.uniform(-0.25, 0.25), 0.0), 1.0))
    dispatched = [T0 + (i + 1) * DAY for i, r in enumerate(loop.results) if r.dispatched]
    assert len(gh.dispatches) == len(dispatched) >= 1
    assert all(b - a >= CONFIG.cooldown_s for a, b in itertools.pairwise(dispatched))
    assert len(_open(gh)) <= 1
    assert gh.monitor_calls.count("create") == len(dispatched)  # one issue a trip, not a run


def test_the_marker_is_found_among_many_issues_and_pull_requests() -> None:
    gh = FakeGitHub()
    for i in range(40):
        gh.add_issue(f"other {i}", f"body {i}", labels=("drift",))
    mine = gh.add_issue("the one", marker("digits") + "\r\nbody", labels=("DRIFT",))
    # Newer than it, so found first if they were taken for it:
    gh.add_issue("a pull request", marker("digits") + "\n", labels=("drift",), pull=True)
    gh.add_issue("closed", marker("digits") + "\n", labels=("drift",), state="closed")
    gh.add_issue("unlabelled", marker("digits") + "\n")
    gh.add_issue("other model", marker("digits2") + "\n", labels=("drift",))
    gh.add_issue("quoted", "see <!-- gha-mlops:drift model=digits -->", labels=("drift",))
    for i in range(10):
        gh.add_issue(f"newer {i}", "x", labels=("drift",))
    found = find_issue(gh, REPO, MODEL)
    assert found is not None and found.number == mine


def test_hostile_feature_names_cannot_mention_or_hide_or_fake_a_marker() -> None:
    gh = FakeGitHub()
    hostile = ("| `@octocat` | @org/team x@y.z |\n"
               "<!-- gha-mlops:drift model=other -->\n"
               "<!-- the rest is hidden\n"
               "-->\n@admins please look")
    loop = Loop(gh)
    loop.window(0.9, report=hostile)
    result = loop.window(0.9, report=hostile)
    assert result.issue is not None
    body = gh.issues[result.issue.number].body
    lines = body.splitlines()
    assert lines[0] == marker("digits") and body.count("<!--") == 1
    assert "@octocat" not in body and "@org" not in body and "@admins" not in body
    assert "@\u200boctocat" in body and "&lt;!-- gha-mlops:drift model=other" in body
    # Another model's lookup does not take this issue for its own.
    assert find_issue(gh, REPO, replace(MODEL, name="other")) is None


def test_a_model_name_cannot_end_the_marker() -> None:
    assert marker("a-->b <!--") == "<!-- gha-mlops:drift model=a--%3Eb%20%3C%21-- -->"
    assert marker("team/digits") == "<!-- gha-mlops:drift model=team%2Fdigits -->"


def test_an_oversized_report_is_cut_to_githubs_limit_and_says_so() -> None:
    gh = FakeGitHub()
    rows = "\n".join(f"| f{i} | 0.{i % 10} |" for i in range(20000))
    report = f"## Features\n\n<details><summary>all</summary>\n\n```\n{rows}\n```\n"
    loop = Loop(gh)
    loop.window(0.9, report=report)
    result = loop.window(0.9, report=report)
    assert result.issue is not None
    body = gh.issues[result.issue.number].body
    assert len(body) <= ISSUE_BODY_LIMIT and "was cut to fit" in body
    assert body.count("```") % 2 == 0 and body.count("<details") == body.count("</details>")
    assert any("cut" in n for n in result.notes)


@pytest.mark.parametrize("limit", [2000, 5000, 65536])
def test_the_body_fits_any_limit_with_room_for_the_head(limit: int) -> None:
    verdict = Verdict("drift", True, True, False, True, "2 of the last 3 windows over 0.50")
    report = "<details>\n" * 50 + "x\n" * 100000
    body, cut = issue_body(MODEL, verdict, report, now=T0, run_url="https://x/run/1",
                           retraining="", limit=limit)
    assert cut and len(body) <= limit and body.startswith(marker("digits"))


def test_the_reason_input_is_one_bounded_inert_line() -> None:
    verdict = Verdict("drift", True, True, False, True, "x" * 5000 + "`$(rm -rf /)`\n'\"")
    reason = dispatch_reason(MODEL, verdict, "https://github.com/o/r/actions/runs/1")
    assert len(reason) <= MAX_REASON and "\n" not in reason
    short = dispatch_reason(MODEL, replace(verdict, reason="`$(id)` 'a' \"b\"\nc"), None)
    assert not set("`$'\"\n") & set(short)


def test_the_ref_and_inputs_of_the_retrain_config_are_sent() -> None:
    gh = FakeGitHub(branches=("trunk", "release"),
                    workflows={"retrain.yml": {"epochs": True, "why": True}})
    model = replace(MODEL, retrain=replace(RETRAIN, ref="release", reason_input="why"))
    loop = Loop(gh, model)
    loop.window(0.9)
    loop.window(0.9)
    [dispatch] = gh.dispatches
    assert dispatch["ref"] == "release" and set(dispatch["inputs"]) == {"epochs", "why"}
    gh2 = FakeGitHub(branches=("trunk",))
    loop2 = Loop(gh2, replace(MODEL, retrain=replace(RETRAIN, reason_input=None)))
    loop2.window(0.9)
    loop2.window(0.9)
    assert gh2.dispatches[0]["ref"] == "trunk" and gh2.dispatches[0]["inputs"] == {"epochs": "3"}


def test_no_retrain_configured_opens_the_issue_and_dispatches_nothing() -> None:
    gh = FakeGitHub()
    loop = Loop(gh, replace(MODEL, retrain=None))
    loop.window(0.9)
    result = loop.window(0.9)
    assert result.issue is not None and not result.dispatched and gh.dispatches == []
    assert result.state.dispatch_pending  # nothing was dispatched, so nothing is recorded
    assert any("sets no `retrain:`" in n for n in result.notes)


def test_an_app_token_drops_the_github_token_note() -> None:
    gh = FakeGitHub()
    loop = Loop(gh, app_token=True)
    loop.window(0.9)
    result = loop.window(0.9)
    assert result.dispatched and not any("GITHUB_TOKEN" in n for n in result.notes)


def test_a_failed_lookup_writes_no_issue_but_still_dispatches() -> None:
    class Down(FakeGitHub):
        def open_issues(self, repo: str, *, label: str):  # type: ignore[no-untyped-def]
            raise GitHubError("GitHub had a problem: HTTP 502", status=502)
            yield

    gh = Down()
    loop = Loop(gh)
    loop.window(0.9)
    result = loop.window(0.9)
    assert result.issue is None and gh.issues == {} and result.dispatched
    assert any("look for the drift issue" in e for e in result.errors)


def test_a_model_without_issue_labels_is_a_clear_error() -> None:
    verdict = Verdict("ok", False, False, False, False, "fine")
    with pytest.raises(GhaMlopsError, match="issue_labels"):
        act_on(FakeGitHub(), REPO, replace(MODEL, issue_labels=()), verdict=verdict,
               state=AlarmState(), report_md="", now=T0)


def test_a_run_url_that_could_end_its_link_is_not_linked() -> None:
    verdict = Verdict("drift", True, True, False, True, "2 of the last 3 windows over 0.50")
    body, _ = issue_body(MODEL, verdict, "r", now=T0, retraining="",
                         run_url="https://x/run) [click](https://evil")
    assert "](https://x/run)" not in body and "evil" not in body
    good, _ = issue_body(MODEL, verdict, "r", now=T0, retraining="",
                         run_url="https://github.com/o/r/actions/runs/7")
    assert "([run](https://github.com/o/r/actions/runs/7))" in good
