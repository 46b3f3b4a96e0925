"""docs/registry.md says what the code does: its mlops.yaml loads as described, its command
walk-through and Python example run in a real repository (a real ONNX model, so a signature
is derived when gha_mlops.packaging.signature works), each tag of its grammar table parses to
the event it names, and its tag ruleset protects exactly the prod tags."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from gha_mlops.config import load_pipeline
from gha_mlops.registry.grammar import parse_tag
from tests.conftest import CLI, git
from tests.unit.test_docs import REPO, markdown_snippets

DOC = REPO / "docs" / "registry.md"
SNIPPETS = markdown_snippets(DOC)
TRAIN = """\
import os
import numpy as np
import onnx
from onnx import TensorProto, helper

x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])
y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 4])
graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
os.makedirs("package", exist_ok=True)
onnx.save(model, "package/model.onnx")
np.save("package/x_test.npy", np.ones((2, 4), dtype=np.float32))
"""


def _one(lang: str) -> str:
    found = [s.text for s in SNIPPETS if s.lang == lang]
    assert len(found) == 1, (lang, len(found))
    return found[0]


def _workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    config = _one("yaml").replace("python train.py", f"{shlex.quote(sys.executable)} train.py")
    (root / "mlops.yaml").write_text(config)
    (root / "train.py").write_text(TRAIN)
    (root / ".gitignore").write_text("package/\n.gha-mlops/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def test_the_yaml_loads_as_described(tmp_path: Path) -> None:
    registry = load_pipeline(_workspace(tmp_path) / "mlops.yaml").registry
    assert registry is not None
    assert registry.stages == ("dev", "staging", "prod") and registry.champion == "prod"
    model = registry.models["digits"]
    assert (model.path, model.check_data, model.atol, model.rtol) == (
        "package/model.onnx", "package/x_test.npy", 1.0e-5, 1.0e-4)


def test_the_walkthrough_and_the_python_example_run(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    env = {**os.environ, "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    env.pop("GITHUB_ACTIONS", None)
    lines = [re.sub(r"\s+#\s.*$", "", ln) for ln in _one("bash").splitlines()]
    outputs: dict[str, str] = {}
    for line in filter(str.strip, lines):
        if "demote" in line:  # the Python example reads the prod stage before it goes
            _python_example(root, env)
        args = shlex.split(line)
        assert args[0] == "gha-mlops", line
        proc = subprocess.run([*CLI, *args[1:]], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
        outputs[line.strip()] = proc.stdout
    shown = json.loads(outputs["gha-mlops model show digits#prod --json"])
    assert shown["version"] == "1.0.0" and shown["stages"] == ["prod"]
    assert shown["lineage"]["model"]["path"] == "package/model.onnx"
    if _signature_available():
        assert shown["lineage"]["signature"]["inputs"][0]["name"] == "input"
    assert git(root, "tag", "-l").split() == [
        "digits#prod!#2", "digits#prod#1", "digits@deprecated#4", "digits@v1.0.0",
        "digits@v1.0.0!#3"]


def _signature_available() -> bool:
    try:
        import gha_mlops.packaging.signature  # noqa: F401
    except ImportError:
        return False
    return True


def _python_example(root: Path, env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-c", _one("python")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("1.0.0 ") and proc.stdout.rstrip().endswith("model.onnx")


def test_the_grammar_table_parses_as_it_says() -> None:
    events = {"registration": "register", "assignment": "assign",
              "unassignment": "unassign", "deregistration": "deregister",
              "deprecation": "deprecate"}
    rows = re.findall(r"^\| `([^`]+)`\s*\| (\w+)", DOC.read_text(), flags=re.M)
    assert len(rows) == 5
    for tag, event in rows:
        parsed = parse_tag(tag)
        assert parsed is not None and parsed.action == events[event], tag


def test_the_ruleset_protects_the_prod_tags_only() -> None:
    ruleset = json.loads(_one("json"))
    include = ruleset["conditions"]["ref_name"]["include"]
    assert ruleset["target"] == "tag" and ruleset["bypass_actors"]

    def protected(tag: str) -> bool:
        return any(fnmatch.fnmatchcase(f"refs/tags/{tag}", p) for p in include)

    assert protected("digits#prod#3") and protected("digits#prod!#4")
    assert not any(protected(t) for t in ("digits#staging#2", "digits@v1.0.0",
                                          "digits@deprecated#5", "production#dev#1"))
    assert yaml.safe_load(_one("yaml"))["registry"]["champion"] == "prod"
