"""Acting on a drift verdict on GitHub: one drift issue per model and the retraining dispatch.

:func:`act_on` is the only writer, and it writes only these two things: it never promotes a
model (a retrained model goes through pull-request review and the deployment approval like
any other).

- **The drift issue.** A model has at most one open drift issue, found among the open issues
  carrying the model's first ``issue_labels`` by its first line, the hidden marker
  ``<!-- gha-mlops:drift model=NAME -->`` (the name percent-encoded, so it cannot end the
  comment). While the alarm is tripped, the issue is created if none is open and otherwise
  edited in place with the latest report; when the alarm is not tripped (it cleared now, or
  a run that should have closed it failed) an open one is closed, its body saying so; with
  no open issue and no alarm nothing is touched.
- **The dispatch.** While ``verdict.dispatch`` (the trip's retraining is owed) and
  ``retrain:`` is configured, the retraining workflow is dispatched on ``retrain.ref`` or the
  default branch, with ``retrain.inputs`` and the reason. Success records it in the alarm
  state (:func:`~gha_mlops.monitor.hysteresis.record_dispatch`: no second dispatch for the
  trip, the cooldown starts); failure leaves it owed, so the next run retries.

GitHub failures are never raised: both writes are attempted, each failure becomes a note
and an entry of :attr:`ActResult.errors`, and the state to save comes back either way (an
exception would lose a dispatch already made, which the next run would then repeat).

The report is our own Markdown, but it names user-chosen features: before it is put in the
issue, every ``@`` before a name gets a zero-width space (no one is mentioned, whatever
context the report put the name in) and every ``<!--`` is shown rather than opening a
comment that would hide the rest of the body. A body over GitHub's 65,536 characters has its
report cut at a line, any code fence or ``<details>`` left open closed, and a line saying so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from gha_mlops.config.model import MonitorModel
from gha_mlops.errors import GhaMlopsError
from gha_mlops.gha.safe import markdown_name, markdown_text
from gha_mlops.github.port import GitHubError, IssueRef, MonitorPort
from gha_mlops.monitor.hysteresis import AlarmState, Verdict, record_dispatch

ISSUE_BODY_LIMIT = 65536
"""The most characters GitHub accepts in an issue's body."""
ISSUE_TITLE_LIMIT = 256
MAX_REASON = 1000
"""The most characters of the reason passed to the retraining workflow."""
MARKER_PREFIX = "gha-mlops:drift"

_MENTION = re.compile(r"@(?=[A-Za-z0-9_])")  # what GitHub could take as @user or @org/team
_COMMENT_OPEN = "<!--"
_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#@!$&'*+,;=%-]{1,2000}")  # no ( ) < > or space
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.MULTILINE)
# Characters a consumer's shell or expression could act on, were it to interpolate the
# reason input unquoted (it should not; this keeps a careless `run: echo ${{ ... }}` inert).
_REASON_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:;=()\[\]/%+_#-]")
_TOKEN_NOTE = ("a pull request the retraining workflow opens with GITHUB_TOKEN runs no "
               "workflows (GitHub's rule against recursive runs), so its CI will not run: "
               "let it open the pull request with a GitHub App token "
               "(actions/create-github-app-token)")


@dataclass(frozen=True)
class ActResult:
    """What :func:`act_on` did: the alarm ``state`` to save (with the dispatch recorded when
    one was made), the drift ``issue`` as GitHub holds it now (None: none open and none
    written, or writing it failed), whether a retraining was ``dispatched``, one line per
    thing done or left undone in ``notes``, and the GitHub failures in ``errors`` (also in
    the notes; the caller saves ``state`` first, then may fail the step on them)."""

    state: AlarmState
    issue: IssueRef | None
    dispatched: bool
    notes: tuple[str, ...]
    errors: tuple[str, ...] = ()


def marker(model: str) -> str:
    """The hidden first line of ``model``'s drift issue."""
    return f"<!-- {MARKER_PREFIX} model={quote(model, safe='')} -->"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _failure(err: GitHubError) -> str:
    return err.message + (f" ({err.hint})" if err.hint else "")


def find_issue(port: MonitorPort, repo: str, model: MonitorModel) -> IssueRef | None:
    """The model's open drift issue (the newest, if someone made a second), or None."""
    wanted = marker(model.name)
    for issue in port.open_issues(repo, label=_label(model)):
        lines = issue.body.splitlines()
        if lines and lines[0].strip() == wanted:
            return issue
    return None


def _label(model: MonitorModel) -> str:
    if not model.issue_labels:
        raise GhaMlopsError(f"monitor model {model.name!r} has no issue_labels",
                            hint="list at least one, e.g. `issue_labels: [drift]`: the drift "
                                 "issue is found by its first label",
                            file=model.source)
    return model.issue_labels[0]


def act_on(port: MonitorPort, repo: str, model: MonitorModel, *, verdict: Verdict,
           state: AlarmState, report_md: str, now: float, run_url: str | None = None,
           app_token: bool = False) -> ActResult:
    """Write ``verdict`` to GitHub for ``model`` in ``repo``: the drift issue created, edited
    or closed, and the retraining dispatched when it is owed (see the module). ``state`` is
    the alarm state the verdict came with (the state to save); ``report_md`` the check's
    Markdown report; ``now`` the clock (recorded as the dispatch's time); ``run_url`` the
    run that judged it (linked); ``app_token``: the token is a GitHub App's, so pull
    requests the retraining opens do run CI. Raises only for a model without issue labels;
    GitHub failures come back in :attr:`ActResult.errors`."""
    label = _label(model)
    notes: list[str] = []
    errors: list[str] = []
    retrain = model.retrain
    owed = verdict.dispatch and retrain is not None
    plan = (_dispatch_plan(model, run_url) if owed
            else _standing_line(model, state) if verdict.tripped else "")
    issue = _write_issue(port, repo, model, label, verdict, report_md, now, run_url, plan,
                         notes, errors)
    dispatched = False
    if owed:
        failure = _dispatch(port, repo, model, verdict, run_url, notes)
        if failure is None:
            dispatched = True
            state = record_dispatch(state, now=now)
            if not app_token:
                notes.append(f"Note: {_TOKEN_NOTE}.")
        else:
            errors.append(failure)
            if issue is not None:  # the body said "dispatched by this run": correct it
                line = f"**Retraining:** {markdown_text(failure)}."
                issue = _write_issue(port, repo, model, label, verdict, report_md, now,
                                     run_url, line, [], errors, found=issue) or issue
    elif verdict.dispatch and retrain is None:
        notes.append(f"No retraining dispatched: monitor model {model.name!r} sets no "
                     "`retrain:` workflow.")
    return ActResult(state, issue, dispatched, tuple(notes), tuple(errors))


def _write_issue(port: MonitorPort, repo: str, model: MonitorModel, label: str,
                 verdict: Verdict, report_md: str, now: float, run_url: str | None,
                 plan: str, notes: list[str], errors: list[str],
                 found: IssueRef | None = None) -> IssueRef | None:
    """Create, edit or close the drift issue as the verdict asks; a failure is noted."""
    what = "look for"
    try:
        if found is None:
            found = find_issue(port, repo, model)
        if verdict.tripped:
            body, cut = issue_body(model, verdict, report_md, now=now, run_url=run_url,
                                   retraining=plan)
            if cut:
                notes.append("The report was cut to fit GitHub's issue body limit.")
            if found is None:
                what = "open"
                issue = port.create_issue(repo, title=issue_title(model), body=body,
                                          labels=model.issue_labels)
                notes.append(f"Opened drift issue #{issue.number}: {issue.url}")
            else:
                what = "update"
                issue = port.edit_issue(repo, found.number, body=body)
                notes.append(f"Updated drift issue #{issue.number}: {issue.url}")
            return issue
        if found is None:
            return None
        what = "close"
        body, _ = issue_body(model, verdict, report_md, now=now, run_url=run_url,
                             retraining="", cleared=True)
        issue = port.edit_issue(repo, found.number, body=body, state="closed")
        notes.append(f"Closed drift issue #{issue.number}: the alarm is clear.")
        return issue
    except GitHubError as err:
        message = (f"could not {what} the drift issue of {model.name} (label {label!r}): "
                   f"{_failure(err)}")
        notes.append(message[:1].upper() + message[1:])
        errors.append(message)
        return None


def _run_link(run_url: str | None, text: str) -> str | None:
    """``[text](run_url)`` for an address that cannot end the link early, else None."""
    if run_url is None or not _URL.fullmatch(run_url):
        return None
    return f"[{text}]({run_url})"


def _dispatch_plan(model: MonitorModel, run_url: str | None) -> str:
    assert model.retrain is not None
    by = _run_link(run_url, "this run") or "this run"
    return (f"**Retraining:** {markdown_name(model.retrain.workflow)} is dispatched by {by}. "
            "Nothing is promoted: the retrained model goes through review and the "
            "deployment approval.")


def _standing_line(model: MonitorModel, state: AlarmState) -> str:
    if model.retrain is None:
        return "**Retraining:** none configured (`retrain:` in mlops.yaml)."
    if state.last_dispatch is not None:
        return (f"**Retraining:** {markdown_name(model.retrain.workflow)} was dispatched "
                f"{_iso(state.last_dispatch)}; not again while this alarm stays on.")
    return ""


def _dispatch(port: MonitorPort, repo: str, model: MonitorModel, verdict: Verdict,
              run_url: str | None, notes: list[str]) -> str | None:
    """Dispatch the retraining workflow; None on success, else why it failed (noted)."""
    retrain = model.retrain
    assert retrain is not None
    try:
        ref = retrain.ref or port.default_branch(repo)
        inputs = dict(retrain.inputs)
        if retrain.reason_input:
            inputs[retrain.reason_input] = dispatch_reason(model, verdict, run_url)
        port.dispatch_workflow(repo, retrain.workflow, ref=ref, inputs=inputs)
    except GitHubError as err:
        message = (f"could not dispatch the retraining workflow {retrain.workflow} of "
                   f"{model.name}: {_failure(err)}; the alarm keeps it owed and the next "
                   "run retries")
        notes.append(message[:1].upper() + message[1:])
        return message
    notes.append(f"Dispatched the retraining workflow {retrain.workflow} on {ref}.")
    return None


def dispatch_reason(model: MonitorModel, verdict: Verdict, run_url: str | None) -> str:
    """The reason input: one line of at most :data:`MAX_REASON` plain characters (no quote,
    backtick, ``$`` or line break a careless consumer could execute)."""
    text = f"drift alarm of model {model.name}: {verdict.reason}"
    if run_url:
        text += f" (run {run_url})"
    text = _REASON_UNSAFE.sub("_", " ".join(text.split()))
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def issue_title(model: MonitorModel) -> str:
    """The drift issue's title (one line, no mention, at most GitHub's 256 characters)."""
    name = _MENTION.sub("@\u200b", " ".join(model.name.split()))
    return f"Drift alarm: model {name}"[:ISSUE_TITLE_LIMIT]


def inert_report(report_md: str) -> str:
    """``report_md`` with no mention and no HTML comment left to act (see the module)."""
    return _MENTION.sub("@\u200b", report_md).replace(_COMMENT_OPEN, "&lt;!--")


def issue_body(model: MonitorModel, verdict: Verdict, report_md: str, *, now: float,
               run_url: str | None, retraining: str, cleared: bool = False,
               limit: int = ISSUE_BODY_LIMIT) -> tuple[str, bool]:
    """The drift issue's body and whether the report had to be cut to fit ``limit``: the
    marker, the alarm's standing, the retraining line, then the (inert) report."""
    name = markdown_name(model.name)
    link = _run_link(run_url, "run")
    run = f" ({link})" if link else ""
    if cleared:
        head = (f"### ✅ The drift alarm of {name} cleared\n\n"
                f"Cleared {_iso(now)}{run}: {markdown_text(verdict.reason)}\n\n"
                "Closed by gha-mlops; a new issue opens if the alarm trips again.")
    else:
        head = (f"### ⚠️ Drift alarm: model {name}\n\n"
                f"Checked {_iso(now)}{run}: {markdown_text(verdict.reason)}")
        if retraining:
            head += f"\n\n{retraining}"
    head = f"{marker(model.name)}\n{head}\n\n---\n\n"
    report = inert_report(report_md).rstrip() + "\n"
    if len(head) + len(report) <= limit:
        return head + report, False
    link = _run_link(run_url, "the run's summary")
    where = f" The full report is in {link}." if link else (
        " The full report is in the run's step summary.")
    note = (f"\n\n> [!NOTE]\n> The report was cut to fit GitHub's {ISSUE_BODY_LIMIT:,}-"
            f"character issue body.{where}\n")
    return head + _cut(report, max(limit - len(head) - len(note), 0)) + note, True


def _cut(report: str, budget: int) -> str:
    """The report's first lines, any code fence or ``<details>`` left open closed (so the
    note after it shows as text), in at most ``budget`` characters."""
    reserve = 0
    while True:
        kept = report[:max(budget - reserve, 0)]
        kept = kept[:kept.rindex("\n")] if "\n" in kept else ""
        fences = _FENCE.findall(kept)
        closers = f"\n{fences[-1]}" if len(fences) % 2 else ""
        closers += "\n</details>" * max(kept.count("<details") - kept.count("</details>"), 0)
        if len(kept) + len(closers) <= budget:
            return kept + closers
        reserve = len(closers) + reserve + 1
