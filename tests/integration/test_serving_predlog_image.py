"""The packaged serving image keeps the prediction log: one container logs to a bind-mounted
directory (flags, the image's non-root uid writing), one to a real moto S3 server
(environment variables only, as a deploy sets them); both stopped by `docker stop`
(SIGTERM), which flushes; the rows read back with read_window match the requests sent."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import numpy as np
import pytest

from gha_mlops.monitor import predlog
from gha_mlops.packaging.image import wait_ready
from tests.integration.package_helpers import free_port
from tests.integration.test_remotes import aws_env, bucket, moto_endpoint  # noqa: F401

if TYPE_CHECKING:
    from tests.integration.deploy_fixtures import OipImage
    from tests.integration.docker_fixtures import Dockerd

pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.serving_fixtures",
                  "tests.integration.deploy_fixtures"]

X = np.random.default_rng(11).standard_normal((7, 4)).astype(np.float32)


@contextmanager
def _container(dockerd: Dockerd, image: str, args: list[str], env: dict[str, str],
               volumes: dict[str, dict[str, str]] | None = None) -> Iterator[str]:
    port = free_port()
    container = dockerd.client().containers.run(
        image, args, detach=True, network_mode="host", environment={"PORT": str(port), **env},
        volumes=volumes or {})
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout=60)
        yield f"127.0.0.1:{port}"
        container.stop(timeout=30)  # SIGTERM: the server flushes its log and exits 0
        assert container.wait(timeout=30)["StatusCode"] == 0, container.logs().decode()
    finally:
        container.remove(force=True)


def _post(address: str, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, json.dumps(doc), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        body: dict[str, Any] = json.loads(answer.read())
        assert answer.status == 200, body
        return body
    finally:
        conn.close()


def _traffic(address: str, model: str) -> list[str]:
    """Requests of 1, 2 and 4 instances, and feedback for two of them; the ids logged."""
    ids: list[str] = []
    for rows, rid in ((slice(0, 1), "one"), (slice(1, 3), None), (slice(3, 7), "four")):
        x = X[rows]
        answer = _post(address, f"/v2/models/{model}/infer", {
            **({"id": rid} if rid else {}),
            "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]})
        n = x.shape[0]
        ids += [answer["id"]] if n == 1 else [f"{answer['id']}:{i}" for i in range(n)]
    assert _post(address, f"/v2/models/{model}/feedback", {"feedback": [
        {"id": "one", "label": 0}, {"id": "four:3", "label": 2}]}) == {"accepted": 2}
    return ids


def _check(root: Path, model: str, ids: list[str]) -> None:
    window = predlog.read_window(root, model, start=0, end=time.time() + 60)
    assert window.ids == tuple(ids) and window.skipped == {}
    np.testing.assert_array_equal(window.inputs["input"], X)
    assert window.outputs["output"].shape == (7, 3)
    labels = predlog.read_feedback(root, model, start=0, end=time.time() + 60)
    assert dict(labels) == {"one": 0, "four:3": 2}


def test_the_image_logs_to_a_mounted_directory(dockerd: Dockerd, oip_image: OipImage,
                                               tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    log.chmod(0o777)  # the image runs as uid 65532
    with _container(dockerd, oip_image.image, ["--log", "/log", "--log-sample", "1"], {},
                    {str(log): {"bind": "/log", "mode": "rw"}}) as address:
        ids = _traffic(address, oip_image.model)
    _check(log, oip_image.model, ids)


@pytest.mark.usefixtures("aws_env")
def test_the_image_logs_to_s3_set_by_environment_variables(
        dockerd: Dockerd, oip_image: OipImage, tmp_path: Path, moto_endpoint: str,  # noqa: F811
        bucket: str) -> None:  # noqa: F811
    env = {"PREDLOG": f"s3://{bucket}/predictions", "PREDLOG_SAMPLE": "1",
           "AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    with _container(dockerd, oip_image.image, [], env) as address:
        ids = _traffic(address, oip_image.model)
    client = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    try:
        for item in client.list_objects_v2(Bucket=bucket)["Contents"]:
            target = tmp_path / "down" / item["Key"].removeprefix("predictions/")
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(target))
    finally:
        client.close()
    _check(tmp_path / "down", oip_image.model, ids)
