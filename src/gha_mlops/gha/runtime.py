"""GitHub Actions runtime I/O: workflow commands on stdout and the environment files.

The one place that speaks the runner's protocols (see
https://docs.github.com/actions/reference/workflow-commands-for-github-actions):

- workflow commands printed to stdout (``::error file=..,line=..::message``, ``::add-mask::``,
  ``::group::``, ``::debug::``), with data and properties escaped the way the runner
  unescapes them;
- the environment files named by ``$GITHUB_OUTPUT``, ``$GITHUB_ENV``, ``$GITHUB_STATE``,
  ``$GITHUB_PATH`` and ``$GITHUB_STEP_SUMMARY``, written with a random heredoc delimiter that
  never occurs in the value, so any value (multi-line, empty, ending in newlines) round-trips.

Every method is a no-op outside Actions and says so by returning False: commands print only
when ``GITHUB_ACTIONS=true``, file writers write only when their variable names a file. The
environment is passed in explicitly; only the CLI reads ``os.environ``. Nothing here mutates
the environment of the current process: what ``set_env`` and ``add_path`` write takes effect
in the job's later steps.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal, TextIO

Level = Literal["notice", "warning", "error"]

# Environment variables the runner refuses to take from $GITHUB_ENV (compared ignoring case,
# as the runner does), and prefixes of the default variables that cannot be overwritten.
FORBIDDEN_ENV_NAMES = frozenset({"NODE_OPTIONS"})
RESERVED_ENV_PREFIXES = ("GITHUB_", "RUNNER_")

# A group title is one line in the log; longer command texts are cut.
_TITLE_MAX = 200


def escape_data(value: str) -> str:
    """The message of a workflow command, as the runner unescapes it (``%``, CR, LF)."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """A property value (``file=``, ``title=``): data escaping plus ``:`` and ``,``."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def _check_name(kind: str, name: str) -> None:
    """Refuse names that would break the ``NAME<<DELIMITER`` line of an environment file."""
    bad = [c for c in ("=", "<", "\n", "\r", "\0") if c in name]
    if not name or bad or name != name.strip():
        raise ValueError(f"{kind} name {name!r} is not allowed: it must be non-empty, without "
                         "surrounding spaces, '=', '<', line breaks or NUL")


def _delimiter(value: str) -> str:
    """A heredoc delimiter that does not occur in ``value`` (so no line of it can end the
    value early); random, so a value cannot be crafted to guess it."""
    while True:
        delim = f"ghadelim_{os.urandom(16).hex()}"
        if delim not in value:
            return delim


class Actions:
    """Workflow commands and environment files, bound to an environment (``os.environ`` in
    the CLI) and an output stream (stdout by default)."""

    def __init__(self, environ: Mapping[str, str], stream: TextIO | None = None) -> None:
        self.environ = environ
        self.stream = stream if stream is not None else sys.stdout
        self._group_open = False

    @property
    def active(self) -> bool:
        """Running as a step of a GitHub Actions job (``GITHUB_ACTIONS=true``)."""
        return self.environ.get("GITHUB_ACTIONS") == "true"

    @property
    def takes_outputs(self) -> bool:
        """Whether :meth:`set_output` writes anywhere (``$GITHUB_OUTPUT`` names a file): a
        caller can skip computing outputs nobody receives."""
        return bool(self.environ.get("GITHUB_OUTPUT"))

    # ------------------------------------------------------------------ commands on stdout

    def _command(self, line: str) -> bool:
        if not self.active:
            return False
        # Flushed at once: a child process writing to the same stdout must not overtake it.
        self.stream.write(line + "\n")
        self.stream.flush()
        return True

    def annotate(self, level: Level, message: str, *, file: str | None = None,
                 line: int | None = None, end_line: int | None = None,
                 col: int | None = None, end_column: int | None = None,
                 title: str | None = None) -> bool:
        """``::error file=F,line=L,col=C,title=T::message`` (``level`` is ``notice``,
        ``warning`` or ``error``). Properties that are None (or lines and columns below 1)
        are left out. Returns False, printing nothing, outside Actions."""
        if level not in ("notice", "warning", "error"):
            raise ValueError(f"annotation level must be notice, warning or error, not {level!r}")
        props: list[str] = []
        if file:
            props.append(f"file={escape_property(file)}")
        for key, number in (("line", line), ("endLine", end_line), ("col", col),
                            ("endColumn", end_column)):
            if number is not None and number > 0:
                props.append(f"{key}={number}")
        if title:
            props.append(f"title={escape_property(title)}")
        head = f"::{level}" + (" " + ",".join(props) if props else "")
        return self._command(f"{head}::{escape_data(message)}")

    def notice(self, message: str, *, file: str | None = None, line: int | None = None,
               col: int | None = None, title: str | None = None) -> bool:
        """A notice annotation (see :meth:`annotate`)."""
        return self.annotate("notice", message, file=file, line=line, col=col, title=title)

    def warning(self, message: str, *, file: str | None = None, line: int | None = None,
                col: int | None = None, title: str | None = None) -> bool:
        """A warning annotation (see :meth:`annotate`)."""
        return self.annotate("warning", message, file=file, line=line, col=col, title=title)

    def error(self, message: str, *, file: str | None = None, line: int | None = None,
              col: int | None = None, title: str | None = None) -> bool:
        """An error annotation (see :meth:`annotate`)."""
        return self.annotate("error", message, file=file, line=line, col=col, title=title)

    def debug(self, message: str) -> bool:
        """``::debug::message``, shown when the run has step debug logging on."""
        return self._command(f"::debug::{escape_data(message)}")

    def mask(self, value: str) -> bool:
        """Mask ``value`` in the job's logs from now on.

        The runner masks line by line, so a multi-line secret is registered as a whole and
        each of its lines on its own (without surrounding whitespace; blank lines are skipped,
        masking them would blank every space in the log)."""
        if not self.active:
            return False
        parts = [value] if value.strip() else []
        lines = [ln.strip() for ln in value.splitlines()]
        parts += [ln for ln in lines if ln and ln != value]
        for part in dict.fromkeys(parts):  # once each, in order
            self._command(f"::add-mask::{escape_data(part)}")
        return bool(parts)

    def start_group(self, title: str) -> bool:
        """Open a collapsible log group (``::group::``); an open one is closed first, since
        groups do not nest. Only the first line of ``title`` is used."""
        if not self.active:
            return False
        self.end_group()
        first = title.splitlines()[0] if title.strip() else "group"
        if len(first) > _TITLE_MAX:
            first = first[:_TITLE_MAX - 1] + "…"
        self._group_open = self._command(f"::group::{escape_data(first)}")
        return self._group_open

    def end_group(self) -> bool:
        """Close the open log group, if any (``::endgroup::``)."""
        if not self._group_open:
            return False
        self._group_open = False
        return self._command("::endgroup::")

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        """``with actions.group("train"):`` wraps what is printed inside in a log group.
        Outside Actions nothing at all is printed."""
        self.start_group(title)
        try:
            yield
        finally:
            self.end_group()

    # ------------------------------------------------------------------ environment files

    def _append(self, var: str, text: str) -> bool:
        target = self.environ.get(var)
        if not target:
            return False
        # newline="": "\n" stays "\n" on every OS; the runner splits at LF.
        with Path(target).open("a", encoding="utf-8", newline="") as fh:
            fh.write(text)
        return True

    def _heredoc(self, var: str, kind: str, name: str, value: str) -> bool:
        _check_name(kind, name)
        delim = _delimiter(value)
        return self._append(var, f"{name}<<{delim}\n{value}\n{delim}\n")

    def set_output(self, name: str, value: str) -> bool:
        """Set step output ``name`` (``steps.<id>.outputs.<name>``) through ``$GITHUB_OUTPUT``.
        Any string round-trips: empty, multi-line, with trailing newlines."""
        return self._heredoc("GITHUB_OUTPUT", "output", name, value)

    def set_env(self, name: str, value: str) -> bool:
        """Set environment variable ``name`` for the job's later steps (``$GITHUB_ENV``).

        Raises ValueError for names the runner refuses or ignores: ``NODE_OPTIONS``, the
        default ``GITHUB_*`` and ``RUNNER_*`` variables, and names with ``=``, ``<``, line
        breaks or NUL."""
        _check_name("environment variable", name)
        upper = name.upper()
        if upper in FORBIDDEN_ENV_NAMES:
            raise ValueError(f"GitHub Actions does not allow setting {name} through GITHUB_ENV")
        if upper.startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(f"{name} is a default variable of GitHub Actions; "
                             "GITHUB_* and RUNNER_* variables cannot be overwritten")
        if "\0" in value:
            raise ValueError(f"the value of {name} contains NUL, which no environment can hold")
        return self._heredoc("GITHUB_ENV", "environment variable", name, value)

    def save_state(self, name: str, value: str) -> bool:
        """Save ``name`` for this action's post step (``$GITHUB_STATE``; read there as
        ``STATE_<name>``)."""
        return self._heredoc("GITHUB_STATE", "state", name, value)

    def add_path(self, directory: str | os.PathLike[str]) -> bool:
        """Prepend ``directory`` to ``PATH`` for the job's later steps (``$GITHUB_PATH``)."""
        text = os.fspath(directory)
        if not text or "\n" in text or "\r" in text or "\0" in text:
            raise ValueError(f"{text!r} cannot be added to PATH: it must be one non-empty line")
        return self._append("GITHUB_PATH", text + "\n")

    def summary(self, markdown: str) -> bool:
        """Append Markdown to the step summary (``$GITHUB_STEP_SUMMARY``)."""
        return self._append("GITHUB_STEP_SUMMARY", markdown.rstrip("\n") + "\n")
