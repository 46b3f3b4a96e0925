"""``mlops.yaml`` as a run sees it.

``config`` sits below ``data`` and so cannot read dataset pointers itself: this is the one
place that hands it the workspace's dataset finder, so that every command that runs stages
(``run``, ``reproduce``, ``demo``) rejects a ``data:NAME`` dep that names no pinned dataset as
a config error at load time, naming the dep's line, before any stage starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gha_mlops.config import Pipeline, load_pipeline
from gha_mlops.data.pointer import find_datasets


def load(config: Path, *, overrides: Mapping[str, Any] | None = None) -> Pipeline:
    """:func:`gha_mlops.config.load_pipeline` with the dataset check."""
    return load_pipeline(config, overrides=overrides, datasets=find_datasets)
