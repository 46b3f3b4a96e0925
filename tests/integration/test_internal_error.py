"""A bug in gha-mlops (an exception that is not a GhaMlopsError) ends the real process with one
clear line, the traceback in a file, an ``::error::`` annotation in Actions and exit code 70.

The bug is planted honestly: the child process registers, in itself only, a command that
raises, through the CLI's own command table; the product has no hidden way to trigger one."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from tests.unit.test_gha_runtime import parse_command

# The exception's text tries to start a workflow command of its own on a new line.
_SCRIPT = """
import click, gha_mlops.cli as c

@click.command()
def boom() -> None:
    def deep_inside() -> None:
        raise ValueError("boom\\n::notice::injected")
    deep_inside()

c._COMMANDS["boom"] = ("__main__", "boom", "raises, as a bug would")
c.main(["boom"])
"""
_LINE = re.compile(
    r"internal error: ValueError: boom␊::notice::injected \(a bug in gha-mlops; the traceback "
    r"is in (?P<path>\S+gha-mlops-internal-\d{8}T\d{6}Z-\d+\.log); please report it: "
    r"docs/security\.md for security issues, else the issue tracker\)")


def _bug(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "RUNNER_")) and k != "TMPDIR"}
    return subprocess.run([sys.executable, "-c", _SCRIPT], env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def _saved_traceback(stderr: str, directory: Path) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr  # one line: no traceback, no injected line
    match = _LINE.fullmatch(lines[0])
    assert match, lines[0]
    path = Path(match["path"])
    assert path.parent == directory
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a traceback can quote private values
    text = path.read_text("utf-8")
    assert text.startswith("Traceback (most recent call last):")
    assert "in deep_inside" in text and text.rstrip().endswith("ValueError: boom\n::notice::injected")
    return text


def test_a_bug_in_actions_gives_one_line_a_file_in_runner_temp_and_an_annotation(
        tmp_path: Path) -> None:
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    proc = _bug({"GITHUB_ACTIONS": "true", "RUNNER_TEMP": str(runner_temp),
                 "TMPDIR": str(tmp_path)})
    assert proc.returncode == 70, proc.stderr
    _saved_traceback(proc.stderr, runner_temp)
    commands = [parse_command(line) for line in proc.stdout.splitlines() if line.startswith("::")]
    assert [(name, props.get("title")) for name, props, _ in commands] == [
        ("error", "gha-mlops internal error")]
    message = commands[0][2]
    assert message.startswith("internal error: ValueError: boom\n::notice::injected (a bug")
    assert str(runner_temp) in message


def test_a_bug_outside_actions_saves_the_traceback_in_the_temp_dir(tmp_path: Path) -> None:
    proc = _bug({"TMPDIR": str(tmp_path)})
    assert proc.returncode == 70, proc.stderr
    _saved_traceback(proc.stderr, tmp_path)
    assert proc.stdout == ""  # no workflow command outside Actions
