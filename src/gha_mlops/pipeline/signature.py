"""Stage signatures: the one value that decides whether a stage must run again."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from gha_mlops._fs import canonical_json_bytes

SIGNATURE_VERSION = 1


def stage_signature(
    *,
    cmd: str,
    deps: Mapping[str, str | None],
    params: Mapping[str, Any],
    env_lock: str | None,
    seed: int,
    outs: Sequence[tuple[str, str]],
    determinism: str = "native",
) -> str:
    """sha256 over everything that can change a stage's result.

    Inputs: the command text, each dependency's content hash, the values of the params keys
    the stage reads, the environment lock's hash, the pipeline seed, and the declared outputs
    (path and kind), and a determinism mode other than ``native`` (the mode decides which CPU
    kernels compute, so the bytes; left out when native, so older signatures stay). Nothing else, in particular no time stamps or absolute paths, so the same
    inputs give the same signature on any machine.
    """
    doc = {
        "v": SIGNATURE_VERSION,
        "cmd": cmd,
        "deps": dict(sorted(deps.items())),
        "params": dict(sorted(params.items())),
        "env_lock": env_lock,
        "seed": seed,
        "outs": sorted([list(o) for o in outs]),
    }
    if determinism != "native":
        doc["determinism"] = determinism
    return hashlib.sha256(canonical_json_bytes(doc)).hexdigest()
