"""GitHub Actions runtime I/O: the one module that writes workflow commands and files."""

from gha_mlops.gha.runtime import Actions

__all__ = ["Actions"]
