"""A progress display with no dependencies: a bar on a terminal, sparse lines in CI logs."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TextIO, TypeVar

T = TypeVar("T")

_BAR_WIDTH = 30
_REDRAW_S = 0.1  # a terminal redraw at most this often


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    *,
    file: TextIO | None = None,
) -> Iterator[T]:
    """Yield the items of ``iterable`` while showing how far along it is, on stderr.

    On a terminal a bar is redrawn in place; elsewhere (CI logs, files) one line is printed
    each time another 10% is done, so a log stays short. ``total`` defaults to
    ``len(iterable)`` when it has one; without a total the count is shown instead (in logs:
    at 1, 10, 100, ... items and at the end).
    """
    stream = sys.stderr if file is None else file
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    isatty = getattr(stream, "isatty", None)
    tty = bool(isatty()) if callable(isatty) else False
    label = f"{desc}: " if desc else ""
    start = time.monotonic()
    last_draw = 0.0
    next_pct = 10
    next_count = 1
    done = 0

    def emit(text: str) -> None:
        stream.write(text)
        stream.flush()

    def bar() -> str:
        elapsed = time.monotonic() - start
        if not total:
            return f"\r{label}{done} {elapsed:.1f}s"
        filled = _BAR_WIDTH * done // total
        pct = 100 * done // total
        return (
            f"\r{label}|{'#' * filled}{'-' * (_BAR_WIDTH - filled)}| "
            f"{done}/{total} {pct:3d}% {elapsed:.1f}s"
        )

    def line() -> str:
        elapsed = time.monotonic() - start
        if total:
            return f"{label}{100 * done // total}% ({done}/{total}) {elapsed:.1f}s\n"
        return f"{label}{done} done {elapsed:.1f}s\n"

    try:
        for item in iterable:
            yield item
            done += 1
            if tty:
                now = time.monotonic()
                if now - last_draw >= _REDRAW_S or done == total:
                    last_draw = now
                    emit(bar())
            elif total:
                if 100 * done // total >= next_pct:
                    emit(line())
                    next_pct = (100 * done // total) // 10 * 10 + 10
            elif done >= next_count:
                emit(line())
                next_count *= 10
    finally:
        # Close the bar (or report the count) however the loop ended: finished, break, error.
        if tty:
            emit(bar() + "\n")
        elif not total and done != next_count // 10:
            emit(line())
