"""Monitoring a served model (issue 16, in progress): the reference profile of the evaluation
data, the prediction log and its feedback, drift tests with Evidently's defaults, and the
hysteresis that turns windows of drift into one verdict.

Modules: :mod:`.profile` (the reference profile), :mod:`.drift` (per-feature and dataset
drift), :mod:`.hysteresis` (k of n windows, thresholds, cooldown, minimum samples),
:mod:`.predlog` (the prediction log's format, reading a window, joining feedback) and
:mod:`.predlog_writer` (the writer, standard library only, for the serving image).
See docs/monitoring.md.
"""

from __future__ import annotations
