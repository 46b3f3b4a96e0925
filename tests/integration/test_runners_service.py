"""The service's wiring with fakes of its ports: a stop applies every webhook it accepted."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
from pathlib import Path

from gha_mlops.runners.config import load_config
from gha_mlops.runners.service import Service
from gha_mlops.runners.state import State
from gha_mlops.testing.fake_runners import FakeBackend, FakeRunnersGitHub

SECRET = "service-test-secret-0123456789"


def test_stopping_applies_every_accepted_webhook(tmp_path: Path) -> None:
    (tmp_path / "runners.yaml").write_text("""
github: {repo: octo/demo, token_env: TOKEN}
webhook: {secret_env: SECRET}
pools: [{name: gpu, labels: [gpu], image: img, max: 1000}]
""")
    config = load_config(tmp_path / "runners.yaml", {"TOKEN": "t", "SECRET": SECRET})
    service = Service.build(config, github=FakeRunnersGitHub(),
                            backends={"docker": FakeBackend()}, port=0).start()
    conn = http.client.HTTPConnection("127.0.0.1", service.server.port, timeout=5)
    for i in range(200):
        body = json.dumps({"action": "queued", "repository": {"full_name": "octo/demo"},
                           "workflow_job": {"id": 10_000 + i, "run_id": 1, "status": "queued",
                                            "labels": ["self-hosted", "gpu"]}}).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        conn.request("POST", "/webhook", body=body, headers={
            "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": f"d-{i}",
            "X-Hub-Signature-256": sig})
        resp = conn.getresponse()
        assert resp.status == 202
        resp.read()
    conn.close()
    service.stop()
    state = State(config.state_path)
    assert len([j for j in state.jobs() if j.status == "queued"]) == 200
    assert not state.first_delivery("d-199")  # the delivery ids were written too
    state.close()
