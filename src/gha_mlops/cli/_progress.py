"""How data transfers show: rich progress bars on a terminal, one line per dataset in CI.

In CI (``CI`` or ``GITHUB_ACTIONS`` set) or when stderr is not a terminal, nothing is redrawn:
each dataset gets one line with its counts and throughput when its transfer ends, which reads
well in a log. On a terminal a bar per dataset (objects, bytes, speed) is drawn while it
transfers, and the same line is printed when it ends. rich is imported only for the bars.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click

from gha_mlops.gha.safe import log_block

if TYPE_CHECKING:
    from gha_mlops.data.pointer import Dataset
    from gha_mlops.data.transfer import Progress, TransferStats


def human(n: float) -> str:
    """Bytes in decimal units: ``57.5 KB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def interactive(environ: Mapping[str, str] | None = None, stream: Any = None) -> bool:
    environ = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    return bool(stream.isatty()) and not environ.get("CI") and not environ.get("GITHUB_ACTIONS")


def dataset_line(verb: str, ds: Dataset, stats: TransferStats, source: str) -> str:
    """``digits: fetched 1 object (57.5 KB) from demo in 0.01 s (5.2 MB/s), 1 request``."""
    if stats.objects == 0 and stats.requests <= 1:
        nothing = {"pushed": "the remote has it already", "fetched": "already in the cache"}
        return f"{ds.name}: {nothing.get(verb, 'nothing to do')}"
    rate = stats.bytes / stats.seconds if stats.seconds > 0 else 0.0
    plural = "" if stats.objects == 1 else "s"
    packs = f" in {stats.packs} packs" if stats.packs else ""
    return (f"{ds.name}: {verb} {stats.objects} object{plural} ({human(stats.bytes)}){packs} "
            f"{source} in {stats.seconds:.2f} s ({human(rate)}/s), {stats.requests} requests")


class TransferLines:
    """A :class:`~gha_mlops.data.service.TransferListener` for the CLI (a context manager)."""

    def __init__(self, verb: str, *, bars: bool | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.verb = verb
        self.bars = interactive() if bars is None else bars
        self._echo = echo or (lambda line: click.echo(line))
        self._lock = threading.Lock()
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> TransferLines:
        if self.bars:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._rich = Progress(
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.fields[objects]}"), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True)
            self._rich.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()

    def started(self, ds: Dataset, objects: int | None, nbytes: int | None) -> Progress | None:
        if self._rich is None:
            return None
        bar = self._rich
        total_objects = f"/{objects}" if objects is not None else ""
        with self._lock:
            task = bar.add_task(f"{self.verb} {ds.name}", total=nbytes,
                                objects=f"0{total_objects} objects")
            self._tasks[ds.name] = task

        def progress(done_objects: int, done_bytes: int) -> None:
            bar.update(task, completed=done_bytes,
                       objects=f"{done_objects}{total_objects} objects")

        return progress

    def finished(self, ds: Dataset, stats: TransferStats, source: str) -> None:
        line = log_block(dataset_line(self.verb, ds, stats, source))
        with self._lock:
            task = self._tasks.pop(ds.name, None)
            if self._rich is not None:
                if task is not None:
                    self._rich.remove_task(task)
                self._rich.console.print(line, markup=False, highlight=False)
            else:
                self._echo(line)
