"""The report's pictures: the charts drawn from a comparison (in worker processes, so that
importing matplotlib and drawing overlap the GitHub calls that need no image) and the image
plots the stages declare, baseline and head side by side."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from gha_mlops.errors import MissingExtraError
from gha_mlops.reporting.compare import Comparison, RunFiles

Charts = dict[str, tuple[str, bytes]]
"""File name -> (title, image bytes)."""


class PendingCharts:
    """The report's plots, drawn in forked worker processes when ``background`` (Linux; two
    workers sharing the charts where there are two CPUs), else when first asked for;
    :meth:`get` waits for them. ``warn`` receives the one warning of a missing plotting extra
    (in this process, whichever worker found it)."""

    def __init__(self, comparison: Comparison, *, background: bool,
                 declared: Mapping[str, tuple[str, bytes]] | None = None,
                 first: tuple[str, ...] = (),
                 warn: Callable[[str], None] = lambda _: None) -> None:
        self._comparison = comparison
        self._first = first  # the gated metrics: first in the metric chart
        self._declared = dict(declared or {})
        self._warn = warn
        self._result: Charts | None = None
        self._futures: list[Any] = []
        if background and sys.platform == "linux":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            parts = 2 if (os.cpu_count() or 1) > 1 else 1
            try:
                self._pool = ProcessPoolExecutor(parts,
                                                 mp_context=multiprocessing.get_context("fork"))
                self._futures = [self._pool.submit(draw, comparison, part, parts, first)
                                 for part in range(parts)]
            except (OSError, ValueError):  # no fork here: draw when asked
                self._futures = []

    def get(self) -> Charts:
        """Every plot, file name -> (title, bytes): the drawn charts, then the declared
        images."""
        if self._result is None:
            if self._futures:
                try:
                    shares = [f.result() for f in self._futures]
                finally:
                    self._pool.shutdown()
                # Worker k drew charts k, k + parts, ...: interleave them back in order.
                items = [list(charts.items()) for charts, _ in shares]
                merged = [item for i in range(max(map(len, items), default=0))
                          for share in items if i < len(share) for item in [share[i]]]
                self._result = dict(merged)
                warning = next((w for _, w in shares if w), None)
            else:
                self._result, warning = draw(self._comparison, first=self._first)
            if warning:
                self._warn(warning)
            self._result.update(self._declared)
        return self._result


def draw(comparison: Comparison, part: int = 0, parts: int = 1,
         first: tuple[str, ...] = ()) -> tuple[Charts, str | None]:
    """Share ``part`` of ``parts`` of the report's charts, file name -> (title, PNG), and a
    warning: without matplotlib the report goes without plots, and the warning says what to
    install (given by part 0 only: one warning, however many workers)."""
    from gha_mlops.reporting.plots import report_plots

    try:
        return report_plots(comparison, part=part, parts=parts, first=first), None
    except MissingExtraError as err:
        return {}, (f"warning: no plots: {err.message} ({err.hint})" if part == 0 else None)


def declared_images(base: RunFiles, head: RunFiles) -> Charts:
    """The image plots the stages declare (``plots:``), baseline and head side by side: file
    name -> (title, bytes), as :func:`~gha_mlops.reporting.compare.read_run_files` found
    them (the recorded bytes, from the cache or the workspace)."""
    out: Charts = {}
    for path in sorted({*base.images, *head.images}):
        slug = re.sub(r"[^A-Za-z0-9]+", "-", path.rsplit(".", 1)[0]).strip("-")
        suffix = "." + path.rsplit(".", 1)[1].lower()
        for side, files in (("baseline", base), ("head", head)):
            data = files.images.get(path)
            if data is not None:
                out[f"declared-{slug}-{side}{suffix}"] = (f"{path} ({side})", data)
    return out
