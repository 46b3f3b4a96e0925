"""The nginx configuration of an environment's router, and the state record it carries.

Pure: :func:`render` turns a :class:`~gha_mlops.deploy.model.RouterState` into a standalone
nginx.conf (``daemon off``, pid and temp files under /tmp, errors to stderr, no access log),
so any nginx >= 1.22 runs it with ``nginx -c /etc/gha-mlops/nginx.conf``. The state is one
comment line of the file (:data:`STATE_MARK` + JSON), which :func:`parse_state` reads back:
what serves where is read from the hosts, not from a local file. The router answers the
record's generation on :data:`GENERATION_PATH`, so a writer knows when a reload is live.

Routing (:func:`upstream_servers`): no canary, or weight 0, sends everything to the stable
slot; weight 100 sends everything to the canary, with the stable slot as ``backup``; any other
weight splits ``100 - weight`` / ``weight``. A request that cannot connect, times out or gets
a 5xx answer (500, 502, 503, 504) from one backend is retried once on the other: a new
version that fails requests fails no user's request the old one can answer, while its own
metrics still count the failure for the gates. No backend is ever marked down for the whole
configuration (``max_fails=0``): the rollout's own gates decide about a version.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any

from gha_mlops.deploy.errors import DeployTargetError
from gha_mlops.deploy.model import HISTORY_LIMIT, SLOTS, Release, Rollout, RouterState, Slot
from gha_mlops.errors import quoted

GENERATION_PATH = "/_gha-mlops/generation"
STATE_MARK = "# gha-mlops-state: "
# Environment names (config/_deploy.py checks the same): they name containers and upstreams.
ENV_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
MAX_CONF_BYTES = 1024 * 1024  # a router's nginx.conf that parse_state reads at all
MAX_RECORD_BYTES = 256 * 1024  # the record line (ten history entries fit many times over)
MAX_FIELD_CHARS = 1024  # one string of a release or of the rollout mark
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")
_RELEASE_KEYS = ("model", "version", "image", "image_id")
_STATE_KEYS = frozenset(("env", "stable_slot", "stable", "canary_slot", "canary", "weight",
                         "rollout", "history", "generation"))
_HELP = "gha-mlops deploy writes this file; redeploy, or remove the router container"


def slot_port(slot: Slot, backend_ports: tuple[int, int]) -> int:
    """The port of ``slot``'s backend: the first of ``backend_ports`` for ``a``."""
    return backend_ports[SLOTS.index(slot)]


def upstream_servers(state: RouterState) -> list[tuple[Slot, str]]:
    """The backends the router sends to, with nginx's server parameter for each
    (``weight=90`` or ``backup``); empty when nothing is deployed (see the module docstring)."""
    stable = state.stable_slot if state.stable is not None else None
    canary = state.canary_slot if state.canary is not None and state.weight > 0 else None
    if canary is None:
        return [] if stable is None else [(stable, "weight=100")]
    if stable is None:
        return [(canary, "weight=100")]
    if state.weight >= 100:
        return [(canary, "weight=100"), (stable, "backup")]
    return [(stable, f"weight={100 - state.weight}"), (canary, f"weight={state.weight}")]


def state_json(state: RouterState) -> dict[str, Any]:
    """The record as JSON (what :func:`parse_state` reads back)."""
    rollout = state.rollout
    return {
        "env": state.env, "stable_slot": state.stable_slot,
        "stable": state.stable.to_json() if state.stable else None,
        "canary_slot": state.canary_slot,
        "canary": state.canary.to_json() if state.canary else None,
        "weight": state.weight,
        "rollout": None if rollout is None else {"owner": rollout.owner,
                                                 "started": rollout.started,
                                                 "step": rollout.step},
        "history": [release.to_json() for release in state.history],
        "generation": state.generation,
    }


def render(state: RouterState, *, listen: str, port: int, backend_host: str,
           backend_ports: tuple[int, int], max_body_bytes: int = 16 * 1024 * 1024) -> str:
    """nginx.conf of the router of ``state.env``: listening on ``listen:port``, sending to
    the backends at ``backend_host:backend_ports[slot]``, carrying ``state`` as its record.
    A DeployTargetError when an address, port or the environment's name is not one nginx
    can be given safely (they come from mlops.yaml, validated there already)."""
    _check_state(state, where="the router state to write")
    _check_address(listen, "the router's listen address")
    _check_address(backend_host, "the backends' address")
    for value, what in ((port, "the router's port"), (backend_ports[0], "backend port a"),
                        (backend_ports[1], "backend port b")):
        if not 1 <= value <= 65535:
            raise DeployTargetError(f"{what} {value} is not a TCP port (1..65535)")
    servers = upstream_servers(state)
    upstream = f"gha_mlops_{state.env.replace('-', '_')}"
    record = json.dumps(state_json(state), sort_keys=True, separators=(",", ":"))
    lines = [
        f"# The router of the gha-mlops environment {state.env}. Written by gha-mlops deploy:",
        "# do not edit (the next deploy rewrites it, and the line below is its state).",
        STATE_MARK + record,
        "daemon off;",
        "worker_processes auto;",
        f"pid /tmp/gha-mlops-router-{state.env}.pid;",
        "error_log stderr warn;",
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        "    server_tokens off;",
        *(f"    {kind}_temp_path /tmp/gha-mlops-nginx-{kind};"
          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
    ]
    if servers:
        lines += [f"    upstream {upstream} {{",
                  *(f"        server {_host(backend_host)}:{slot_port(slot, backend_ports)} "
                    f"{param} max_fails=0;" for slot, param in servers),
                  "        keepalive 32;",
                  "    }"]
    lines += [
        "    server {",
        f"        listen {_host(listen)}:{port};",
        f"        client_max_body_size {int(max_body_bytes)};",
        f"        location = {GENERATION_PATH} {{",
        "            default_type text/plain;",
        f'            return 200 "{state.generation}";',
        "        }",
        "        location / {",
        *(_proxy(upstream) if servers else _no_model(state.env)),
        "        }",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _proxy(upstream: str) -> list[str]:
    return [
        f"            proxy_pass http://{upstream};",
        # HTTP/1.1 and no Connection header: keep-alive connections to the backends.
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";',
        "            proxy_set_header Host $host;",
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        # Inference is a POST: retrying it on the other backend is safe (no side effects),
        # and it is what keeps a request from failing while one version goes away or fails.
        "            proxy_next_upstream error timeout http_500 http_502 http_503 http_504"
        " non_idempotent;",
        "            proxy_next_upstream_tries 2;",
        "            proxy_connect_timeout 2s;",
        "            proxy_read_timeout 60s;",
        "            proxy_send_timeout 60s;",
    ]


def _no_model(env: str) -> list[str]:
    body = json.dumps({"error": f"no model is deployed in environment {env}"})
    return ["            default_type application/json;",
            f"            return 503 '{body}';"]


def _host(address: str) -> str:
    """An address as nginx's ``listen``/``server`` take it (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def _check_address(address: str, what: str) -> None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not _HOST.fullmatch(address):
            raise DeployTargetError(f"{what} {quoted(address)} is neither an IP address nor "
                                    "a host name") from None


# -- reading the record back ---------------------------------------------------------------------


def parse_state(conf: str, *, where: str) -> RouterState:
    """The record in a router's nginx.conf (``where`` names the file for messages). The file
    is the host's, so it is read as hostile: bounded in size, one record line, every field
    typed and in range; anything else is a DeployTargetError naming ``where``."""
    if len(conf) > MAX_CONF_BYTES:
        raise DeployTargetError(f"{where}: the router's configuration is larger than "
                                f"{MAX_CONF_BYTES} bytes", hint=_HELP)
    records = [line[len(STATE_MARK):] for line in conf.splitlines()
               if line.startswith(STATE_MARK)]
    if len(records) != 1:
        raise DeployTargetError(
            f"{where}: the router's configuration has {len(records)} state records "
            f"({STATE_MARK.strip()!r} lines), not one", hint=_HELP)
    if len(records[0]) > MAX_RECORD_BYTES:
        raise DeployTargetError(f"{where}: the router's state record is larger than "
                                f"{MAX_RECORD_BYTES} bytes", hint=_HELP)
    try:
        doc = json.loads(records[0])
    except ValueError as err:
        raise DeployTargetError(f"{where}: the router's state record is not JSON: {err}",
                                hint=_HELP) from None
    state = _state(doc, where)
    _check_state(state, where=where)
    return state


def _bad(where: str, key: str, expected: str, value: object) -> DeployTargetError:
    return DeployTargetError(f"{where}: the router's state record has {key} = "
                             f"{quoted(value)}, expected {expected}", hint=_HELP)


def _state(doc: object, where: str) -> RouterState:
    if not isinstance(doc, dict):
        raise _bad(where, "the record", "a JSON object", doc)
    unknown = sorted(set(doc) - _STATE_KEYS)
    if unknown:
        raise DeployTargetError(f"{where}: the router's state record has unknown keys "
                                f"{quoted(unknown)}",
                                hint="a newer gha-mlops wrote it? deploy with that version")
    env = doc.get("env")
    if not isinstance(env, str) or not ENV_NAME.fullmatch(env):
        raise _bad(where, "env", "an environment name", env)
    history = doc.get("history", [])
    if not isinstance(history, list) or len(history) > HISTORY_LIMIT:
        raise _bad(where, "history", f"a list of at most {HISTORY_LIMIT} releases", history)
    return RouterState(
        env=env,
        stable_slot=_slot(doc.get("stable_slot"), where, "stable_slot"),
        stable=_release(doc.get("stable"), where, "stable"),
        canary_slot=_slot(doc.get("canary_slot"), where, "canary_slot"),
        canary=_release(doc.get("canary"), where, "canary"),
        weight=_int(doc.get("weight", 0), where, "weight", 0, 100),
        rollout=_rollout(doc.get("rollout"), where),
        history=tuple(_required(_release(item, where, f"history[{i}]"), where, f"history[{i}]")
                      for i, item in enumerate(history)),
        generation=_int(doc.get("generation", 0), where, "generation", 0, 2**53))


def _required(release: Release | None, where: str, key: str) -> Release:
    if release is None:
        raise _bad(where, key, "a release", None)
    return release


def _slot(value: object, where: str, key: str) -> Slot | None:
    if value is None:
        return None
    for slot in SLOTS:
        if value == slot:
            return slot
    raise _bad(where, key, "'a', 'b' or null", value)


def _text(value: object, where: str, key: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
        raise _bad(where, key, f"a string of 1..{MAX_FIELD_CHARS} characters", value)
    return value


def _int(value: object, where: str, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(where, key, f"an integer in {low}..{high}", value)
    return value


def _release(value: object, where: str, key: str) -> Release | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(_RELEASE_KEYS):
        raise _bad(where, key, f"an object with exactly {', '.join(_RELEASE_KEYS)}", value)
    model, version, image, image_id = (_text(value[name], where, f"{key}.{name}")
                                       for name in _RELEASE_KEYS)
    return Release(model=model, version=version, image=image, image_id=image_id)


def _rollout(value: object, where: str) -> Rollout | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"owner", "started", "step"}:
        raise _bad(where, "rollout", "null or an object with owner, started, step", value)
    started = value["started"]
    if (isinstance(started, bool) or not isinstance(started, (int, float))
            or not math.isfinite(started) or started < 0):
        raise _bad(where, "rollout.started", "unix seconds", started)
    return Rollout(owner=_text(value["owner"], where, "rollout.owner"), started=float(started),
                   step=_int(value["step"], where, "rollout.step", -1, 100))


def _check_state(state: RouterState, *, where: str) -> None:
    """The invariants of a record: a safe env name, a release exactly where a slot is named,
    two different slots, a weight in 0..100."""
    if not ENV_NAME.fullmatch(state.env):
        raise _bad(where, "env", "an environment name", state.env)
    for name, slot, release in (("stable", state.stable_slot, state.stable),
                                ("canary", state.canary_slot, state.canary)):
        if (slot is None) != (release is None):
            raise DeployTargetError(f"{where}: the router's state record names "
                                    f"{name}_slot {slot!r} with release "
                                    f"{release.label() if release else None!r}", hint=_HELP)
    if state.stable_slot is not None and state.stable_slot == state.canary_slot:
        raise DeployTargetError(f"{where}: the router's state record puts stable and canary "
                                f"both in slot {state.stable_slot!r}", hint=_HELP)
    if not 0 <= state.weight <= 100:
        raise _bad(where, "weight", "an integer in 0..100", state.weight)
