"""``gha-mlops runners check``: what a ``runners.yaml`` sets up, said without serving, and with
``live`` whether GitHub and each backend the pools use answer as the autoscaler needs.

The configuration itself is checked when it is loaded (:func:`gha_mlops.runners.config.
load_config`: every mistake with its line and a hint, secrets included); this module turns a
loaded one into lines a person reads, and asks the live services through their ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gha_mlops.github.port import GitHubError

if TYPE_CHECKING:
    from gha_mlops.github.port import RunnersPort
    from gha_mlops.runners.backends.base import RunnerBackend
    from gha_mlops.runners.config import Pool, RunnersConfig


@dataclass(frozen=True)
class CheckReport:
    """The lines to show, and the problems a live check found (empty: all answered)."""

    lines: tuple[str, ...]
    github_problem: str | None = None
    backend_problems: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.github_problem is None and not self.backend_problems


def describe(cfg: RunnersConfig) -> list[str]:
    """The configuration in lines: scope, authentication (never a secret), webhook, state and
    each pool."""
    auth = cfg.auth
    how = (f"GitHub App {auth.app_id} (installation {auth.installation_id or 'looked up'})"
           if auth.app_id is not None else "a token" if auth.token else "no credentials")
    lines = [f"{cfg.path}: autoscaler {cfg.id!r} for {cfg.scope}"
             + (f" (repositories {', '.join(cfg.repos)})" if cfg.repos else ""),
             f"  GitHub: {cfg.api_url} as {how}",
             f"  webhook: http://{cfg.listen_host}:{cfg.listen_port}{cfg.webhook_path} "
             f"(bodies up to {cfg.max_body} bytes, signed with the secret)",
             f"  state: {cfg.state_path}; reconcile every {cfg.reconcile_interval:g} s"]
    if any(p.backend == "docker" for p in cfg.pools) and len(cfg.docker_hosts) > 1:
        lines.append(f"  docker: {len(cfg.docker_hosts)} hosts, placement {cfg.placement}: "
                     + "; ".join(f"{h.name} {h.host or 'the local daemon'} "
                                 f"({len(h.gpus)} GPU(s))" for h in cfg.docker_hosts))
    if cfg.ec2 is not None:
        e = cfg.ec2
        lines.append(f"  ec2: region {e.region}"
                     + (f" at {e.endpoint_url}" if e.endpoint_url else "")
                     + f"; JIT configs under {e.parameter_prefix}/{cfg.id}/; interruption "
                     + (f"queue {e.interruption_queue}" if e.interruption_queue
                        else "notices from the instances only (no queue)"))
    for pool in cfg.pools:
        sizes = [f"max {pool.max}", f"min_idle {pool.min_idle}"]
        sizes += [f"{pool.gpus} GPU(s) each"] if pool.gpus else []
        sizes += [f"{pool.cpus:g} CPUs"] if pool.cpus else []
        sizes += [f"{pool.memory_mb} MiB"] if pool.memory_mb else []
        what = pool.image if pool.ec2 is None else _ec2_pool(pool)
        lines.append(f"  pool {pool.name}: labels {', '.join(sorted(pool.labels))}; "
                     f"{pool.backend} {what}; {'; '.join(sizes)}; idle "
                     f"{pool.idle_timeout:g} s, lifetime {pool.max_lifetime:g} s")
    return lines


def _ec2_pool(pool: Pool) -> str:
    e = pool.ec2
    assert e is not None
    image = e.ami or f"the image of launch template {e.launch_template}"
    return (f"{e.capacity} ({e.spot_allocation}) over {', '.join(e.instance_types)} x "
            f"{len(e.subnets)} subnet(s), {image}"
            + (f", template {e.launch_template} {e.launch_template_version}"
               if e.launch_template and e.ami else "")
            + f", expiry lifetime + {e.expiry_grace:g} s"
            + (", interrupted jobs' replacements on-demand" if e.rerun_on_demand else ""))


def check(cfg: RunnersConfig, *, github: RunnersPort | None = None,
          backends: Mapping[str, RunnerBackend] | None = None) -> CheckReport:
    """:func:`describe`, and with ``github`` and ``backends`` (a live check) their answers:
    GitHub lists the scope's runners (the permission the autoscaler needs), each backend a
    pool uses reports healthy (its daemon answers, the GPUs it would offer)."""
    lines = describe(cfg)
    github_problem = None
    if github is not None:
        try:
            found = github.list_runners()
        except GitHubError as err:
            github_problem = err.message + (f"; {err.hint}" if err.hint else "")
            lines.append(f"  GitHub: FAILED: {github_problem}")
        else:
            lines.append(f"  GitHub: answers; {len(found)} self-hosted runner(s) registered "
                         f"in {cfg.scope}")
    problems: dict[str, str] = {}
    for name, backend in (backends or {}).items():
        verify = getattr(backend, "verify", None)  # a cloud backend's deeper check
        if callable(verify):
            results: list[tuple[bool, str]] = verify()
            lines.extend(f"  backend {name}: {'ok' if ok else 'FAILED'}: {text}"
                         for ok, text in results)
            failed = [text for ok, text in results if not ok]
            if failed:
                problems[name] = "; ".join(failed)
            continue
        health = backend.health()
        if not health.ok:
            problems[name] = health.detail
            lines.append(f"  backend {name}: FAILED: {health.detail}")
            continue
        free = ", ".join(f"{n} {k} free" for k, n in health.capacity.items())
        lines.append(f"  backend {name}: answers ({health.detail}" + (f"; {free}" if free
                                                                        else "") + ")")
    return CheckReport(tuple(lines), github_problem, problems)


__all__ = ["CheckReport", "check", "describe"]
