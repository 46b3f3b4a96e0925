"""The registry's Python interface (what the packaging code calls) on real repositories:
resolve, model_file, record_image as a git note, the signature deriver, the tag cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gha_mlops.registry import RegistryError, open_registry
from gha_mlops.registry._cache import cached_tags
from tests.conftest import Workspace, git
from tests.integration.test_registry_cli import REGISTRY

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def registered(git_workspace: Workspace) -> Workspace:
    ws = git_workspace
    ws.write("mlops.yaml", ws.read("mlops.yaml") + REGISTRY)
    git(ws.root, "commit", "-qam", "registry")
    ws.run()
    open_registry(ws.root).register("digits")
    return ws


def test_resolve_model_file_and_images(registered: Workspace) -> None:
    ws = registered
    reg = open_registry(ws.root)
    reg.promote("digits", "1.0.0", "prod")
    mv = reg.resolve("digits#prod")
    assert mv == reg.resolve("digits") == reg.resolve("digits@v1.0.0")
    assert mv.tag == "digits@v1.0.0" and mv.stages == ("prod",)
    assert reg.model_file(mv) == ws.root / "models" / "model.bin"
    # The workspace file changed: the cache's copy, hash-checked, is the model.
    (ws.root / "models" / "model.bin").write_text("other bytes")
    assert reg.model_file(mv).parent.parent.name == "objects"

    tag_before = git(ws.root, "rev-parse", "refs/tags/digits@v1.0.0")
    reg.record_image(mv, "localhost:5000/digits:1.0.0", DIGEST)
    again = open_registry(ws.root).resolve("digits@1.0.0")
    assert [(i.image, i.digest) for i in again.lineage.images] == [
        ("localhost:5000/digits:1.0.0", DIGEST)]
    assert git(ws.root, "rev-parse", "refs/tags/digits@v1.0.0") == tag_before
    shown = ws.cli("model", "show", "digits@1.0.0", check=True).stdout
    assert f"localhost:5000/digits:1.0.0@{DIGEST}" in shown
    with pytest.raises(RegistryError, match="not an image digest"):
        reg.record_image(mv, "x:1", "sha256:nothex")


def test_the_model_file_must_be_somewhere(registered: Workspace) -> None:
    ws = registered
    reg = open_registry(ws.root)
    mv = reg.resolve("digits")
    digest = mv.lineage.model_sha256
    (ws.root / "models" / "model.bin").unlink()
    (ws.root / ".gha-mlops/cache/objects" / digest[:2] / digest[2:]).unlink()
    with pytest.raises(RegistryError, match="neither in the workspace nor in the cache"):
        reg.model_file(mv)


def test_a_signature_joins_the_lineage_of_an_onnx_model(git_workspace: Workspace) -> None:
    ws = git_workspace
    ws.write("mlops.yaml", ws.read("mlops.yaml").replace("models/model.bin", "models/m.onnx")
             + REGISTRY.replace("models/model.bin", "models/m.onnx"))
    git(ws.root, "commit", "-qam", "onnx name")
    ws.run()
    seen: list[Path] = []

    def derive(path: Path) -> dict[str, object]:
        seen.append(path)
        return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                "outputs": []}

    def missing(path: Path) -> dict[str, object]:
        raise ImportError("No module named 'onnx'")

    reg = open_registry(ws.root)
    first = reg.register("digits", signature_of=missing)
    assert first.version is not None and first.version.lineage.signature is None
    assert any("no signature derived" in n for n in first.notes)
    git(ws.root, "commit", "-q", "--allow-empty", "-m", "again")
    ws.run(force=True)
    second = reg.register("digits", signature_of=derive)
    assert seen and second.version is not None
    assert second.version.lineage.signature == derive(seen[0])


def test_the_tag_cache_sees_every_change_git_makes(registered: Workspace) -> None:
    ws = registered
    names = lambda: sorted(t.name for t in cached_tags(ws.root))  # noqa: E731
    assert names() == ["digits@v1.0.0"]
    assert (ws.root / ".git/gha-mlops/tags.json").is_file()
    git(ws.root, "tag", "-a", "-m", "x", "digits#prod#1", "HEAD")
    assert names() == ["digits#prod#1", "digits@v1.0.0"]
    git(ws.root, "pack-refs", "--all")
    assert names() == ["digits#prod#1", "digits@v1.0.0"]
    git(ws.root, "tag", "-d", "digits#prod#1")
    assert names() == ["digits@v1.0.0"]
    git(ws.root, "tag", "-f", "-a", "-m", "moved", "digits@v1.0.0", "HEAD")
    assert [t.message for t in cached_tags(ws.root)] == ["moved\n"]
    # A cache of another form is rebuilt, never trusted.
    cache = ws.root / ".git/gha-mlops/tags.json"
    head, body = cache.read_bytes().split(b"\n", 1)
    cache.write_bytes(head + b"\n" + body.replace(b"moved", b"MOVED"))
    assert [t.message for t in cached_tags(ws.root)] == ["moved\n"]
    cache.write_bytes(json.dumps({"format": 1, "key": "x", "tags": [[1, 2]]}).encode())
    assert names() == ["digits@v1.0.0"]
