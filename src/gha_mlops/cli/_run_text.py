"""``runs show`` in words: a run record for people, every name and value escaped."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gha_mlops.cli._render import run_summary, short
from gha_mlops.gha.safe import log_block, log_text
from gha_mlops.runs.record import RunRecord


def describe(record: RunRecord | Mapping[str, Any]) -> str:
    """A run for people (``runs show``); a JSON document is validated first. Names and paths
    are escaped one by one (a line break in one shows), the whole once more: no line of it is
    a workflow command in Actions."""
    rec = record if isinstance(record, RunRecord) else RunRecord.from_json(record)
    git, env = rec.git, rec.env
    lines = [run_summary(rec.doc), ""]
    lines.append(f"started   {rec.started_at}   finished {rec.finished_at}")
    if git and rec.doc.get("git"):  # an empty mapping says nothing either
        lines.append(f"git       {short(git.commit)} on {log_text(git.branch or '-')}"
                     + ("  (dirty)" if git.dirty else ""))
    lines.append(f"seed      {log_text(rec.seed)}    params "
                 f"{log_text(rec.params.get('file') or '-')} {short(rec.params.get('sha256'))}")
    lines += _params_lines(rec.params)
    py = env.get("python", {})
    lines.append(f"python    {py.get('version')}   {env.get('os', {}).get('platform')}")
    cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
    if cpu:
        # What decides the model's bytes on a CPU (docs/reproduce.md): the machine, and
        # whether the run pinned its kernels.
        lines.append(f"cpu       {log_text(cpu.get('vendor') or '-')} {log_text(cpu.get('machine'))} "
                     f"family {log_text(cpu.get('family') or '-')} model "
                     f"{log_text(cpu.get('model_id') or '-')}   determinism "
                     f"{log_text(rec.determinism or 'native')}")
    if env.get("lock"):
        lines.append(f"env lock  {log_text(env['lock'].get('path'))} "
                     f"{short(env['lock'].get('sha256'))}")
    if rec.runtime.get("torch"):
        lines.append(f"torch     {rec.runtime.get('torch')}  cuda {rec.runtime.get('cuda') or '-'}  "
                     f"gpus {', '.join(rec.runtime.get('gpus') or []) or '-'}")
    lines += ["", "stages:"]
    lines += [f"  {log_text(s.name):<16} {log_text(s.status):<11} {short(s.signature)}"
              + (f"  {log_text(s.error)}" if s.error else "") for s in rec.stages]
    lines.append("data:")
    lines += [f"  {log_text(path):<40} {short(digest)}" for path, digest in rec.data.items()]
    lines.append("outputs:")
    lines += [f"  {log_text(path):<40} {short(out.sha256)}  ({log_text(out.kind)}, "
              f"{log_text(out.stage)})" for path, out in rec.outputs.items()]
    return log_block("\n".join(str(line) for line in lines))


_MAX_PARAMS = 100  # lines of parameters shown; the rest are in `runs show --json`


def _params_lines(params: Mapping[str, Any]) -> list[str]:
    """The ``--set`` overrides of the run and every parameter value it used (dotted keys,
    JSON values, the overridden ones marked), each name and value escaped."""
    overrides = params.get("overrides")
    if isinstance(overrides, list):  # KEY=VALUE strings, as given to --set
        pairs = [str(o).partition("=") for o in overrides]
        given = {k: v for k, _, v in pairs}
    elif isinstance(overrides, dict):
        given = {str(k): _json(v) for k, v in overrides.items()}
    else:
        given = {}
    lines = [f"--set     {', '.join(f'{log_text(k)}={log_text(v)}' for k, v in given.items())}"
             ] if given else []
    values = params.get("values")
    flat = list(_flatten(values)) if isinstance(values, dict) else []
    if flat:
        lines.append("params used:")
        for key, value in flat[:_MAX_PARAMS]:
            mark = "  (--set)" if key in given else ""
            lines.append(f"  {log_text(key)} = {log_text(_json(value))}{mark}")
        if len(flat) > _MAX_PARAMS:
            lines.append(f"  ... and {len(flat) - _MAX_PARAMS} more: gha-mlops runs show --json")
    return lines


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
