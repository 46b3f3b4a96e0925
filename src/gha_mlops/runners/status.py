"""``gha-mlops runners status``: the pools, their runners and the queued jobs, read from the
autoscaler's state file (the service need not be running), as a JSON-ready mapping and as
aligned text tables."""

from __future__ import annotations

from typing import Any

from gha_mlops.errors import UsageError
from gha_mlops.runners.config import RunnersConfig
from gha_mlops.runners.policy import AVAILABLE, human_duration, pool_for, wants_self_hosted
from gha_mlops.runners.state import State


def snapshot(config: RunnersConfig, now: float, *, config_path: str) -> dict[str, Any]:
    """The state of ``config``'s autoscaler at unix time ``now``: ``scope``, ``state`` (the
    file), ``pools`` (with their runners by state and their queued jobs), ``runners`` (oldest
    first) and ``queued`` (self-hosted jobs, longest waiting first). Raises
    :class:`UsageError` when there is no state file yet (``config_path`` is named in the hint
    to start the service)."""
    if not config.state_path.exists():
        raise UsageError(f"no autoscaler state at {config.state_path}",
                         hint="start the service first: gha-mlops runners serve "
                         f"--config {config_path}")
    state = State(config.state_path)
    try:
        runners_now = state.runners()
        jobs = [j for j in state.jobs(("queued",)) if j.status == "queued"
                and wants_self_hosted(config.pools, j.labels)]
    finally:
        state.close()
    queued = []
    for j in sorted(jobs, key=lambda j: j.queued_at):
        pool = pool_for(config.pools, j.labels)
        queued.append({"id": j.id, "repo": j.repo, "labels": sorted(j.labels),
                       "waiting_s": round(now - j.queued_at, 1),
                       "pool": pool.name if pool else None})
    pools = []
    for p in config.pools:
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
    return {"scope": config.scope, "state": str(config.state_path), "pools": pools,
            "runners": rows, "queued": queued}


def render(data: dict[str, Any]) -> str:
    """:func:`snapshot`'s mapping as text: a header line, then the pools, runners and queued
    jobs as tables (or a line saying there are none)."""
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
