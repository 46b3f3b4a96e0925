"""GitHub Actions workflow commands and files, escaped correctly.

See https://docs.github.com/actions/reference/workflow-commands-for-github-actions. Every
function takes the environment mapping explicitly; only the CLI reads ``os.environ``.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


class Actions:
    """Workflow-command writer bound to an environment (``os.environ`` in the CLI)."""

    def __init__(self, environ: Mapping[str, str], stream: TextIO | None = None) -> None:
        self.environ = environ
        self.stream = stream or sys.stdout

    @property
    def active(self) -> bool:
        return self.environ.get("GITHUB_ACTIONS") == "true"

    def annotate(self, level: str, message: str, *, file: str | None = None,
                 line: int | None = None, col: int | None = None,
                 title: str | None = None) -> None:
        """``::error file=..,line=..,title=..::message`` (level: error, warning or notice)."""
        props = []
        if file:
            props.append(f"file={_escape_property(file)}")
        if line:
            props.append(f"line={line}")
        if col:
            props.append(f"col={col}")
        if title:
            props.append(f"title={_escape_property(title)}")
        head = f"::{level}" + (" " + ",".join(props) if props else "")
        self.stream.write(f"{head}::{_escape_data(message)}\n")
        self.stream.flush()

    def mask(self, value: str) -> None:
        for line in value.splitlines():
            if line.strip():
                self.stream.write(f"::add-mask::{_escape_data(line)}\n")

    def _append(self, var: str, text: str) -> bool:
        target = self.environ.get(var)
        if not target:
            return False
        with Path(target).open("a", encoding="utf-8") as fh:
            fh.write(text)
        return True

    def set_output(self, name: str, value: str) -> bool:
        """Append ``name`` to ``$GITHUB_OUTPUT`` with a random heredoc delimiter."""
        delim = f"ghadelim_{secrets.token_hex(16)}"
        while delim in value:
            delim = f"ghadelim_{secrets.token_hex(16)}"
        return self._append("GITHUB_OUTPUT", f"{name}<<{delim}\n{value}\n{delim}\n")

    def summary(self, markdown: str) -> bool:
        """Append Markdown to ``$GITHUB_STEP_SUMMARY``."""
        return self._append("GITHUB_STEP_SUMMARY", markdown.rstrip("\n") + "\n")
