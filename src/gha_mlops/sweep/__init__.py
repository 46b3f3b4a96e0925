"""Parameter sweeps, a service of their own above the pipeline: a grid of params values
becomes a GitHub Actions matrix of *legs* (:mod:`~gha_mlops.sweep.plan`, one pipeline run each
with ``gha-mlops run --set KEY=VALUE`` overrides), and the legs' run records are ranked by one
metric to select the best (:mod:`~gha_mlops.sweep.select`; the command renders it).

The decisions are pure: :func:`plan_sweep` takes a parsed :class:`Grid`, :func:`select_best`
the records that :func:`find_records` read. Errors name the grid (file, key, line) or the
metric, and say what to change.
"""

from __future__ import annotations

from gha_mlops.sweep.grid import Grid, load_grid, load_grid_file, parse_grid_json
from gha_mlops.sweep.plan import INCLUDE, MAX_MATRIX_LEGS, Leg, SweepPlan, plan_grid, plan_sweep
from gha_mlops.sweep.select import (
    Candidate,
    FoundRecord,
    Selection,
    find_records,
    resolve_metric,
    select_best,
    select_legs,
)
from gha_mlops.sweep.values import render_value

__all__ = [
    "INCLUDE", "MAX_MATRIX_LEGS", "Candidate", "FoundRecord", "Grid", "Leg", "Selection",
    "SweepPlan", "find_records", "load_grid", "load_grid_file", "parse_grid_json", "plan_grid",
    "plan_sweep", "render_value", "resolve_metric", "select_best", "select_legs",
]
