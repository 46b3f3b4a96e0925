"""``deploy:`` of mlops.yaml: the checks that span keys or sections, pydantic's errors worded
for this section, and the typed value (docs/deploy-config.md).

The values here end up as container names, GitHub environment names, Docker daemon URLs,
addresses and ports that a rollout binds, so each is checked for its form at load, with the
file, the line and what to write instead, rather than failing half-way through a rollout.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops.config._schema_errors import (
    duration_seconds,
    key_form,
    section_schema_problems,
)
from gha_mlops.config._yaml import Loc, Problems, display
from gha_mlops.config.model import DeployConfig, DeployEnvironment, DeployGates, DeployHostConfig

if TYPE_CHECKING:
    from urllib.parse import SplitResult

    from pydantic import BaseModel

# Environment names become container names (gha-mlops-<env>-router) and GitHub environments.
ENV_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_ENV_NAME_HINT = ("use 1 to 32 lower-case letters, digits and '-', starting and ending with a "
                  "letter or digit (e.g. `staging`, `prod-eu`): the name becomes container "
                  "and GitHub environment names")
# Patterns used only while validating are strings, compiled (and cached by re) on first use:
# a load from the validated-config cache imports this module but never matches them.
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# (key in the file, key in the normalized form, lowest, highest) in seconds.
DURATIONS = (("bake", "bake_s", 0.0, 3600.0), ("ready_timeout", "ready_timeout_s", 1.0, 1800.0),
             ("drain", "drain_s", 0.0, 300.0))
_HOSTNAME = (r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
             r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_DOCKER_HINT = ("write `unix:///var/run/docker.sock` (an absolute socket path), "
                "`tcp://HOST:PORT` or `ssh://[USER@]HOST[:PORT]`")
# Docker's reference grammar (distribution/reference): [DOMAIN[:PORT]/]PATH[:TAG][@DIGEST].
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
           r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?")
_REFERENCE = (rf"^(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*"
              r"(?::[\w][\w.-]{0,127})?"
              r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$")
_FORMS = {
    "deploy": "a mapping with `environments:`, e.g. `deploy: {environments: {staging: "
              "{stage: staging, port: 8080, hosts: [{docker: 'unix:///var/run/docker.sock'}]}}}`",
    "model": "the name of a model in `registry.models`, e.g. `model: digits`",
    "router_image": "a Docker image reference of nginx 1.22 or later, e.g. "
                    "`router_image: nginx:1.27-bookworm`",
    "environments": "a mapping from environment names to environments, e.g. `environments: "
                    "{staging: {stage: staging, port: 8080, hosts: [{docker: "
                    "'unix:///var/run/docker.sock'}]}}`",
    "stage": "the registry stage this environment serves, e.g. `stage: staging`",
    "hosts": "a list of Docker hosts, e.g. `hosts: [{docker: 'unix:///var/run/docker.sock'}]`",
    "docker": "the Docker daemon's URL: `unix:///var/run/docker.sock`, `tcp://HOST:PORT` or "
              "`ssh://[USER@]HOST[:PORT]`",
    "address": "the host name or IP address at which this machine reaches the host's ports, "
               "e.g. `address: 10.0.0.5`",
    "port": "the router's port, a whole number from 1 to 65535, e.g. `port: 8080`",
    "backend_ports": "the two backends' ports, e.g. `backend_ports: [8081, 8082]` (default: "
                     "port+1 and port+2)",
    "listen": "the IP address the router listens on, e.g. `listen: 0.0.0.0`",
    "bind": "the IP address the backends listen on, e.g. `bind: 127.0.0.1`",
    "workers": "the server processes per backend, a whole number from 1 to 64, e.g. "
               "`workers: 2`",
    "steps": "up to 10 percentages of traffic to the new version, strictly increasing and "
             "ending at 100, e.g. `steps: [10, 50, 100]` (`[100]`: blue/green)",
    "bake": "seconds or a duration such as `10s`, `2m` or `500ms`, from 0 to 3600 s",
    "ready_timeout": "seconds or a duration such as `60s` or `2m`, from 1 to 1800 s",
    "drain": "seconds or a duration such as `5s` or `500ms`, from 0 to 300 s",
    "gates": "a mapping of gates, e.g. `gates: {max_error_rate: 0.01, max_p99_ms: 250, "
             "min_requests: 20}`",
    "max_error_rate": "the largest share of 5xx answers, a number from 0 to 1, e.g. "
                      "`max_error_rate: 0.01`",
    "max_p99_ms": "the largest p99 latency in milliseconds, a number > 0, e.g. "
                  "`max_p99_ms: 250`",
    "min_requests": "the fewest inference requests a bake needs, a whole number >= 0, e.g. "
                    "`min_requests: 20`",
    "golden": "`true` or `false`: replay the golden requests before any traffic",
    "url": "the environment's http(s) URL shown in GitHub, e.g. "
           "`url: https://staging.example.com`",
    "production": "`true` or `false`: GitHub marks the deployments as production",
}


def parse_duration(value: Any) -> float:
    """Seconds from a number (not a boolean) or a duration with the unit ``ms``, ``s``, ``m`` or ``h``;
    ValueError naming the forms otherwise. Bounds are the caller's."""
    return duration_seconds(value, _UNIT_S, "'10s', '2m' or '500ms'")


def _form(loc: Loc) -> str | None:
    """``"`key` takes <form>"`` for the key at ``loc`` under ``deploy:``."""
    if len(loc) == 3 and loc[1] == "environments":
        return ("an environment takes a mapping with at least `stage`, `port` and `hosts`, "
                "e.g. `staging: {stage: staging, port: 8080, hosts: [{docker: "
                "'unix:///var/run/docker.sock'}]}`")
    return key_form(loc, _FORMS)


def _allowed(parent: Loc) -> Sequence[str]:
    """The keys of the mapping at ``parent`` (``deploy`` first)."""
    # ("deploy", "environments", NAME, "hosts", N) -> ("environments", "*", "hosts", "*")
    from gha_mlops.config.schema import (
        DeployEnvironmentSchema,
        DeployGatesSchema,
        DeployHostSchema,
        DeploySchema,
    )

    shape = [str(p) for p in parent[1:]]
    if len(shape) >= 2:
        shape[1] = "*"
    if len(shape) >= 4 and shape[2] == "hosts":
        shape[3] = "*"
    models: dict[tuple[str, ...], type[BaseModel]] = {
        (): DeploySchema, ("environments", "*"): DeployEnvironmentSchema,
        ("environments", "*", "hosts", "*"): DeployHostSchema,
        ("environments", "*", "gates"): DeployGatesSchema}
    model = models.get(tuple(shape))
    return list(model.model_fields) if model is not None else []


def deploy_schema_problems(problems: Problems, errors: Sequence[Mapping[str, Any]]) -> None:
    """pydantic's errors under ``deploy:`` worded for someone editing the file."""
    section_schema_problems(problems, errors, allowed=_allowed, form=_form)


def normalize_deploy(problems: Problems, deploy: Any,
                     registry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``deploy:`` (a validated ``DeploySchema`` or None) as a plain mapping, after the checks
    the schema cannot make (docs/deploy-config.md): the model a ``registry.models`` name (by
    default the only one), each environment's name, stage (one of ``registry.stages``), hosts,
    addresses, ports (all different, also between environments sharing a host), steps,
    durations and URL, and the router image a Docker reference. Each environment keeps the
    line of its key (``line``) for :attr:`DeployEnvironment.source`."""
    if deploy is None:
        return None
    base: Loc = ("deploy",)
    model = _model(problems, deploy.model, registry)
    if not re.fullmatch(_REFERENCE, deploy.router_image) or len(deploy.router_image) > 512:
        problems.add((*base, "router_image"),
                     f"{deploy.router_image!r} is not a Docker image reference",
                     "write NAME[:TAG][@DIGEST], e.g. `nginx:1.27-bookworm` or "
                     "`registry.example.com/nginx:1.27`")
    if not deploy.environments:
        problems.add(base, "there are no environments",
                     "add one under `deploy.environments:`, e.g. `staging: {stage: staging, "
                     "port: 8080, hosts: [{docker: 'unix:///var/run/docker.sock'}]}`", key=True)
    lines = section_lines(problems.text, ("deploy", "environments"))
    environments: dict[str, dict[str, Any]] = {}
    ports_by_host: dict[str, dict[int, str]] = {}
    for name, env in deploy.environments.items():
        normalized = _environment(problems, name, env, registry)
        line = lines.get(name) or problems.where.find((*base, "environments", name),
                                                      key=True)[0]
        if line:
            normalized["line"] = line
        _check_shared_hosts(problems, name, normalized, ports_by_host)
        environments[name] = normalized
    return {"model": model, "router_image": deploy.router_image, "environments": environments}


def _model(problems: Problems, model: str | None, registry: Mapping[str, Any] | None) -> str:
    models = list(registry["models"]) if registry is not None else []
    if registry is None:
        problems.add(("deploy",), "a deployment needs a `registry:` section",
                     "declare the model and its stages under `registry:` (docs/registry.md): "
                     "`deploy` serves the version a registry stage points at", key=True)
    elif model is not None and model not in models:
        problems.add(("deploy", "model"), f"no model named {model!r} in registry.models",
                     "name one of " + (", ".join(map(repr, models)) if models
                                       else "them (registry.models is empty)"))
    elif model is None and len(models) != 1:
        problems.add(("deploy",), "which model to deploy is not said" if models
                     else "registry.models has no model to deploy",
                     ("set `deploy.model:` to one of " + ", ".join(map(repr, models)))
                     if models else "declare the model under `registry.models:`", key=True)
    return model if model is not None else (models[0] if len(models) == 1 else "")


def _environment(problems: Problems, name: str, env: Any,
                 registry: Mapping[str, Any] | None) -> dict[str, Any]:
    loc: Loc = ("deploy", "environments", name)
    if not ENV_NAME.fullmatch(name):
        problems.add(loc, f"environment name {name!r} is not allowed", _ENV_NAME_HINT,
                     key=True)
    if registry is not None and env.stage not in registry["stages"]:
        problems.add((*loc, "stage"), f"{env.stage!r} is not one of the registry's stages",
                     "name one of registry.stages: "
                     + ", ".join(map(repr, registry["stages"])))
    hosts = _hosts(problems, loc, env.hosts)
    backend_ports = _ports(problems, loc, env.port, env.backend_ports)
    for key in ("listen", "bind"):
        _ip(problems, (*loc, key), getattr(env, key))
    _steps(problems, (*loc, "steps"), env.steps)
    durations = {}
    for key, out, low, high in DURATIONS:
        seconds = getattr(env, key)
        if not low <= seconds <= high:
            problems.add((*loc, key), f"{seconds:g} s is outside {low:g}..{high:g} s",
                         _form((*loc, key)))
        durations[out] = seconds
    if env.url is not None:
        _url(problems, (*loc, "url"), env.url)
    return {"stage": env.stage, "hosts": hosts, "port": env.port,
            "backend_ports": backend_ports, "listen": env.listen, "bind": env.bind,
            "workers": env.workers, "steps": list(env.steps), **durations,
            "gates": env.gates.model_dump(), "golden": env.golden, "url": env.url,
            "production": env.production}


def _hosts(problems: Problems, loc: Loc, hosts: Sequence[Any]) -> list[dict[str, Any]]:
    """Each host's URL checked and its address defaulted. No host twice: not the same daemon,
    and not the same address, since the containers run on the host's network and two daemons
    on one machine would take the same ports."""
    if not hosts:
        problems.add((*loc, "hosts"), "an environment needs at least one host",
                     _form((*loc, "hosts")))
    out: list[dict[str, Any]] = []
    seen: dict[tuple[Any, ...], int] = {}
    for i, host in enumerate(hosts):
        hloc: Loc = (*loc, "hosts", i)
        parsed = _docker_url(problems, (*hloc, "docker"), host.docker)
        if parsed is None:
            continue
        key, default_address = parsed
        address = host.address if host.address is not None else default_address
        if host.address is not None and not _is_host(host.address):
            problems.add((*hloc, "address"), f"{host.address!r} is not a host name or an IP "
                         "address", _form((*hloc, "address")))
        machine = ("address", _machine(address))
        if key in seen:
            problems.add((*hloc, "docker"), f"the host {host.docker!r} is listed twice "
                         f"(as hosts[{seen[key]}])", "remove one of them")
            continue
        if machine in seen:
            problems.add((*hloc, "docker"), f"the host {host.docker!r} is reached at "
                         f"{address!r}, as hosts[{seen[machine]}] is: on one machine their "
                         "containers would take the same ports",
                         "list each machine once (or give each its `address:`)")
            continue
        seen[key] = seen[machine] = i
        out.append({"docker": host.docker, "address": address})
    return out


def _machine(address: str) -> str:
    """One spelling of an address (``::0001`` is ``::1``, names in lower case), so that one
    machine written two ways is one machine. Names are not resolved: no DNS at load."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower().rstrip(".")


def _docker_url(problems: Problems, loc: Loc,
                url: str) -> tuple[tuple[Any, ...], str] | None:
    """(the host's identity, its default address) for a Docker daemon URL, or None after
    adding the problem."""
    from urllib.parse import urlsplit  # only when validating

    wrong: str | None = None
    try:
        parts: SplitResult | None = urlsplit(url)
        port = parts.port if parts else None
    except ValueError:  # urllib's words: a port outside 0..65535, a bad IPv6 address
        parts, port, wrong = None, None, "is not a URL with a valid host and port"
    scheme = parts.scheme.lower() if parts else ""
    if parts is None:
        pass
    elif any(c.isspace() or not c.isprintable() for c in url):
        wrong = "holds spaces or control characters"
    elif scheme not in ("unix", "tcp", "ssh"):
        wrong = "is not a Docker daemon URL (unix://, tcp:// or ssh://)"
    elif parts.query or parts.fragment:
        wrong = "has a query or fragment, which a Docker daemon URL does not"
    elif scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            wrong = "does not name an absolute socket path (unix:// then /path: three slashes)"
        else:
            return ("unix", posixpath.normpath(parts.path)), "127.0.0.1"
    elif parts.password is not None:
        wrong = "holds a password: keep credentials out of mlops.yaml (use an SSH key)"
    elif not parts.hostname or not _is_host(parts.hostname):
        wrong = "names no valid host"
    elif parts.path not in ("", "/"):
        wrong = "has a path, which a tcp:// or ssh:// Docker URL does not"
    elif port == 0 or (scheme == "tcp" and (parts.username is not None or port is None)):
        wrong = ("has port 0" if port == 0
                 else "needs the form tcp://HOST:PORT (a port, no user)")
    else:
        return ((scheme, parts.username or "", parts.hostname.lower(),
                 port or (22 if scheme == "ssh" else 0)), parts.hostname)
    problems.add(loc, f"{url!r} {wrong}", _DOCKER_HINT)
    return None


def _is_host(text: str) -> bool:
    import ipaddress  # only when validating: a load from the cache never needs it

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return bool(re.fullmatch(_HOSTNAME, text))
    return True


def _ip(problems: Problems, loc: Loc, text: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        problems.add(loc, f"{text!r} is not an IP address", _form(loc))


def _ports(problems: Problems, loc: Loc, port: int,
           backend_ports: Sequence[int] | None) -> list[int]:
    if backend_ports is None:
        if port + 2 > 65535:
            problems.add((*loc, "port"), f"port {port} leaves no room for the backends' "
                         "default ports (port+1 and port+2)",
                         "set `backend_ports:` or a lower `port:`")
        backend_ports = [port + 1, port + 2]
    ports = [port, *backend_ports]
    if len(set(ports)) != len(ports):
        problems.add((*loc, "backend_ports"),
                     f"the router's port and the two backend ports must all differ, got "
                     f"{port} and {list(backend_ports)}",
                     "pick three different ports, e.g. `port: 8080` and "
                     "`backend_ports: [8081, 8082]`")
    return list(backend_ports)


def _steps(problems: Problems, loc: Loc, steps: Sequence[int]) -> None:
    if any(b <= a for a, b in itertools.pairwise(steps)) or steps[-1] != 100:
        problems.add(loc, f"{list(steps)} is not a rollout (strictly increasing, ending at 100)",
                     _form(loc))


def _url(problems: Problems, loc: Loc, url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        ok = (parts.scheme in ("http", "https") and parts.hostname is not None
              and _is_host(parts.hostname) and parts.port != 0)
    except ValueError:  # a port outside 0..65535, a bad IPv6 address
        ok = False
    if not ok or any(c.isspace() or not c.isprintable() for c in url):
        problems.add(loc, f"{url!r} is not an http(s) URL", _form(loc))
    elif parts.username is not None or parts.password is not None:
        problems.add(loc, f"{url!r} holds credentials, which GitHub would show to everyone "
                     "who can read the repository", "remove the `user:password@` part")


def _check_shared_hosts(problems: Problems, name: str, env: Mapping[str, Any],
                        ports_by_host: dict[str, dict[int, str]]) -> None:
    """Environments on one host run side by side on its network: no port twice. A host is its
    address (see :func:`_hosts`)."""
    ports = [env["port"], *env["backend_ports"]]
    for host in env["hosts"]:
        taken = ports_by_host.setdefault(_machine(host["address"]), {})
        for port in ports:
            other = taken.get(port)
            if other is not None and other != name:
                problems.add(("deploy", "environments", name, "port"),
                             f"port {port} is also used by environment {other!r} on the "
                             f"host at {host['address']!r}",
                             "give environments that share a host different ports")
                return
        taken.update(dict.fromkeys(ports, name))


def section_lines(config_bytes: bytes, path: tuple[str, str]) -> dict[str, int]:
    """Key -> line of each key of the mapping at ``path`` (two keys deep, block style as the
    docs write it), composing only that top-level section so a large pipeline is not parsed
    twice; empty when it cannot be found that way."""
    import yaml

    from gha_mlops.config._yaml import safe_loader

    found = re.search(rb"^" + re.escape(path[0].encode()) + rb"[ \t]*:", config_bytes, re.M)
    if found is None:
        return {}
    following = re.compile(rb"^[^\s#]", re.M).search(config_bytes, found.end())
    section = config_bytes[found.start(): following.start() if following else None]
    offset = config_bytes.count(b"\n", 0, found.start())
    try:
        node = yaml.compose(section, Loader=safe_loader())
    except yaml.YAMLError:
        return {}
    for part in path:
        if not isinstance(node, yaml.MappingNode):
            return {}
        node = next((v for k, v in node.value if k.value == part), None)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): offset + k.start_mark.line + 1 for k, _ in node.value
            if isinstance(k, yaml.ScalarNode)}


def build_deploy(normalized: Mapping[str, Any] | None, config_path: Path) -> DeployConfig | None:
    """The typed ``deploy:`` from its normalized (cached) form."""
    if normalized is None:
        return None
    environments = {}
    for name, env in normalized["environments"].items():
        line = env.get("line")
        source = f"{display(config_path)}:{line}" if line else display(config_path)
        environments[name] = DeployEnvironment(
            name=name, stage=env["stage"],
            hosts=tuple(DeployHostConfig(h["docker"], h["address"]) for h in env["hosts"]),
            port=env["port"], backend_ports=(env["backend_ports"][0], env["backend_ports"][1]),
            listen=env["listen"], bind=env["bind"], workers=env["workers"],
            steps=tuple(env["steps"]), bake_s=env["bake_s"],
            ready_timeout_s=env["ready_timeout_s"], drain_s=env["drain_s"],
            gates=DeployGates(**env["gates"]), golden=env["golden"], url=env["url"],
            production=env["production"], source=source)
    return DeployConfig(model=normalized["model"] or None,
                        router_image=normalized["router_image"], environments=environments)
