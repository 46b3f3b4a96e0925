"""GitHub Actions runtime I/O: the one module that writes workflow commands and files."""

from gha_mlops.gha.runtime import Actions, escape_data, escape_property

__all__ = ["Actions", "escape_data", "escape_property"]
