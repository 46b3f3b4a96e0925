"""docs/packaging.md says what the code does: the Dockerfile shown is the one written, the
image reference table is the rule, and the labels table names every label an image gets."""

from __future__ import annotations

import re
from pathlib import Path

from gha_mlops.packaging import build
from gha_mlops.packaging.service import image_reference, labels_for
from gha_mlops.registry import Lineage, ModelVersion

DOC = (Path(__file__).resolve().parents[2] / "docs" / "packaging.md").read_text()


def _section(title: str) -> str:
    return DOC.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_dockerfile_shown_is_the_one_written() -> None:
    shown = DOC.split("```dockerfile\n", 1)[1].split("```", 1)[0]
    assert shown == build.dockerfile("python:3.11-slim", compile_in_image=False)


def test_the_image_reference_table_is_the_rule() -> None:
    rows = re.findall(r"^\| (\(none\)|`[^`]+`)[^|]* \| `([^`]+)` \|$",
                      _section("### The image reference"), re.M)
    assert len(rows) == 5
    for tag, expected in rows:
        given = None if tag == "(none)" else tag.strip("`")
        assert image_reference("digits", "1.2.0", given) == expected


def test_the_labels_table_names_every_label() -> None:
    mv = ModelVersion(name="digits", version="1.2.0", tag="digits@v1.2.0", commit="c" * 40,
                      lineage=Lineage(run_id="r", commit="c" * 40, model_path="m.onnx",
                                      model_sha256="0" * 64))
    labels = labels_for(mv, base="python:3.11-slim", onnx_sha256="1" * 64, source="https://x/y")
    documented = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", _section("Labels (OCI annotations, and ours):"),
                           re.M):
        names = re.findall(r"`([^`]+)`", cell)
        documented.add(names[0])
        documented.update(names[0].rpartition(".")[0] + n for n in names[1:])
    assert documented == set(labels)
