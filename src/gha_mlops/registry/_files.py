"""Where a version's model bytes are: the workspace file or the content cache, hash-checked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gha_mlops.config._state import STATE_DIR
from gha_mlops.registry.errors import RegistryError
from gha_mlops.store.hashing import is_sha256, sha256_file
from gha_mlops.store.objects import ContentCache

if TYPE_CHECKING:
    from gha_mlops.registry.service import ModelVersion


def find_model_bytes(workspace: Path, path: str, sha256: str) -> Path | None:
    """The file holding the bytes of ``sha256``: ``workspace/path`` if it hashes to it,
    else the cache's object if that does; None when neither."""
    if not is_sha256(sha256):
        return None
    candidates = []
    if path and not path.startswith("/") and ".." not in Path(path).parts:
        candidates.append(workspace / path)
    candidates.append(ContentCache(workspace / STATE_DIR / "cache").object_path(sha256))
    for candidate in candidates:
        try:
            if candidate.is_file() and sha256_file(candidate) == sha256:
                return candidate
        except OSError:
            continue
    return None


def model_file(workspace: Path, mv: ModelVersion) -> Path:
    """See :meth:`Registry.model_file`."""
    lineage = mv.lineage
    if not lineage.known:
        raise RegistryError(f"{mv.tag}: the lineage is unknown ({lineage.problem}), so the "
                            "model file cannot be found",
                            hint="register the model again with `gha-mlops model register`")
    found = find_model_bytes(workspace, lineage.model_path, lineage.model_sha256)
    if found is None:
        raise RegistryError(
            f"the model of {mv.name} {mv.version} ({lineage.model_path}, sha256 "
            f"{lineage.model_sha256[:12]}) is neither in the workspace nor in the cache",
            hint=f"run `gha-mlops data pull` if its run was pushed to a remote, or "
                 f"`gha-mlops reproduce {lineage.run_id}` to make it again")
    return found
