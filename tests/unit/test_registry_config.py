"""``registry:`` in mlops.yaml: the typed value, and one clear error per class of mistake,
naming the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gha_mlops.config import load_pipeline
from gha_mlops.config.model import RegistryConfig, RegistryModel
from gha_mlops.errors import ConfigError

HEAD = """\
stages:
  train:
    cmd: echo
    outs: [package]
registry:
"""


def _load(tmp_path: Path, registry: str) -> RegistryConfig | None:
    (tmp_path / "mlops.yaml").write_text(HEAD + registry)
    return load_pipeline(tmp_path / "mlops.yaml").registry


def test_defaults_and_the_typed_value(tmp_path: Path) -> None:
    found = _load(tmp_path, "  models:\n    digits:\n      path: package/model.onnx\n")
    assert found == RegistryConfig(("dev", "staging", "prod"), "prod",
                                   {"digits": RegistryModel("package/model.onnx")})
    # Loaded again from the validated-config cache: the same value.
    assert load_pipeline(tmp_path / "mlops.yaml").registry == found


def test_no_section_is_no_registry(tmp_path: Path) -> None:
    (tmp_path / "mlops.yaml").write_text(HEAD.replace("registry:\n", ""))
    assert load_pipeline(tmp_path / "mlops.yaml").registry is None


@pytest.mark.parametrize(("registry", "words"), [
    ("  champion: live\n", "registry.champion: 'live' is not one of the registry's stages"),
    ("  stages: [dev, dev]\n", "stage 'dev' is listed twice"),
    ("  stages: ['pro d']\n  champion: 'pro d'\n", "stage name 'pro d' is not allowed"),
    ("  models:\n    digits:\n      path: /abs/model.onnx\n", "is an absolute path"),
    ("  models:\n    digits:\n      path: ../model.onnx\n", "points outside the workspace"),
    ("  models:\n    digits:\n      path: other/model.onnx\n",
     "'other/model.onnx' is not an output of any stage"),
    ("  models:\n    '-bad':\n      path: package/m.onnx\n", "model name '-bad' is not allowed"),
    ("  models:\n    digits: {}\n", "registry.models.digits: missing required key 'path'"),
    ("  models:\n    digits:\n      path: package/m.onnx\n      tolerance: {atol: -1}\n",
     "atol"),
    ("  owners: [me]\n", "registry.owners"),
])
def test_a_bad_section_is_named(tmp_path: Path, registry: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, registry)
    text = caught.value.message + " ".join(caught.value.notes)
    assert words in text
    assert caught.value.line is not None and caught.value.line >= 5
