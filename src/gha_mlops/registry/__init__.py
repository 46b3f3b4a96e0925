"""The model registry in git tags, in GTO's grammar (docs/registry.md).

Versions and stages are annotated tags (``digits@v1.2.0``, ``digits#prod#3``), the lineage
is the version tag's message, images built from a version are git notes on its tag. The state
is read from ONE ``git for-each-ref`` and folded like GTO folds it, so GTO and this registry
agree on every repository either writes.
"""

from __future__ import annotations

from gha_mlops.registry._git import PROFILE_NOTES_REF
from gha_mlops.registry.errors import RegistryError
from gha_mlops.registry.lineage import ImageRef, Lineage, ProfileRef
from gha_mlops.registry.service import ModelVersion, Registry, Written, open_registry

__all__ = ["PROFILE_NOTES_REF", "ImageRef", "Lineage", "ModelVersion", "ProfileRef", "Registry",
           "RegistryError", "Written", "open_registry"]
