"""runners.yaml for EC2 pools (`backends.ec2`, `pools[].ec2`) and for one docker pool over
several hosts (`backends.docker.hosts`): a good file loads with its defaults applied; each
mistake is named by its key with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from gha_mlops.runners.config import load_config
from tests.unit.test_runners_config import ENV, error, write

CLOUD = """\
id: box-1
github: {repo: octo/ml, token_env: GH_TOKEN}
webhook: {secret_env: HOOK_SECRET}
backends:
  docker:
    placement: pack
    hosts:
      - {name: box-a, host: "unix:///run/a.sock", gpus: [0, 1]}
      - {name: box-b, host: "ssh://ml@box-b", gpus: [0, 1, 2, 3], env: {X: "1"}}
  ec2:
    region: eu-west-1
    subnets: [subnet-0a1b2c3d, subnet-1a2b3c4d]
    security_groups: [sg-0a1b2c3d]
    instance_profile: gha-mlops-runner
    interruption_queue: gha-mlops-spot
    tags: {team: ml}
pools:
  - {name: local, labels: [gpu], max: 6, gpus: 2, image: ghcr.io/octo/runner:2.330.0}
  - name: cloud
    backend: ec2
    labels: [gpu, cloud]
    max: 8
    gpus: 1
    max_lifetime: 3h
    ec2:
      instance_types: [g5.xlarge, g6.xlarge, g4dn.xlarge]
      ami: "resolve:ssm:/gha-mlops/runner-ami"
      root_volume: 100GiB
      capacity: spot
"""
CLOUD_ENV = {**ENV, "GH_TOKEN": "t" * 20}


def test_a_cloud_file_loads_with_its_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, CLOUD), CLOUD_ENV)
    assert [h.name for h in cfg.docker_hosts] == ["box-a", "box-b"]
    assert cfg.docker_hosts[1].gpus == ("0", "1", "2", "3") and cfg.docker_hosts[1].env == {
        "X": "1"}
    assert cfg.placement == "pack" and cfg.gpu_inventory == 6
    assert (cfg.host_down_after, cfg.host_list_timeout) == (60.0, 15.0)
    assert cfg.ec2 is not None and cfg.ec2.region == "eu-west-1"
    assert cfg.ec2.interruption_queue == "gha-mlops-spot" and cfg.ec2.tags == {"team": "ml"}
    assert cfg.ec2.parameter_prefix == "/gha-mlops"
    local, cloud = cfg.pools
    assert local.ec2 is None and local.register_timeout == 180.0
    assert cloud.backend == "ec2" and cloud.image == "" and cloud.register_timeout == 600.0
    e = cloud.ec2
    assert e is not None
    assert e.instance_types == ("g5.xlarge", "g6.xlarge", "g4dn.xlarge")
    assert e.subnets == ("subnet-0a1b2c3d", "subnet-1a2b3c4d")  # backends.ec2's defaults
    assert e.security_groups == ("sg-0a1b2c3d",) and e.instance_profile == "gha-mlops-runner"
    assert (e.capacity, e.spot_allocation) == ("spot", "price-capacity-optimized")
    assert e.root_volume_gb == 100 and e.expiry_grace == 3600.0
    assert e.launch_template is None and e.launch_template_version == "$Default"
    assert e.rerun_on_demand is False


def test_the_single_host_form_is_one_host_named_default(tmp_path: Path) -> None:
    text = CLOUD.replace("""    placement: pack
    hosts:
      - {name: box-a, host: "unix:///run/a.sock", gpus: [0, 1]}
      - {name: box-b, host: "ssh://ml@box-b", gpus: [0, 1, 2, 3], env: {X: "1"}}
""", "    gpus: [0, 1]\n")
    cfg = load_config(write(tmp_path, text), CLOUD_ENV)
    assert [(h.name, h.host, h.gpus) for h in cfg.docker_hosts] == [("default", None,
                                                                     ("0", "1"))]


@pytest.mark.parametrize(("edit", "message"), [
    (("region: eu-west-1", "region: europe"), "backends.ec2.region: 'europe' is not an AWS "
     "region"),
    (("g6.xlarge,", "G6,"), "pools[1].ec2.instance_types[1]: 'G6' is not an instance type"),
    (("g4dn.xlarge]", "g5.xlarge]"), "pools[1].ec2.instance_types: an instance type is listed "
     "twice"),
    (('ami: "resolve:ssm:/gha-mlops/runner-ami"', "ami: ubuntu"), "pools[1].ec2.ami: 'ubuntu' "
     "is not an AMI id or an SSM parameter"),
    (('      ami: "resolve:ssm:/gha-mlops/runner-ami"\n', ""), "pools[1].ec2: name the image"),
    (("subnet-1a2b3c4d]", "subnet-xyz]"), "backends.ec2.subnets[1]: 'subnet-xyz' is not a "
     "subnet id"),
    (("capacity: spot", "capacity: cheap"), "pools[1].ec2.capacity: expected"),
    (("capacity: spot", "capacity: spot\n      rerun_on_demand: true"),
     "pools[1].ec2.rerun_on_demand: `capacity: spot` launches nothing on-demand"),
    (("root_volume: 100GiB", "root_volume: 1GiB"), "pools[1].ec2.root_volume: must be between "
     "8GiB and 16TiB"),
    (("    gpus: 1\n", "    gpus: 1\n    cpus: 4\n"), "pools[1].cpus: `cpus` is for docker "
     "pools"),
    (("  - {name: local, labels: [gpu], max: 6, gpus: 2, image: ghcr.io/octo/runner:2.330.0}",
      "  - {name: local, labels: [gpu], max: 6, gpus: 2}"), "pools[0]: a docker pool needs "
     "`image:`"),
    (("gpus: 2, image", "gpus: 5, image"), "pools[0].gpus: each runner wants 5 GPU(s) "
     "but no host of the docker backend lists that many (at most 4)"),
    (("name: box-b", "name: box-a"), "backends.docker.hosts[1].name: host 'box-a' is listed "
     "twice"),
    (("    placement: pack\n", "    placement: pack\n    gpus: [0]\n"), "backends.docker: give "
     "either `host`/`gpus` (one host) or `hosts:`"),
    (("    tags: {team: ml}", "    tags: {aws:team: ml}"), "backends.ec2.tags.aws:team"),
    (("    placement: pack\n", "    placement: pack\n    down_after: soon\n"),
     "backends.docker.down_after: expected a duration"),
    (("    tags: {team: ml}", "    tags: {ml/team: x}"), "backends.ec2.tags.ml/team: 'ml/team': "
     "'x' is not a tag"),
    # A `$`-anchored pattern lets a trailing newline through; every one is matched whole.
    (("    tags: {team: ml}", '    tags: {"team\\n": ml}'), "backends.ec2.tags.team\n"),
    (("subnets: [subnet-0a1b2c3d,", 'subnets: ["subnet-0a1b2c3d\\n",'),
     "backends.ec2.subnets[0]"),
    (("      capacity: spot\n", '      capacity: spot\n      launch_template_version: "7\\n"\n'),
     "pools[1].ec2.launch_template_version"),
    (("  - {name: local, labels: [gpu], max: 6, gpus: 2, image: ghcr.io/octo/runner:2.330.0}",
      "  - {name: local, labels: [gpu], max: 6, image: r, ec2: {instance_types: [g5.xlarge]}}"),
     "pools[0].ec2: `ec2:` is for pools with `backend: ec2`"),
])
def test_cloud_mistakes_are_named(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    assert edit[0] in CLOUD
    err = error(tmp_path, CLOUD.replace(edit[0], edit[1]), CLOUD_ENV)
    assert message in str(err), str(err)


def test_an_ec2_pool_needs_the_ec2_backend_and_its_keys(tmp_path: Path) -> None:
    no_backend = CLOUD.split("  ec2:\n    region")[0] + "pools:" + CLOUD.split("pools:")[1]
    assert "pools[1].backend: the pool uses the ec2 backend, but `backends.ec2` is not " \
        "configured" in str(error(tmp_path, no_backend, CLOUD_ENV))
    bare = CLOUD.split("    ec2:\n      instance_types")[0]
    assert "pools[1]: an ec2 pool needs `ec2:`" in str(error(tmp_path, bare, CLOUD_ENV))
