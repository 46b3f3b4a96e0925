"""``data gc``: gather every root, then let the store remove what none of them names.

The roots are every dataset pointer's version, every run-cache entry's outputs and everything
a run record of the last ``keep_days`` names (its deps and outputs). A run-cache entry or a
recent run record that cannot be read, is not JSON, or lacks the form gha-mlops writes stops
gc with a :class:`UsageError` naming the file: skipped, it would let gc delete the objects it
names. Nothing is deleted before every root has been read, and all of it is done holding the
workspace lock: a run in progress stores objects that no root names yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from gha_mlops._fs import JSONFileError, read_json_file
from gha_mlops.data.service import LOCK_WAIT, Workspace, dataset_roots
from gha_mlops.errors import UsageError, quoted
from gha_mlops.pipeline.runcache import MAX_ENTRY_BYTES, RunCache
from gha_mlops.runs._doc import MAX_RECORD_BYTES
from gha_mlops.runs.record import RecordError, RunRecord
from gha_mlops.runs.store import runs_dir
from gha_mlops.store.gc import GcResult, sweep
from gha_mlops.store.hashing import is_object_digest
from gha_mlops.store.lock import WorkspaceLock

__all__ = ["GcResult", "gc", "roots"]

_RECORD_HINT = ("move it out of .gha-mlops/runs/ or delete it, then run `gha-mlops data gc` "
                "again; nothing was deleted")
_ENTRY_HINT = ("delete it (the stage it remembers then runs again instead of coming from the "
               "cache), then run `gha-mlops data gc` again; nothing was deleted")


class _Malformed(Exception):
    """What is wrong with a run record or run-cache entry that gc must read."""


def gc(ws: Workspace, *, dry_run: bool = False, keep_days: float = 30.0) -> GcResult:
    """Remove cache objects nothing references (see the module's docstring), holding the
    workspace lock (waiting up to :data:`~gha_mlops.data.service.LOCK_WAIT` seconds for it:
    :class:`~gha_mlops.errors.WorkspaceBusyError` after that)."""
    with WorkspaceLock(ws.open_state(), wait=LOCK_WAIT, what="data gc"):
        return sweep(ws.cache, roots(ws, keep_days=keep_days), dry_run=dry_run)


def roots(ws: Workspace, *, keep_days: float = 30.0) -> list[str]:
    """Every digest gc must keep, read in full before anything is removed."""
    keep = dataset_roots(ws)
    for entry in RunCache(ws.cache).entries():
        keep += _digests(entry, "run-cache entry", _entry_digests, _ENTRY_HINT,
                         max_bytes=MAX_ENTRY_BYTES)
    horizon = time.time() - keep_days * 86400
    for record_path in sorted(runs_dir(ws.root).glob("*.json")):
        if record_path.name == "index.json" or record_path.stat().st_mtime < horizon:
            continue
        keep += _digests(record_path, "run record", _record_digests, _RECORD_HINT,
                         max_bytes=MAX_RECORD_BYTES)
    return keep


def _digests(path: Path, what: str, digests_of: Callable[[object], list[str]],
             hint: str, *, max_bytes: int) -> list[str]:
    """The object digests that the JSON file ``path`` (a ``what``) names, by
    ``digests_of(document)``; an unreadable or malformed file raises :class:`UsageError`
    naming it."""
    try:
        return digests_of(read_json_file(path, max_bytes=max_bytes))
    except OSError as err:
        problem = f"cannot be read ({err.strerror or type(err).__name__})"
    except (JSONFileError, _Malformed) as err:
        problem = str(err)
    except RecordError as err:
        problem = f"does not have the form gha-mlops writes ({err.sentence()})"
    raise UsageError(f"this {what} {problem}, so data gc cannot tell which cache objects it "
                     "names", hint=hint, file=path)


def _entry_digests(doc: object) -> list[str]:
    """The outputs of a run-cache entry: ``{"outs": {path: digest}, ...}``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("outs"), dict):
        raise _Malformed('is not a JSON object with an "outs" object')
    return _checked("outs", doc["outs"].items())


def _record_digests(doc: object) -> list[str]:
    """What a run record names: its deps and its outputs (validated by :class:`RunRecord`)."""
    return RunRecord.from_json(doc).object_digests()


def _checked(where: str, pairs: Iterable[tuple[str, object]]) -> list[str]:
    digests = []
    for key, value in pairs:
        if not is_object_digest(value):
            raise _Malformed(f"names {quoted(value)} for {where} {quoted(key)}, which is not an "
                             "object digest (64 lowercase hex digits, then .dir for a "
                             "directory)")
        digests.append(str(value))
    return digests
