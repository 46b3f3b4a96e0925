"""``gha-mlops runners``: the self-hosted runner autoscaler (serve) and its state (status)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

_CONFIG_HELP = "The autoscaler's configuration (see docs/runners.md)."


@click.group()
def runners() -> None:
    """Ephemeral self-hosted runners on your GPU hosts, brought up for queued jobs."""


@runners.command()
@click.option("--config", "-c", "config", default="runners.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help=_CONFIG_HELP)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--port", type=int, default=None,
              help="Listen on this port instead of the one in `webhook.listen` (0: any).")
def serve(config: Path, log_level: str, port: int | None) -> None:
    """Serve workflow_job webhooks and keep each pool's runners as its jobs need.

    Logs are JSON lines on stderr; metrics are at /metrics; SIGTERM stops it (running jobs
    are not touched; the next start picks everything up from the state file).
    """
    from gha_mlops.runners.config import load_config
    from gha_mlops.runners.observe import setup_logging
    from gha_mlops.runners.service import Service

    setup_logging(log_level)
    environ = dict(os.environ)  # read here, once; the service reads only this mapping
    cfg = load_config(config, environ)
    Service.build(cfg, port=port, environ=environ).serve_forever()


@runners.command()
@click.option("--config", "-c", "config", default="runners.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help=_CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(config: Path, as_json: bool) -> None:
    """Print the pools, their runners and the queued jobs, from the autoscaler's state."""
    from gha_mlops.errors import UsageError
    from gha_mlops.runners.config import load_config
    from gha_mlops.runners.policy import AVAILABLE, pool_for, wants_self_hosted
    from gha_mlops.runners.state import State

    cfg = load_config(config, dict(os.environ), need_secrets=False)
    if not cfg.state_path.exists():
        raise UsageError(f"no autoscaler state at {cfg.state_path}",
                         hint="start the service first: gha-mlops runners serve "
                         f"--config {config}")
    state = State(cfg.state_path)
    try:
        runners_now = state.runners()
        jobs = [j for j in state.jobs(("queued",)) if j.status == "queued"
                and wants_self_hosted(cfg.pools, j.labels)]
    finally:
        state.close()
    now = time.time()
    queued = []
    for j in sorted(jobs, key=lambda j: j.queued_at):
        pool = pool_for(cfg.pools, j.labels)
        queued.append({"id": j.id, "repo": j.repo, "labels": sorted(j.labels),
                       "waiting_s": round(now - j.queued_at, 1),
                       "pool": pool.name if pool else None})
    pools = []
    for p in cfg.pools:
        mine = [r for r in runners_now if r.pool == p.name]
        by_state: dict[str, int] = {}
        for r in mine:
            by_state[r.state] = by_state.get(r.state, 0) + 1
        pools.append({"name": p.name, "labels": sorted(p.labels), "max": p.max,
                      "min_idle": p.min_idle, "gpus": p.gpus, "runners": by_state,
                      "available": sum(1 for r in mine if r.state in AVAILABLE),
                      "queued": sum(1 for q in queued if q["pool"] == p.name)})
    rows = [{"name": r.name, "pool": r.pool, "state": r.state,
             "since_s": round(now - r.state_since, 1), "job_id": r.job_id,
             "machine": r.machine_id} for r in sorted(runners_now, key=lambda r: r.created_at)]
    data = {"scope": cfg.scope, "state": str(cfg.state_path), "pools": pools,
            "runners": rows, "queued": queued}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(_render(data))


def _render(data: dict[str, Any]) -> str:
    from gha_mlops.runners.policy import human_duration

    out = [f"scope: {data['scope']}    state: {data['state']}", ""]
    out += _table(["POOL", "LABELS", "MAX", "MIN IDLE", "GPUS", "RUNNERS", "QUEUED"],
                  [[p["name"], ",".join(p["labels"]), p["max"], p["min_idle"], p["gpus"],
                    " ".join(f"{k}={v}" for k, v in sorted(p["runners"].items())) or "-",
                    p["queued"]] for p in data["pools"]])
    out.append("")
    if data["runners"]:
        out += _table(["RUNNER", "POOL", "STATE", "SINCE", "JOB"],
                      [[r["name"], r["pool"], r["state"], human_duration(r["since_s"]),
                        r["job_id"] or "-"] for r in data["runners"]])
    else:
        out.append("no runners")
    out.append("")
    if data["queued"]:
        out += _table(["QUEUED JOB", "REPO", "LABELS", "WAITING", "POOL"],
                      [[q["id"], q["repo"], ",".join(q["labels"]), human_duration(q["waiting_s"]),
                        q["pool"] or "(no pool serves these labels)"] for q in data["queued"]])
    else:
        out.append("no queued jobs")
    return "\n".join(out)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    from gha_mlops.gha.safe import log_text

    # Cells come from the state, i.e. from webhooks and the API: a lone surrogate or a
    # control character in a label must show as an escape, never crash or drive the terminal.
    cells = [head, *[[log_text(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]
