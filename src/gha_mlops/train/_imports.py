"""Lazy imports of the heavy optional libraries, so ``import gha_mlops.train`` stays cheap."""

from __future__ import annotations

import importlib
from typing import Any

from gha_mlops.errors import missing_extra


def optional(module: str) -> Any | None:
    """The module if it is installed, else None."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def required(module: str, extra: str = "torch") -> Any:
    """The module, or a :class:`~gha_mlops.errors.MissingExtraError` naming the pip install.

    Typed ``Any`` on purpose: torch's stubs differ between versions and builds.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise missing_extra(module, extra) from err
