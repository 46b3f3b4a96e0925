"""The workspace's state folder (``.gha-mlops``): made in one place, so it always ignores
itself in git.

Every command that may create the folder (``run``, ``data add``, ``data push``, ``data pull``
...) goes through :func:`ensure_state_dir`: a user who follows the docs and stages with
``git add -A`` never commits the cache, the run records or the stat database.
"""

from __future__ import annotations

import os
from pathlib import Path

from gha_mlops._fs import atomic_write_text

STATE_DIR = ".gha-mlops"
STATE_GITIGNORE = "# Created by gha-mlops: caches and run records stay local.\n*\n"


def ensure_state_dir(root: Path) -> Path:
    """``root/.gha-mlops``, created if missing, with a ``.gitignore`` in it that ignores
    everything there (the user's own .gitignore is never touched).

    The ``.gitignore`` is written only when no plain file has that name, and atomically (temp
    file + rename), so a reader never sees it half-written and a link a pull request planted
    there is replaced, never followed. Two processes racing write the
    same bytes. Returns the state folder.
    """
    state = Path(root) / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    ignore = state / ".gitignore"
    # A link there (git does not follow a linked .gitignore) is replaced by the rename, never
    # written through; a plain file is left as it is.
    if os.path.islink(ignore) or not os.path.isfile(ignore):
        atomic_write_text(ignore, STATE_GITIGNORE)
    return state
