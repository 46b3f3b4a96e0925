"""The pipeline as code: ``mlops.yaml`` parsed into frozen, typed objects."""

from __future__ import annotations

from gha_mlops.config._overrides import parse_overrides
from gha_mlops.config._state import STATE_DIR, ensure_state_dir
from gha_mlops.config.loader import DEFAULT_CONFIG, load_pipeline
from gha_mlops.config.model import Output, Pipeline, Stage, param_value

__all__ = ["DEFAULT_CONFIG", "STATE_DIR", "Output", "Pipeline", "Stage", "ensure_state_dir",
           "load_pipeline", "param_value", "parse_overrides"]
