"""The CLI's error boundary, what it prints: a user error (a :class:`GhaMlopsError`) as its
message, hint and notes plus, in GitHub Actions, an annotation and a step-summary note; a bug
(any other exception) as one line naming the file that holds its traceback; a bad option as
click's message. Every line is escaped so that none of it is a workflow command.
"""

from __future__ import annotations

import os

import click

from gha_mlops.errors import ExitCode, GhaMlopsError


def report_error(err: GhaMlopsError) -> int:
    """The one place a user error becomes output and an exit code (and, in Actions, an
    annotation on the offending file and line plus a note in the step summary).

    Messages carry user text (paths, keys, branch names, ``--set`` values): on stderr, which
    the runner also reads for workflow commands, no line of them can be one; in the step
    summary they are inert Markdown inside one quote block."""
    from gha_mlops.gha import Actions
    from gha_mlops.gha.safe import log_block, markdown_quote, markdown_text

    loc = err.location()
    lines = [click.style("error: ", fg="red", bold=True)
             + log_block((f"{loc}: " if loc else "") + err.message)]
    lines += [log_block(f"  {note}") for note in err.notes]
    if err.hint:
        lines.append(click.style("hint: ", fg="cyan", bold=True) + log_block(err.hint))
    click.echo("\n".join(lines), err=True)
    actions = Actions(os.environ)
    if actions.active:
        text = err.message + (f"\n{err.hint}" if err.hint else "")
        actions.annotate("error", text, file=_repo_relative(err.file), line=err.line,
                         col=err.column, title="gha-mlops")
        where = markdown_text(loc) + ": " if loc else ""
        note = ["[!CAUTION]",
                f"**gha-mlops:** {where}{markdown_text(err.message, breaks=True)}"]
        if err.hint:
            note += ["", markdown_text(err.hint, breaks=True)]
        actions.summary(markdown_quote(note))
    return err.exit_code


def report_bug(err: Exception) -> int:
    """The one place an unexpected exception (a bug in gha-mlops, not the user's to fix)
    becomes output: exactly one line on stderr naming the exception and the file that holds
    its full traceback, an ``::error::`` annotation in Actions, and exit code 70.

    The exception's text may carry user input (a path, a value), so the line goes through
    :func:`~gha_mlops.gha.safe.log_text` and the annotation through the Actions escaping."""
    import traceback

    from gha_mlops.gha import Actions
    from gha_mlops.gha.safe import log_text

    what = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    text = "".join(traceback.format_exception(err))
    saved = _save_traceback(text)
    where = (f"the traceback is in {saved}" if saved is not None
             else "the traceback could not be saved to a file")
    detail = (f"{what} (a bug in gha-mlops; {where}; please report it: docs/security.md "
              "for security issues, else the issue tracker)")
    click.echo(click.style("internal error: ", fg="red", bold=True) + log_text(detail),
               err=True)
    if saved is None:
        # Nowhere to keep it: the traceback is worth more than the one-line promise.
        from gha_mlops.gha.safe import log_block

        click.echo(log_block(text.rstrip("\n")), err=True)
    Actions(os.environ).annotate("error", f"internal error: {detail}",
                                 title="gha-mlops internal error")
    return ExitCode.INTERNAL


def _save_traceback(text: str) -> str | None:
    """Write ``text`` atomically (owner-only: a traceback may quote paths and values) to a new
    ``gha-mlops-internal-<UTC time>-<pid>.log`` under ``$RUNNER_TEMP`` (kept with the job's
    other temporary files) or else the system temp dir; its path, or None if none could be
    written."""
    import tempfile
    import time
    from pathlib import Path

    from gha_mlops._fs import atomic_write_bytes

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dirs = [d for d in (os.environ.get("RUNNER_TEMP"), tempfile.gettempdir()) if d]
    for directory in dirs:
        for n in range(100):
            suffix = f"-{n}" if n else ""
            path = os.path.join(os.path.abspath(directory),
                                f"gha-mlops-internal-{stamp}-{os.getpid()}{suffix}.log")
            if os.path.lexists(path):
                continue  # a unique name: never replace an earlier report
            try:
                atomic_write_bytes(Path(path), text.encode("utf-8", "replace"), mode=0o600)
            except OSError:
                break  # this directory is not writable: try the next one
            return path
    return None


def show_usage_error(err: click.ClickException) -> int:
    """Click's message for a bad option, which quotes the value given (a branch name, a path),
    printed so that no line of it is a workflow command."""
    import io

    from gha_mlops.gha.safe import log_block

    text = io.StringIO()
    err.show(file=text)
    click.echo(log_block(text.getvalue().rstrip("\n")), err=True)
    return err.exit_code


def _repo_relative(file: str | None) -> str | None:
    """A file named relative to the current directory, as GitHub wants it in an annotation:
    relative to the repository root (``$GITHUB_WORKSPACE``), so it lands on the file even when
    the command ran in a subdirectory."""
    root = os.environ.get("GITHUB_WORKSPACE")
    if not file or not root:
        return file
    path = os.path.abspath(file)
    rel = os.path.relpath(path, os.path.abspath(root))
    return file if rel.startswith("..") else rel.replace(os.sep, "/")
