"""The router's nginx.conf: which backends get what (a table), the state record's round
trip, and the record read as hostile input (one test per class of bad record). The conf
itself is checked by the real nginx in tests/integration/test_deploy_docker_hosts.py."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gha_mlops.deploy.errors import DeployTargetError
from gha_mlops.deploy.model import HISTORY_LIMIT, Release, Rollout, RouterState
from gha_mlops.deploy.router import (
    GENERATION_PATH,
    MAX_CONF_BYTES,
    MAX_RECORD_BYTES,
    STATE_MARK,
    parse_state,
    render,
    state_json,
    upstream_servers,
)

V1 = Release("tiny", "1.0.0", "reg:5000/tiny@sha256:" + "1" * 64, "sha256:" + "a" * 64)
V2 = Release("tiny", "2.0.0", "reg:5000/tiny@sha256:" + "2" * 64, "sha256:" + "b" * 64)
FULL = RouterState("staging", "a", V1, "b", V2, weight=10,
                   rollout=Rollout("ci:42", 1_700_000_000.5, 0), history=(V2, V1), generation=7)
WHERE = "tcp://h:2375: gha-mlops-staging-router:/etc/gha-mlops/nginx.conf"


def _conf(state: RouterState = FULL, **kw: object) -> str:
    args: dict[str, object] = {"listen": "0.0.0.0", "port": 8080, "backend_host": "127.0.0.1",
                               "backend_ports": (8081, 8082), **kw}
    return render(state, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("state", "servers"), [
    (RouterState("e"), []),
    (RouterState("e", "a", V1), [("a", "weight=100")]),
    (RouterState("e", "a", V1, "b", V2, weight=0), [("a", "weight=100")]),
    (RouterState("e", "a", V1, "b", V2, weight=10), [("a", "weight=90"), ("b", "weight=10")]),
    (RouterState("e", "b", V1, "a", V2, weight=50), [("b", "weight=50"), ("a", "weight=50")]),
    (RouterState("e", "a", V1, "b", V2, weight=99), [("a", "weight=1"), ("b", "weight=99")]),
    (RouterState("e", "a", V1, "b", V2, weight=100), [("b", "weight=100"), ("a", "backup")]),
    (RouterState("e", None, None, "b", V2, weight=10), [("b", "weight=100")]),
    (RouterState("e", None, None, "b", V2, weight=0), []),
])
def test_upstream_servers(state: RouterState, servers: list[tuple[str, str]]) -> None:
    assert upstream_servers(state) == servers


def test_render_sends_by_weight_retries_on_the_other_and_answers_its_generation() -> None:
    conf = _conf()
    assert "server 127.0.0.1:8081 weight=90 max_fails=0;" in conf
    assert "server 127.0.0.1:8082 weight=10 max_fails=0;" in conf
    assert ("proxy_next_upstream error timeout http_500 http_502 http_503 http_504 "
            "non_idempotent;") in conf
    assert "proxy_next_upstream_tries 2;" in conf
    assert "keepalive 32;" in conf and 'proxy_set_header Connection "";' in conf
    assert f"location = {GENERATION_PATH} {{" in conf and 'return 200 "7";' in conf
    assert "listen 0.0.0.0:8080;" in conf and "daemon off;" in conf
    assert "error_log stderr" in conf and "access_log off;" in conf
    canary_only = _conf(replace(FULL, weight=100))
    assert "server 127.0.0.1:8081 backup max_fails=0;" in canary_only
    ipv6 = _conf(listen="::", backend_host="::1")
    assert "listen [::]:8080;" in ipv6 and "server [::1]:8081" in ipv6


def test_render_of_an_empty_environment_answers_503_json() -> None:
    conf = _conf(RouterState("staging"))
    assert "upstream" not in conf and "proxy_pass" not in conf
    line = next(line for line in conf.splitlines() if "return 503" in line)
    body = line.split("'")[1]
    assert json.loads(body) == {"error": "no model is deployed in environment staging"}


def test_the_record_round_trips() -> None:
    assert parse_state(_conf(), where=WHERE) == FULL
    assert parse_state(_conf(RouterState("e")), where=WHERE) == RouterState("e")


def test_release_text_cannot_break_out_of_the_record_line() -> None:
    hostile = Release("m\nserver evil:1;", "1\r\n}", "img\u2028x", "id'\"")
    state = RouterState("e", "a", hostile, generation=1)
    conf = _conf(state)
    assert sum(line.startswith(STATE_MARK) for line in conf.splitlines()) == 1
    assert "evil" not in conf.replace(conf.splitlines()[2], "")  # only inside the record
    assert parse_state(conf, where=WHERE) == state


@pytest.mark.parametrize("kw", [{"listen": "0.0.0.0; include /etc/passwd"},
                                {"backend_host": "h 1"}, {"port": 0},
                                {"backend_ports": (8081, 70000)}])
def test_render_refuses_addresses_and_ports_nginx_cannot_take_safely(kw: object) -> None:
    with pytest.raises(DeployTargetError):
        _conf(**kw)  # type: ignore[arg-type]


def _with_record(record: object) -> str:
    text = record if isinstance(record, str) else json.dumps(record)
    return f"daemon off;\n{STATE_MARK}{text}\nevents {{}}\n"


GOOD = state_json(FULL)


@pytest.mark.parametrize(("conf", "words"), [
    # size: the file, the record line
    ("#" * (MAX_CONF_BYTES + 1), "larger than"),
    (_with_record('"' + "x" * MAX_RECORD_BYTES + '"'), "larger than"),
    # not exactly one record
    ("daemon off;\n", "0 state records"),
    (_with_record(GOOD) + STATE_MARK + json.dumps(GOOD) + "\n", "2 state records"),
    # not JSON, not an object, unknown keys
    (_with_record("{nope"), "not JSON"),
    (_with_record([1, 2]), "expected a JSON object"),
    (_with_record({**GOOD, "extra": 1}), "unknown keys"),
    # wrong types and ranges
    (_with_record({**GOOD, "weight": 101}), "weight"),
    (_with_record({**GOOD, "weight": True}), "weight"),
    (_with_record({**GOOD, "generation": -1}), "generation"),
    (_with_record({**GOOD, "stable_slot": "c"}), "stable_slot"),
    (_with_record({**GOOD, "stable": {**GOOD["stable"], "version": 1}}), "stable.version"),
    (_with_record({**GOOD, "canary": {"model": "x"}}), "canary"),
    (_with_record({**GOOD, "history": [GOOD["stable"]] * (HISTORY_LIMIT + 1)}), "history"),
    (_with_record({**GOOD, "rollout": {"owner": "x", "started": "now", "step": 0}}),
     "rollout.started"),
    # an environment name that is no safe name
    (_with_record({**GOOD, "env": "../../x"}), "env"),
    (_with_record({**GOOD, "env": "Staging Env"}), "env"),
    # inconsistent: a slot without its release, both in one slot
    (_with_record({**GOOD, "stable": None}), "stable_slot 'a' with release None"),
    (_with_record({**GOOD, "canary_slot": "a"}), "both in slot 'a'"),
])
def test_a_bad_record_is_a_deploy_target_error_naming_the_file(conf: str, words: str) -> None:
    with pytest.raises(DeployTargetError) as caught:
        parse_state(conf, where=WHERE)
    assert caught.value.message.startswith(WHERE) and words in caught.value.message
    assert caught.value.hint
