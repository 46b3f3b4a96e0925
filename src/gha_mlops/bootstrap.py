"""The composition root: the one place besides ``cli/`` that reads an environment and builds
the real adapters from it (GitHub, Actions, the runner autoscaler's GitHub, backends and
service). Services never build adapters; they take ports.

Every builder takes the environment as a mapping (the CLI passes ``os.environ``; tests pass
a dict of their own) and reads nothing else. Heavy adapters are imported inside the builders,
so importing this module stays cheap for ``gha-mlops --help``. :func:`build` bundles them for
a command: what it is handed (fakes, in tests) is used instead of what it would build.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from gha_mlops._closing import Closing
from gha_mlops.errors import UsageError, quoted

if TYPE_CHECKING:
    from gha_mlops.demo.release import EngineFactory
    from gha_mlops.gha.runtime import Actions
    from gha_mlops.github.port import GitHubAPI, RunnersPort
    from gha_mlops.packaging.image import DockerImages
    from gha_mlops.reporting.context import GitHubContext
    from gha_mlops.reporting.images import Bucket, ImageHost
    from gha_mlops.runners.backends.base import RunnerBackend
    from gha_mlops.runners.config import RunnersConfig
    from gha_mlops.runners.service import Service
    from gha_mlops.runners.state import State

_P = TypeVar("_P", bound=Closing)

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"
TOKEN_HINT = "pass it to the step: env: GITHUB_TOKEN: ${{ github.token }}"


# ------------------------------------------------------------------------------ GitHub


def github_token(environ: Mapping[str, str]) -> str | None:
    """The token to call GitHub with: ``$GITHUB_TOKEN``, else ``$GH_TOKEN`` (the gh CLI's
    name); None when neither is set or both are empty."""
    return environ.get("GITHUB_TOKEN") or environ.get("GH_TOKEN") or None


def github_api_url(environ: Mapping[str, str]) -> str:
    """The REST API's root: ``$GITHUB_API_URL`` (set by Actions, e.g. a GitHub Enterprise
    ``https://HOST/api/v3``), else GitHub.com's."""
    return environ.get("GITHUB_API_URL") or DEFAULT_API_URL


def github_server_url(environ: Mapping[str, str]) -> str:
    """The web root links point at: ``$GITHUB_SERVER_URL``, else ``https://github.com``."""
    return environ.get("GITHUB_SERVER_URL") or DEFAULT_SERVER_URL


def github(environ: Mapping[str, str], *, need: str = "--publish",
           timeout: float = 15) -> GitHubAPI:
    """A PyGithub-backed client (every GitHub port: comments, checks, statuses, commits,
    Actions runs and artifacts, pull requests) with the token and API URL of ``environ``.

    Raises :class:`UsageError` naming ``need`` (what asked for GitHub, e.g. ``--publish``)
    when no token is set, and :class:`~gha_mlops.errors.MissingExtraError` when PyGithub is
    not installed. The client holds connections: close it (it is a context manager)."""
    token = github_token(environ)
    if not token:
        raise UsageError(f"{need} needs a token: GITHUB_TOKEN is not set", hint=TOKEN_HINT)
    from gha_mlops.github.pygithub import connect

    return connect(token, github_api_url(environ), timeout=timeout)


def actions(environ: Mapping[str, str], stream: TextIO | None = None) -> Actions:
    """The Actions runtime (workflow commands, outputs, summaries) bound to ``environ`` and
    ``stream`` (stdout by default); a no-op outside Actions."""
    from gha_mlops.gha.runtime import Actions

    return Actions(environ, stream)


# ------------------------------------------------------------------------------ a command's


class Adapters(Closing):
    """The adapters one command uses, each built from ``environ`` on first use unless it was
    given (a fake, in tests). It owns what it hands out: :meth:`close`, or leaving a ``with``
    block, closes each port once, the last opened first."""

    def __init__(self, environ: Mapping[str, str], *, github: GitHubAPI | None = None,
                 actions: Actions | None = None) -> None:
        self.environ = environ
        self._github = github
        self._actions = actions
        self._open: list[Closing] = []

    def github(self, *, need: str = "--publish") -> GitHubAPI:
        """The GitHub client (:func:`github`); ``need`` names what asks for it in the error
        when no token is set."""
        if self._github is None:
            self._github = github(self.environ, need=need)
        return self._owned(self._github)

    def actions(self) -> Actions:
        """The Actions runtime bound to the environment (:func:`actions`)."""
        if self._actions is None:
            self._actions = actions(self.environ)
        return self._actions

    def _owned(self, port: _P) -> _P:
        if not any(port is held for held in self._open):
            self._open.append(port)
        return port

    def close(self) -> None:
        """Close every port handed out, the last opened first; each closes once."""
        while self._open:
            self._open.pop().close()


def build(environ: Mapping[str, str], *, github: GitHubAPI | None = None,
          actions: Actions | None = None) -> Adapters:
    """The adapters of a command run in ``environ``; ``github`` and ``actions``, when given,
    are used instead of the real ones (tests pass :mod:`gha_mlops.testing.fakes`)."""
    return Adapters(environ, github=github, actions=actions)


# ------------------------------------------------------------------------------ runners


def runner_github(config: RunnersConfig) -> RunnersPort:
    """The autoscaler's GitHub for the configuration's scope, with its token or as its GitHub
    App (the configuration already read the secrets from the environment)."""
    from gha_mlops.github.runners import RunnerScope, connect_runners

    scope = RunnerScope(repo=config.repo, org=config.org, repos=config.repos)
    a = config.auth
    return connect_runners(scope, token=a.token, app_id=a.app_id, private_key=a.private_key,
                           installation_id=a.installation_id, base_url=config.api_url)


def runner_backends(config: RunnersConfig,
                    environ: Mapping[str, str]) -> dict[str, RunnerBackend]:
    """The backends ``config``'s pools use; ``environ`` finds the Docker daemon
    (``$DOCKER_HOST``, ``$DOCKER_CONTEXT``...) when the file names none."""
    backends: dict[str, RunnerBackend] = {}
    if any(p.backend == "docker" for p in config.pools):
        backends["docker"] = _docker_runner_backend(config, environ)
    if config.ec2 is not None and any(p.backend == "ec2" for p in config.pools):
        from gha_mlops.runners.backends.ec2 import Ec2Backend

        backends["ec2"] = Ec2Backend(config.id, config.ec2,
                                     {p.name: p for p in config.pools if p.backend == "ec2"},
                                     environ=environ)
    return backends


def _docker_runner_backend(config: RunnersConfig,
                           environ: Mapping[str, str]) -> RunnerBackend:
    """One Docker host (container ids as they are) or several (one pool over them all)."""
    from gha_mlops.runners.backends.docker import DockerBackend

    hosts = config.docker_hosts
    if len(hosts) == 1:
        h = hosts[0]
        return DockerBackend(config.id, base_url=h.host, gpus=h.gpus, network=h.network,
                             extra_env=h.env, gpu_driver=h.gpu_driver, environ=environ)
    from gha_mlops.runners.backends.docker_hosts import DockerHosts

    return DockerHosts(config.id, hosts, placement=config.placement, environ=environ,
                       down_after=config.host_down_after,
                       list_timeout=config.host_list_timeout)


def runner_service(config: RunnersConfig, environ: Mapping[str, str], *,
                   github: RunnersPort | None = None,
                   backends: Mapping[str, RunnerBackend] | None = None,
                   port: int | None = None, state: State | None = None) -> Service:
    """``gha-mlops runners serve``'s service: the GitHub and backends ``config`` names, built
    from ``environ`` unless given (fakes, in tests), and ``$GHA_MLOPS_FAILPOINTS`` from
    ``environ``. The service closes its ports when it stops."""
    from gha_mlops.runners.service import Service

    with contextlib.ExitStack() as undo:  # a step that fails closes what came before it
        if backends is None:
            backends = runner_backends(config, environ)
        for backend in backends.values():
            undo.callback(backend.close)
        if github is None:
            github = runner_github(config)
        undo.callback(github.close)
        service = Service.build(config, github=github, backends=backends, port=port,
                                state=state, environ=environ)
        undo.pop_all()
    return service


# --- object stores (data)
# (written by the data side of issue 13: data/service.py takes this opener as a port)

if TYPE_CHECKING:
    from gha_mlops.config.model import Remote
    from gha_mlops.data.ports import ObjectStore
    from gha_mlops.data.service import StoreOpener


def object_stores() -> StoreOpener:
    """The opener of the object stores of data remotes (:func:`gha_mlops.data.stores.
    open_remote`): a directory (a shared disk or NAS) or S3 through boto3. boto3 reads its
    credentials (``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``, OIDC web identity...) from the
    process environment itself; gha-mlops reads none of it. The stores it opens are closed
    by the service that opened them. The adapters are imported when a store is opened: a
    run that fetches nothing (a no-op) never loads them."""

    def open_store(remote: Remote, *, root: Path) -> ObjectStore:
        from gha_mlops.data.stores import open_remote

        return open_remote(remote, root=root)

    return open_store


# --- reports


def image_engine(environ: Mapping[str, str]) -> EngineFactory | None:
    """The Docker daemon ``environ`` names (``DOCKER_HOST``, else the local socket) as the
    packaging's image engine, made when used; None without the docker SDK (the package
    extra)."""
    import importlib.util

    if importlib.util.find_spec("docker") is None:
        return None

    def engine() -> DockerImages:
        from gha_mlops.packaging.image import DockerImages

        return DockerImages(environ=dict(environ))

    return engine


def signature_deriver() -> tuple[Callable[[Path], dict[str, Any] | None] | None, str | None]:
    """``packaging.signature.signature_of`` as the registry takes it (it calls it for
    ``.onnx`` models only), or None and a note when it cannot be imported (onnx missing)."""
    import importlib.util

    # signature_of imports onnx only when called: ask for it here, so a missing onnx gives
    # the note instead of a failed register.
    if importlib.util.find_spec("onnx") is None:
        return None, ("no signature derived (onnx is not installed: pip install "
                      "'gha-mlops[package]'); the version rule cannot see a signature change")
    from gha_mlops.packaging.signature import signature_of

    def derive(path: Path) -> dict[str, Any] | None:
        doc: dict[str, Any] = signature_of(path).to_json()
        return doc

    return derive, None


def wheel_cache(environ: Mapping[str, str]) -> Path:
    """Where the wheels of serving images are kept: ``$XDG_CACHE_HOME/gha-mlops/wheels``."""
    root = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "gha-mlops" / "wheels"


def github_context(environ: Mapping[str, str]) -> GitHubContext:
    """The facts of the Actions job a report needs (the ``GITHUB_*`` variables, the token by
    :func:`github_token`, the API by :func:`github_api_url`, ``AWS_ENDPOINT_URL_S3`` else
    ``AWS_ENDPOINT_URL`` for an image bucket); empty values count as unset."""
    from gha_mlops.reporting.context import GitHubContext

    summary = environ.get("GITHUB_STEP_SUMMARY")
    return GitHubContext(
        active=environ.get("GITHUB_ACTIONS") == "true",
        repository=environ.get("GITHUB_REPOSITORY", ""),
        server_url=environ.get("GITHUB_SERVER_URL") or None,
        api_url=github_api_url(environ),
        run_id=environ.get("GITHUB_RUN_ID") or None,
        event_name=environ.get("GITHUB_EVENT_NAME", ""),
        event_path=environ.get("GITHUB_EVENT_PATH") or None,
        sha=environ.get("GITHUB_SHA", ""),
        step_summary=Path(summary) if summary else None,
        token=github_token(environ),
        s3_endpoint=(environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
                     or None))


def baseline_downloader(context: GitHubContext) -> Callable[[str], bytes]:
    """``--baseline URL``: fetched with the job's token when the URL is on the API's host."""
    def download(url: str) -> bytes:
        from gha_mlops.github.pygithub import download

        return download(url, token=context.token, api_url=context.api_url,
                        what=f"download the baseline {url}")

    return download


def image_host(url: str | None, base_url: str | None, report_id: str,
                context: GitHubContext) -> ImageHost | None:
    """``--images s3://BUCKET/PREFIX``: the plots go to the bucket; None: the assets branch."""
    if not url:
        return None
    from gha_mlops.reporting.images import BucketImageHost, BucketLocation

    location = BucketLocation.parse(url, base_url, context.s3_endpoint)

    def open_bucket() -> Bucket:
        from gha_mlops.data.stores import open_store

        return open_store(location.url, endpoint_url=context.s3_endpoint)

    return BucketImageHost(location, report_id, open_bucket)


def deploy_config(workspace: Path, env_name: str) -> tuple[Any, Any]:
    """``(DeployConfig, DeployEnvironment)`` of ``env_name`` in the workspace's mlops.yaml; a
    UsageError when it has no ``deploy:`` or no such environment, naming the ones there are."""
    from gha_mlops.config import DEFAULT_CONFIG, load_pipeline

    config_file = workspace / DEFAULT_CONFIG
    deploy = load_pipeline(config_file).deploy
    if deploy is None:
        raise UsageError(f"{config_file} has no `deploy:` section",
                         hint="declare the environments to deploy to: docs/deploy.md")
    env = deploy.environments.get(env_name)
    if env is None:
        raise UsageError(f"there is no environment {env_name!r} in {config_file}",
                         hint="environments: " + (", ".join(sorted(deploy.environments))
                                                  or "none"))
    return deploy, env


def deploy_environment(workspace: Path, env_name: str, *,
                       progress: Callable[[str], None]) -> tuple[Any, Any]:
    """``(DeployConfig, Environment)`` of ``env_name`` (see :func:`deploy_config`): the
    Docker hosts it names (the docker SDK: ``pip install 'gha-mlops[package]'``), the router
    image and the HTTP checks. The caller closes the hosts."""
    from gha_mlops.deploy.docker_hosts import open_hosts
    from gha_mlops.deploy.environment import Environment, HttpChecks

    deploy, env = deploy_config(workspace, env_name)
    return deploy, Environment(env, open_hosts(env), deploy.router_image, HttpChecks(),
                               progress=progress, logs=prediction_logs(workspace, os.environ))


def monitor_model(workspace: Path, name: str, *, fallback: Any = None,
                  also: str = "") -> Any:
    """``monitor.models.<name>`` (a ``MonitorModel``) of the workspace's mlops.yaml;
    ``fallback`` when it is not there, else a UsageError naming the file and the models
    there are (``also``: another way out, for the hint)."""
    from gha_mlops.config import DEFAULT_CONFIG, load_pipeline

    config_file = workspace / DEFAULT_CONFIG
    monitor = load_pipeline(config_file).monitor
    models = monitor.models if monitor is not None else {}
    if name in models:
        return models[name]
    if fallback is not None:
        return fallback
    raise UsageError(
        f"{quoted(name)} is not under monitor.models"
        + ("" if monitor is not None else " (there is no `monitor:` section)"),
        hint="monitored models: " + (", ".join(sorted(models)) or "none") + "; declare "
             f"it as `monitor: {{models: {{{name}: {{log: logs/predictions}}}}}}` "
             f"(docs/monitor-config.md){also}", file=str(config_file))


# The variables a backend that logs to S3 gets from the deploying process (when set there).
_AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
            "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def prediction_logs(workspace: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """The prediction log of each model of ``monitor.models`` (``PredictionLog`` by model
    name) for the backends a deploy starts: its ``log`` (a directory made absolute against
    the workspace) and ``sample``, and for S3 the AWS variables of ``environ``."""
    from gha_mlops.config import DEFAULT_CONFIG, load_pipeline
    from gha_mlops.deploy.model import PredictionLog

    monitor = load_pipeline(workspace / DEFAULT_CONFIG).monitor
    logs = {}
    for name, model in (monitor.models if monitor is not None else {}).items():
        if model.log.startswith("s3://"):
            env = {k: environ[k] for k in _AWS_ENV if environ.get(k)}
            logs[name] = PredictionLog(model.log, model.sample, env)
        else:
            location = str((workspace / model.log).resolve())
            logs[name] = PredictionLog(location, model.sample)
    return logs
