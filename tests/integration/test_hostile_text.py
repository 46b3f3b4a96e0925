"""Hostile names through the real CLI in a GitHub Actions step: metric keys and ``--set``
values shaped like workflow commands, HTML and Markdown must reach the job log as text (no
line the runner would run as a command) and the step summary as text (nothing rendered).

The log is read with the runner's rules: a line ends at CR, LF or CRLF; it is a command when
it starts with ``::`` after leading whitespace (TryParseV2) or holds ``##[`` (TryParse).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tests.conftest import Workspace
from tests.integration.test_cli_actions_io import Step
from tests.unit.test_gha_runtime import parse_command

# Our own commands, the only ones a run may print.
OURS = {"group", "endgroup", "error", "warning", "notice", "debug", "add-mask"}
# Each hostile command's data starts with PWNED: none of them may be run.
HOSTILE_KEYS = [
    "::error::PWNED-plain",
    "  ::warning::PWNED-indented",
    "##[error]PWNED-legacy",
    "cr\r::error::PWNED-cr",
    "lf\n::error::PWNED-lf",
    "ls\u2028::error::PWNED-ls",
    "<img src=x onerror=alert(1)>",
    "![x](https://evil.example/pixel.png)",
    "[click](https://evil.example/)",
    "**bold** `code` $x$ @octocat | cell",
]
MD = MarkdownIt("commonmark").enable("table")


@pytest.fixture
def step(workspace: Workspace, tmp_path: Path) -> Step:
    return Step(tmp_path, workspace.root)


def _hostile_pipeline(workspace: Workspace) -> None:
    metrics = json.dumps(dict.fromkeys(HOSTILE_KEYS, 1.0))
    workspace.write("metrics.json.src", metrics)
    workspace.write("mlops.yaml", """\
        stages:
          train:
            cmd: mkdir -p out && cp metrics.json.src out/metrics.json
            deps: [metrics.json.src]
            metrics: [out/metrics.json]
        """)


def _assert_no_hostile_command(log: str) -> None:
    assert "##[" not in log, log
    for line in re.split(r"\r\n|\r|\n", log):
        body = line.lstrip()
        if not body.startswith("::"):
            continue
        name, _, data = parse_command(body)
        assert name in OURS, line
        assert not data.startswith("PWNED"), line


def _walk(tokens: list[Token]) -> list[Token]:
    out: list[Token] = []
    for token in tokens:
        out += [token, *_walk(token.children or [])]
    return out


def _assert_renders_no_markup_from_users(markdown: str, links: int = 0) -> None:
    """Our own markup (headings, tables, code, <details>, ``links`` links to the commit)
    only: no image, no other link, no HTML but the tags we write."""
    tokens = _walk(MD.parse(markdown))
    for token in tokens:
        assert token.type not in ("image", "em_open", "strong_open"), token
        if token.type in ("html_inline", "html_block"):
            tags = set(re.findall(r"</?([A-Za-z][A-Za-z0-9-]*)", token.content))
            assert tags <= {"br", "code", "details", "summary"}, token.content
    hrefs = [t.attrGet("href") for t in tokens if t.type == "link_open"]
    assert len(hrefs) == links, hrefs
    assert all(str(h).startswith("https://github.com/o/r/commit/") and ")" not in str(h)
               for h in hrefs), hrefs


def test_hostile_metric_names_reach_the_log_and_summary_as_text(
        workspace: Workspace, step: Step) -> None:
    _hostile_pipeline(workspace)
    run = workspace.cli("run", env=step.env, check=True)
    _assert_no_hostile_command(run.stdout + "\n" + run.stderr)
    assert "::error::PWNED-plain" in run.stdout  # shown, as text
    for args in (["runs", "show"], ["runs", "list"], ["runs", "show", "--json"],
                 ["runs", "list", "--json"]):
        shown = workspace.cli(*args, env=step.env, check=True)
        _assert_no_hostile_command(shown.stdout + "\n" + shown.stderr)
    summary = workspace.cli("summary", env=step.env, check=True)
    _assert_no_hostile_command(summary.stdout)
    _assert_renders_no_markup_from_users(step.text("GITHUB_STEP_SUMMARY"))
    # A record from another job's artifact is untrusted as a whole: its statuses and notes.
    record = json.loads(workspace.cli("runs", "show", "--json", check=True).stdout)
    record["kind"] = record["status"] = HOSTILE_KEYS[7]
    record["stages"][0].update(status=HOSTILE_KEYS[8], error="\n".join(HOSTILE_KEYS))
    record["git"] = {"commit": "abc) ![x](https://evil.example/", "branch": HOSTILE_KEYS[6]}
    artifact = workspace.root / "artifact" / "record.json"
    artifact.parent.mkdir()
    artifact.write_text(json.dumps(record))
    step.files["GITHUB_STEP_SUMMARY"].write_text("")
    summary = workspace.cli("summary", str(artifact), env={
        **step.env, "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r"},
        check=True)
    _assert_no_hostile_command(summary.stdout)
    _assert_renders_no_markup_from_users(step.text("GITHUB_STEP_SUMMARY"), links=1)
    # Outside a step the Markdown goes to stdout: still no command in it.
    printed = workspace.cli("summary", env={"GITHUB_ACTIONS": "true"}, check=True)
    _assert_no_hostile_command(printed.stdout)
    _assert_renders_no_markup_from_users(printed.stdout)


def test_an_error_note_with_hostile_text_stays_one_quoted_note(
        workspace: Workspace, step: Step) -> None:
    hostile = ("no.such.key\n::error::PWNED-set\n\n# Heading\n<img src=x> "
               "![x](https://evil.example/p.png) ##[error]PWNED-legacy")
    proc = workspace.cli("run", "--set", f"{hostile}=1", env=step.env)
    assert proc.returncode != 0
    _assert_no_hostile_command(proc.stdout + "\n" + proc.stderr)
    note = step.text("GITHUB_STEP_SUMMARY")
    assert "[!CAUTION]" in note
    assert all(line.startswith(">") for line in note.splitlines()), note
    tokens = MD.parse(note)
    assert tokens[0].type == "blockquote_open" and tokens[-1].type == "blockquote_close"
    assert sum(t.type == "blockquote_open" for t in tokens) == 1
    assert not [t for t in tokens if t.type.startswith("heading")], note
    _assert_renders_no_markup_from_users(note.replace("**gha-mlops:**", "gha-mlops:"))


def test_hostile_file_names_in_a_dataset_reach_the_log_as_text(
        workspace: Workspace, step: Step) -> None:
    """A pull request chooses the names of the files in a dataset folder: `data status`
    lists the changed ones, `data add`/`ls` print the dataset's path."""
    data = workspace.root / "data" / "images"
    data.mkdir(parents=True)
    (data / "a.txt").write_text("a")
    workspace.cli("data", "add", "data/images", env=step.env, check=True)
    for key in HOSTILE_KEYS:
        if "/" not in key:
            (data / key).write_text("new")
    status = workspace.cli("data", "status", env=step.env)
    assert "PWNED-plain" in status.stdout  # listed, as text
    _assert_no_hostile_command(status.stdout + "\n" + status.stderr)
    for args in (["data", "add", "data/images"], ["data", "ls"], ["data", "ls", "--json"]):
        shown = workspace.cli(*args, env=step.env, check=True)
        _assert_no_hostile_command(shown.stdout + "\n" + shown.stderr)
