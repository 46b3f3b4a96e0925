"""`reproduce` is a service of its own: called without the CLI, it resolves the run, reproduces
it and records the reproduction, taking the workspace lock itself for that write."""

from __future__ import annotations

import os

import pytest

from gha_mlops.config import STATE_DIR
from gha_mlops.errors import WorkspaceBusyError
from gha_mlops.pipeline.reproduce import reproduce
from gha_mlops.runs.store import RunStore
from gha_mlops.store.lock import WorkspaceLock
from tests.conftest import Workspace


def test_the_service_records_the_reproduction_under_the_workspace_lock(
        workspace: Workspace) -> None:
    workspace.cli("run", check=True)
    environ = {"PATH": os.environ.get("PATH", "")}
    store = RunStore.of(workspace.root)
    before = [e["id"] for e in store.list()]
    # Someone else holds the workspace: the reproduction may run (in its scratch workspace)
    # but must not write its record past the lock.
    with WorkspaceLock(workspace.root / STATE_DIR, what="test"), \
            pytest.raises(WorkspaceBusyError):
        reproduce("latest", workspace.root, environ=environ, lock_wait=0)
    assert [e["id"] for e in store.list()] == before
    seen = []
    rep = reproduce("latest", workspace.root, environ=environ, announce=seen.append)
    assert [r.id for r in seen] == before
    assert rep.identical and rep.reproduction_id is not None
    recorded = store.record(rep.reproduction_id)
    assert recorded.kind == "reproduction"
    assert recorded.doc["verdict"] == {"reproduces": before[0], "identical": True,
                                       "method": "copy", "env_drift": [], "differences": []}
