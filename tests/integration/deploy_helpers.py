"""What the rollout tests and the deploy benchmark share: a committed workspace with a model
registered at two versions and packaged (pushed to a real registry), faulty images derived
from the second version (never ready, wrong answers, 5xx answers, slow answers), and the
``deploy:`` section for an environment on the test dockerd.

Not a pytest plugin: test modules import these functions and make their own fixtures."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.conftest import Workspace, git
from tests.integration.package_helpers import free_port

if TYPE_CHECKING:
    from tests.integration.docker_fixtures import Dockerd

MODEL = "tiny"
IDENT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
         "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}

TRAIN = """\
import numpy as np, onnx, yaml
from pathlib import Path
from onnx import TensorProto, helper, numpy_helper
seed = yaml.safe_load(open("params.yaml"))["seed"]
rng = np.random.default_rng(seed)
w = rng.standard_normal((4, 3)).astype(np.float32)
b = rng.standard_normal(3).astype(np.float32)
graph = helper.make_graph(
    [helper.make_node("MatMul", ["input", "W"], ["xw"]),
     helper.make_node("Add", ["xw", "b"], ["output"])], "tiny",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
    [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
    initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 9
Path("models").mkdir(exist_ok=True)
Path("models/tiny.onnx").write_bytes(model.SerializeToString())
np.save("models/x.npy", np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32))
"""

# Wraps the image's server: after the first 20 inferences (the golden requests pass), every
# other one fails (FAULT=errors) or each takes 80 ms (FAULT=slow).
FAULTY = """\
import os, sys, time
sys.path.insert(0, "/app")
import oip_server
MODE = os.environ.get("FAULT", "")
original = oip_server.run_model
count = 0
def run_model(model, names, feeds):
    global count
    count += 1
    if count > 20 and MODE == "errors" and count % 2:
        raise RuntimeError("injected fault")
    if count > 20 and MODE == "slow":
        time.sleep(0.08)
    return original(model, names, feeds)
oip_server.run_model = run_model
sys.exit(oip_server.main(sys.argv[1:]))
"""
START = ('exec python3 /app/faulty.py --model-dir /model --host 0.0.0.0 '
         '--port "${PORT:-8080}" "$@"')


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def make_workspace(root: Path, dockerd: Dockerd, base: str, wheels: Path,
                   registry_host: str) -> Workspace:
    """Two versions of ``tiny`` (1.0.0, 1.1.0: different weights), each packaged and pushed
    to ``registry_host``, their digests recorded."""
    ws = Workspace(root)
    root.mkdir(parents=True)
    ws.write("mlops.yaml", textwrap.dedent(f"""\
        stages:
          train:
            cmd: {sys.executable} train.py
            deps: [train.py]
            params: [seed]
            outs: [models]
        registry:
          models:
            {MODEL}:
              path: models/tiny.onnx
              check_data: models/x.npy
        """))
    ws.write("train.py", TRAIN)
    ws.write(".gitignore", "models/\n")
    git(root, "init", "-q")
    env = {"DOCKER_HOST": dockerd.base_url, **IDENT}
    for seed, version in ((1, "1.0.0"), (2, "1.1.0")):
        ws.write("params.yaml", f"seed: {seed}\n")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"seed {seed}")
        assert ws.run().record["status"] == "succeeded"
        ok(ws.cli("model", "register", MODEL, "--version", version, env=env))
        ok(ws.cli("package", f"{MODEL}@{version}", "--base", base, "--wheel-cache",
                  str(wheels), "--tag", f"{registry_host}/{MODEL}", "--push", env=env,
                  timeout=600))
    return ws


def derived_image(dockerd: Dockerd, source: str, tag: str, *, fault: str = "",
                  entrypoint: list[str] | None = None,
                  golden: dict[str, Any] | None = None) -> str:
    """An image built FROM ``source`` (so it carries its labels): with ``fault`` the server
    runs under the FAULTY wrapper; ``entrypoint`` replaces the start; ``golden`` replaces
    /model/golden.json."""
    files = {"Dockerfile": f"FROM {source}\n"}
    if fault:
        files["faulty.py"] = FAULTY
        files["Dockerfile"] += (f"COPY faulty.py /app/faulty.py\nENV FAULT={fault}\n"
                                f"ENTRYPOINT {json.dumps(['/bin/sh', '-c', START, 'x'])}\n")
    if entrypoint:
        files["Dockerfile"] += f"ENTRYPOINT {json.dumps(entrypoint)}\n"
    if golden is not None:
        files["golden.json"] = json.dumps(golden)
        files["Dockerfile"] += "COPY golden.json /model/golden.json\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    api = dockerd.client().api
    for _ in api.build(fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=tag,
                       rm=True, forcerm=True, network_mode="none", decode=True):
        pass
    return tag


def environment_yaml(name: str, dockerd: Dockerd, router_image: str, *,
                     steps: str = "[10, 50, 100]", bake: str = "1s",
                     gates: str = "{max_error_rate: 0.05}", ready: str = "30s",
                     extra: str = "") -> str:
    """A ``deploy:`` section with one environment on the test dockerd (fresh ports)."""
    port = free_port()
    return textwrap.dedent(f"""\
        deploy:
          router_image: {router_image}
          environments:
            {name}:
              stage: staging
              hosts: [{{docker: "{dockerd.base_url}"}}]
              port: {port}
              backend_ports: [{free_port()}, {free_port()}]
              steps: {steps}
              bake: {bake}
              ready_timeout: {ready}
              drain: 2s
              gates: {gates}
        """) + extra


def infer_body() -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                   "data": [0.1, 0.2, 0.3, 0.4]}]}).encode()


def remove_env(dockerd: Dockerd, env: str) -> None:
    """Remove every container the deploy made for ``env``."""
    api = dockerd.client().api
    for container in api.containers(all=True,
                                    filters={"label": f"io.gha-mlops.deploy.env={env}"}):
        api.remove_container(container["Id"], force=True)
