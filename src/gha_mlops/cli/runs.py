"""``gha-mlops runs list`` and ``gha-mlops runs show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from gha_mlops.cli._render import format_metric, run_summary, short
from gha_mlops.config import STATE_DIR
from gha_mlops.gha.safe import log_block, log_json, log_text
from gha_mlops.pipeline.records import RunStore

_dir_option = click.option(
    "--dir", "-C", "workspace", default=".", show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The workspace (the directory of mlops.yaml).")


def _store(workspace: Path) -> RunStore:
    return RunStore(workspace / STATE_DIR / "runs")


@click.group()
def runs() -> None:
    """List and show run records (.gha-mlops/runs)."""


@runs.command("list")
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list of run summaries.")
@click.option("--all", "show_all", is_flag=True, help="Include reproduction records.")
def list_runs(workspace: Path, as_json: bool, show_all: bool) -> None:
    """List recorded runs, oldest first."""
    entries = [e for e in _store(workspace).list()
               if show_all or e.get("kind", "run") == "run"]
    if as_json:
        click.echo(log_json(json.dumps(entries, indent=2, sort_keys=True)))
        return
    if not entries:
        click.echo("no runs recorded yet: run `gha-mlops run`")
        return
    click.echo(f"{'RUN':<24} {'STATUS':<11} {'RAN':>3} {'CACHED':>6}  {'MODEL':<12}  METRICS")
    for e in entries:
        top = sorted(e["metrics"].items(), key=lambda kv: kv[0].count("."))[:3]
        metrics = ", ".join(f"{log_text(k)}={log_text(format_metric(v))}" for k, v in top)
        kind = "" if e.get("kind", "run") == "run" else f" [{log_text(e['kind'])}]"
        click.echo(log_text(f"{log_text(e['id']):<24} {log_text(e['status']):<11} "
                            f"{e['stages_ran']:>3} {e['stages_cached']:>6}  "
                            f"{log_text(short(e.get('model_sha256'))):<12}  {metrics}{kind}"))


@runs.command("show")
@click.argument("run", default="latest")
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="The whole run record as JSON.")
def show_run(run: str, workspace: Path, as_json: bool) -> None:
    """Show one run: RUN is an id, a unique prefix of one, `latest` or `latest~N`."""
    record = _store(workspace).load(run)
    if as_json:
        click.echo(log_json(json.dumps(record, indent=2, sort_keys=True)))
        return
    click.echo(_describe(record))


def _describe(record: dict[str, Any]) -> str:
    """A run for people. Names and paths are escaped one by one (a line break in one shows),
    the whole once more: no line of it is a workflow command in Actions."""
    git = record.get("git") or {}
    env = record.get("env") or {}
    lines = [run_summary(record), ""]
    lines.append(f"started   {record.get('started_at')}   finished {record.get('finished_at')}")
    if git:
        lines.append(f"git       {short(git.get('commit'))} on {log_text(git.get('branch') or '-')}"
                     + ("  (dirty)" if git.get("dirty") else ""))
    raw = record.get("params")
    params: dict[str, Any] = raw if isinstance(raw, dict) else {}
    lines.append(f"seed      {log_text(record.get('seed'))}    params "
                 f"{log_text(params.get('file') or '-')} {short(params.get('sha256'))}")
    lines += _params_lines(params)
    py = env.get("python", {})
    lines.append(f"python    {py.get('version')}   {env.get('os', {}).get('platform')}")
    cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
    if cpu:
        # What decides the model's bytes on a CPU (docs/reproduce.md): the machine, and
        # whether the run pinned its kernels.
        lines.append(f"cpu       {log_text(cpu.get('vendor') or '-')} {log_text(cpu.get('machine'))} "
                     f"family {log_text(cpu.get('family') or '-')} model "
                     f"{log_text(cpu.get('model_id') or '-')}   determinism "
                     f"{log_text(record.get('determinism') or 'native')}")
    if env.get("lock"):
        lines.append(f"env lock  {log_text(env['lock'].get('path'))} "
                     f"{short(env['lock'].get('sha256'))}")
    runtime = record.get("runtime") or {}
    if runtime.get("torch"):
        lines.append(f"torch     {runtime.get('torch')}  cuda {runtime.get('cuda') or '-'}  "
                     f"gpus {', '.join(runtime.get('gpus') or []) or '-'}")
    lines.append("")
    lines.append("stages:")
    for s in record.get("stages", []):
        lines.append(f"  {log_text(s['name']):<16} {log_text(s['status']):<11} "
                     f"{short(s.get('signature'))}"
                     + (f"  {log_text(s['error'])}" if s.get("error") else ""))
    lines.append("data:")
    for path, digest in (record.get("data") or {}).items():
        lines.append(f"  {log_text(path):<40} {short(digest)}")
    lines.append("outputs:")
    for path, entry in (record.get("outputs") or {}).items():
        lines.append(f"  {log_text(path):<40} {short(entry['sha256'])}  "
                     f"({log_text(entry['kind'])}, {log_text(entry['stage'])})")
    return log_block("\n".join(str(line) for line in lines))


_MAX_PARAMS = 100  # lines of parameters shown; the rest are in `runs show --json`


def _params_lines(params: dict[str, Any]) -> list[str]:
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


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@runs.command("files")
@click.argument("run", default="latest")
@_dir_option
@click.option("--github-output", "output_name", metavar="NAME",
              help="In GitHub Actions, also set step output NAME to the list (one per line).")
def run_files(run: str, workspace: Path, output_name: str | None) -> None:
    """The files of a run that exist here, one absolute path per line: its record, then every
    declared output, metrics and plots file (what an artifact of the run should hold)."""
    import os

    from gha_mlops.gha import Actions

    store = _store(workspace)
    record = store.load(run)
    root = workspace.absolute()
    paths = [store.path(record["id"]).absolute()]
    paths += [root / rel for rel in (record.get("outputs") or {})]
    existing = [str(p) for p in paths if p.exists()]
    text = "\n".join(existing)
    click.echo(log_block(text))
    if output_name:
        Actions(os.environ).set_output(output_name, text)
