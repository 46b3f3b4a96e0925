"""The registry's one error class."""

from __future__ import annotations

from gha_mlops.errors import ExitCode, GhaMlopsError


class RegistryError(GhaMlopsError):
    """A registry command cannot do what it was asked: an unknown model, version or stage, a
    version that exists, a run without the model output, a tag that exists on the remote with
    other content. Nothing was written when it is raised before a tag is made."""

    exit_code = ExitCode.USAGE
