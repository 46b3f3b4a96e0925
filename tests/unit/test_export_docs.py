"""docs/model-export.md: its examples run, print what the page says, and its signature and
configuration are what the code produces and accepts."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")

from gha_mlops.config.loader import load_pipeline  # noqa: E402
from gha_mlops.packaging.signature import signature_of  # noqa: E402
from gha_mlops.train import export_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "model-export.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def test_the_python_examples_run_and_print_what_the_page_shows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stage, from_file = _blocks("python")
    monkeypatch.chdir(tmp_path)
    exec(compile(stage, "model-export.md", "exec"), {})
    assert signature_of(tmp_path / "package" / "model.onnx").to_json()["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 3]}]
    exec(compile(from_file, "model-export.md", "exec"), {})
    shown = re.search(r"prints\n\n```\n(.*?)\n```", DOC, re.S)
    assert shown is not None
    assert capsys.readouterr().out.strip() == shown.group(1)


def test_the_signature_shown_is_the_demo_models(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "src" / "gha_mlops" / "demo" / "project" / "src"))
    sys.modules.pop("model", None)
    from model import DigitNet

    export_onnx(DigitNet().eval(), torch.zeros(2, 1, 16, 16), tmp_path / "m.onnx",
                output_names=("logits",))
    (shown,) = _blocks("json")
    assert signature_of(tmp_path / "m.onnx").to_json() == json.loads(shown)
    sys.modules.pop("model", None)


def test_the_registry_configuration_shown_loads(tmp_path: Path) -> None:
    (snippet,) = _blocks("yaml")
    (tmp_path / "mlops.yaml").write_text(
        "stages:\n  prepare:\n    cmd: python prepare.py\n    outs: [data/prepared]\n"
        "  package:\n    cmd: python package.py\n    outs: [package]\n" + snippet)
    registry = load_pipeline(tmp_path / "mlops.yaml").registry
    assert registry is not None
    model = registry.models["digits"]
    assert (model.path, model.check_data) == ("package/model.onnx", "data/prepared/x_test.npy")
    assert (model.atol, model.rtol) == (1e-5, 1e-4)
