"""The GitHub Deployment of a ``gha-mlops deploy`` (``--github-deployment``): created when the
rollout starts, with an ``in_progress`` status linking the workflow run, then ``success``
(with the environment's URL) or ``failure``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gha_mlops import bootstrap
from gha_mlops.errors import UsageError

if TYPE_CHECKING:
    from gha_mlops.deploy.environment import Environment
    from gha_mlops.github.port import DeploymentsPort
    from gha_mlops.registry import ModelVersion


class Announcer:
    """The GitHub Deployment of this deploy, when asked for (else every call does nothing)."""

    def __init__(self, port: DeploymentsPort | None, environ: Mapping[str, str]) -> None:
        self.port, self.environ = port, environ
        self.repo = environ.get("GITHUB_REPOSITORY", "")
        self.deployment: int | None = None

    @classmethod
    def create(cls, environ: Mapping[str, str], *, enabled: bool) -> Announcer:
        if not enabled:
            return cls(None, environ)
        if not environ.get("GITHUB_REPOSITORY") or not environ.get("GITHUB_SHA"):
            raise UsageError("--github-deployment needs GITHUB_REPOSITORY and GITHUB_SHA",
                             hint="run it in GitHub Actions, or drop --github-deployment")
        return cls(bootstrap.github(environ, need="--github-deployment"), environ)

    def _log_url(self) -> str | None:
        run = self.environ.get("GITHUB_RUN_ID")
        server = bootstrap.github_server_url(self.environ).rstrip("/")
        return f"{server}/{self.repo}/actions/runs/{run}" if run else None

    def start(self, env: Environment, mv: ModelVersion, image: str) -> None:
        if self.port is None:
            return
        ref = self.port.create_deployment(
            self.repo, ref=self.environ["GITHUB_SHA"], environment=env.name,
            description=f"{mv.name} {mv.version}",
            payload={"model": mv.name, "version": mv.version, "image": image},
            production=env.config.production)
        self.deployment = ref.id
        self.port.create_deployment_status(self.repo, ref.id, state="in_progress",
                                           description=f"rolling out {mv.name} {mv.version}",
                                           log_url=self._log_url())

    def finish(self, ok: bool, description: str, url: str) -> None:
        if self.port is None or self.deployment is None:
            return
        self.port.create_deployment_status(
            self.repo, self.deployment, state="success" if ok else "failure",
            description=description[:140], environment_url=url if ok else None,
            log_url=self._log_url())

    def __enter__(self) -> Announcer:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.port is not None:
            self.port.close()
