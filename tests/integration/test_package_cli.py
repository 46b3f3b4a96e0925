"""`gha-mlops package` end to end: a run writes a model, `gha-mlops model register` tags it,
`gha-mlops package --push` exports it, builds the image on a private dockerd, pushes it to a
real registry (Debian's docker-registry) and records the digest on the version, where `model
show` finds it; the digest is the one the registry serves. A scikit-learn model goes through
the export and its check on the run's check data. Bad input exits non-zero with one clear
message and records nothing."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from gha_mlops.packaging.image import wait_ready
from tests.conftest import Workspace, git
from tests.integration.package_helpers import free_port, tiny_onnx

if TYPE_CHECKING:
    from tests.integration.docker_fixtures import Dockerd
    from tests.integration.registry_fixtures import OciRegistry

pytest_plugins = ["tests.integration.docker_fixtures", "tests.integration.registry_fixtures",
                  "tests.integration.serving_fixtures"]

CONFIG = f"""\
stages:
  train:
    cmd: {sys.executable} train.py
    deps: [train.py, data]
    outs: [models, checks]
registry:
  models:
    tiny:
      path: models/tiny.onnx
    skl:
      path: models/skl.pkl
      check_data: checks/x.npy
      tolerance: {{atol: 1.0e-4, rtol: 1.0e-3}}
    pickled:
      path: models/skl.pkl
      check_data: checks/pickled.npy
"""
TRAIN = """\
import pickle, shutil
from pathlib import Path
import numpy as np
from sklearn.linear_model import LogisticRegression
Path("models").mkdir(exist_ok=True)
Path("checks").mkdir(exist_ok=True)
shutil.copyfile("data/tiny.onnx", "models/tiny.onnx")
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 3)).astype(np.float32)
y = (x @ np.array([1.0, -2.0, 0.5], dtype=np.float32) > 0).astype(np.int64)
model = LogisticRegression().fit(x, y)
Path("models/skl.pkl").write_bytes(pickle.dumps(model))
np.save("checks/x.npy", x)
np.save("checks/pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
"""


@pytest.fixture
def pkg_ws(tmp_path: Path) -> Workspace:
    """A committed workspace with two registered models (ONNX and scikit-learn)."""
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.write("mlops.yaml", CONFIG)
    ws.write("train.py", textwrap.dedent(TRAIN))
    (ws.root / "data").mkdir()
    tiny_onnx(ws.root / "data" / "tiny.onnx")
    ws.write(".gitignore", "models/\nchecks/\n")
    git(ws.root, "init", "-q")
    git(ws.root, "add", "-A")
    git(ws.root, "commit", "-q", "-m", "initial")
    result = ws.run()
    assert result.record["status"] == "succeeded", result.record
    for name in ("tiny", "skl", "pickled"):
        _ok(ws.cli("model", "register", name, env=_ident()))
    return ws


def _ident() -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _package(ws: Workspace, dockerd: Dockerd, base: str, cache: Path,
             *args: str) -> subprocess.CompletedProcess[str]:
    return ws.cli("package", *args, "--base", base, "--wheel-cache", str(cache),
                  env={"DOCKER_HOST": dockerd.base_url, **_ident()}, timeout=600)


def _images(ws: Workspace, ref: str) -> list[dict[str, str]]:
    shown = json.loads(_ok(ws.cli("model", "show", ref, "--json")).stdout)
    return list(shown["lineage"]["images"])


def test_package_push_records_the_digest_the_registry_serves(
        pkg_ws: Workspace, dockerd: Dockerd, serving_base: str, wheel_cache: Path,
        oci_registry: OciRegistry) -> None:
    ws = pkg_ws
    out = _ok(_package(ws, dockerd, serving_base, wheel_cache, "tiny@1.0.0",
                       "--tag", f"{oci_registry.host}/models/", "--push")).stdout
    image = f"{oci_registry.host}/models/tiny:1.0.0"
    digest = oci_registry.manifest_digest("models/tiny", "1.0.0")
    assert f"built {image}" in out and f"{oci_registry.host}/models/tiny@{digest}" in out
    assert f"docker run --rm -p 8080:8080 {image}" in out
    assert "/v2/models/tiny/infer" in out
    assert _images(ws, "tiny@1.0.0") == [{"image": image, "digest": digest}]
    labels = dockerd.client().api.inspect_image(image)["Config"]["Labels"]
    shown = json.loads(_ok(ws.cli("model", "show", "tiny@1.0.0", "--json")).stdout)
    assert labels["io.gha-mlops.model.sha256"] == shown["lineage"]["model"]["sha256"]
    assert labels["io.gha-mlops.model.run-id"] == shown["lineage"]["run_id"]
    assert labels["org.opencontainers.image.revision"] == shown["lineage"]["commit"]


def test_a_scikit_learn_model_is_exported_checked_and_served(
        pkg_ws: Workspace, dockerd: Dockerd, serving_base: str, wheel_cache: Path) -> None:
    import tritonclient.http as httpclient

    ws = pkg_ws
    model = pickle.loads((ws.root / "models" / "skl.pkl").read_bytes())  # ours, for the check
    (ws.root / "models" / "skl.pkl").unlink()  # the content cache's copy is packaged
    out = _ok(_package(ws, dockerd, serving_base, wheel_cache, "skl")).stdout
    assert "built gha-mlops/skl:1.0.0" in out
    assert _images(ws, "skl@1.0.0") == []  # not pushed: nothing to pull by digest, nothing recorded
    port = free_port()
    container = dockerd.client().containers.run(
        "gha-mlops/skl:1.0.0", detach=True, network_mode="host", environment={"PORT": port})
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout=60)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        meta = client.get_model_metadata("skl")
        x = np.random.default_rng(3).standard_normal((8, 3)).astype(np.float32)
        request = httpclient.InferInput(meta["inputs"][0]["name"], [8, 3], "FP32")
        request.set_data_from_numpy(x, binary_data=False)
        names = [o["name"] for o in meta["outputs"]]
        result = client.infer("skl", [request], outputs=[
            httpclient.InferRequestedOutput(n, binary_data=False) for n in names])
        client.close()
        np.testing.assert_array_equal(result.as_numpy(names[0]).ravel(), model.predict(x))
        np.testing.assert_allclose(result.as_numpy(names[1]), model.predict_proba(x),
                                   atol=1e-5)
        in_image = _file_of(container, "/model/profile.json")
    finally:
        container.remove(force=True)
    # The reference profile of the check data went into the image and is named in the
    # lineage; monitoring finds the same bytes in the workspace's cache.
    profile = json.loads(_ok(ws.cli("model", "show", "skl@1.0.0", "--json")).stdout)[
        "lineage"]["profile"]
    assert profile == {"sha256": hashlib.sha256(in_image).hexdigest(), "rows": 64}
    from gha_mlops.monitor.profile import load_profile
    from gha_mlops.monitor.reference import load_reference
    from gha_mlops.registry import open_registry

    ref = load_reference(ws.root, open_registry(ws.root).resolve("skl"))
    assert ref == load_profile(in_image, where="image")
    assert [f.name for f in ref.features] == [f"{meta['inputs'][0]['name']}[{i}]"
                                              for i in range(3)]
    assert [f.name for f in ref.predictions] == names[:1] + [f"{names[1]}[{i}]"
                                                             for i in range(2)]
    assert ref.predictions[0].kind == "categorical"


def _file_of(container: Any, path: str) -> bytes:
    """One file of a container, through the Docker API's archive."""
    stream, _stat = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile(tar.getmembers()[0])
        assert member is not None
        return member.read()


def test_bad_input_is_one_clear_message_and_records_nothing(
        pkg_ws: Workspace, dockerd: Dockerd, serving_base: str, wheel_cache: Path,
        tmp_path: Path) -> None:
    ws = pkg_ws
    nowhere = f"127.0.0.1:{free_port()}"
    cases = [
        (("tiny", "--tag", f"{nowhere}/", "--push"), f"pushing {nowhere}/tiny:1.0.0 failed"),
        (("nosuch",), "no model 'nosuch' in the registry"),
        (("tiny", "--tag", "Not A/Reference"), "is not an image reference Docker accepts"),
        (("pickled",), "check_data 'checks/pickled.npy' is not a .npy array: Object arrays"),
    ]
    for args, message in cases:
        proc = _package(ws, dockerd, serving_base, wheel_cache, *args)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = ws.cli("package", "tiny", "--wheel-cache", str(wheel_cache),
                  env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert proc.returncode != 0 and "Docker is not reachable at unix://" in proc.stderr
    assert "start it or set DOCKER_HOST" in proc.stderr and "Traceback" not in proc.stderr
    proc = _package(ws, dockerd, "no/such-base:1", wheel_cache, "tiny")
    assert proc.returncode != 0 and "'no/such-base:1' is not on the Docker daemon" in proc.stderr
    assert _images(ws, "tiny@1.0.0") == []
