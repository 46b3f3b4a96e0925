"""release.yml's wiring, what act's run of it cannot show by itself (test_release_workflow_act
runs it): the attestation's subject is the pushed image, every permission says what it is
for, the pins are the ones docs/release.md names, and the stand-in of
actions/attest-build-provenance refuses what the real action refuses (and a subject name with a
tag, against its documented form), so a workflow that passes under act passes those checks on
GitHub too."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

pytest_plugins = ["tests.integration.registry_fixtures"]

REPO = Path(__file__).resolve().parents[2]
RELEASE = REPO / ".github/workflows/release.yml"
ATTEST = REPO / "tests/standins/attest-build-provenance/attest.py"
# The releases pinned, and how they were verified: the commit each tag names in a git mirror
# of the upstream repository (see docs/release.md).
PINS = {"docker/login-action": ("4907a6ddec9925e35a0a9e82d7399ccc52663121", "v4.1.0"),
        "actions/attest-build-provenance": ("a2bbfa25375fe432b6a289bc6b6cd05ecd0c4c32",
                                            "v4.1.0")}


def _release() -> dict[str, Any]:
    doc = yaml.safe_load(RELEASE.read_text())
    assert isinstance(doc, dict)
    return doc


def _step(uses_prefix: str) -> dict[str, Any]:
    [step] = [s for s in _release()["jobs"]["release"]["steps"]
              if str(s.get("uses", "")).startswith(uses_prefix)]
    return dict(step)


def test_the_attestation_names_the_pushed_image_by_its_digest() -> None:
    attest = _step("actions/attest-build-provenance@")
    assert attest["with"] == {"subject-name": "${{ steps.image.outputs.name }}",
                              "subject-digest": "${{ steps.package.outputs.digest }}",
                              "push-to-registry": True}
    assert attest["if"] == "inputs.package && inputs.push && inputs.attest"
    package = _step("$/actions/package")
    # The image attested is the one the package step pushed: same name, this version.
    assert package["with"]["tag"] == ("${{ steps.image.outputs.name }}:"
                                      "${{ steps.register.outputs.version }}")
    assert package["with"]["push"] == "${{ inputs.push }}"


def test_the_tag_pushes_carry_the_push_token_and_the_login_its_registry() -> None:
    register = _step("$/actions/register")
    assert register["with"]["token"] == "${{ secrets.PUSH_TOKEN || github.token }}"
    assert register["with"]["push"] == "${{ inputs.push }}"
    login = _step("docker/login-action@")
    assert login["with"]["registry"] == "${{ steps.image.outputs.host }}"
    assert login["if"] == "inputs.package && inputs.push"
    for step in _release()["jobs"]["release"]["steps"]:
        if "git push" in step.get("run", "") or "--push" in step.get("run", ""):
            assert step["env"]["PUSH_TOKEN"] == "${{ secrets.PUSH_TOKEN || github.token }}"


def test_every_permission_says_what_it_is_for() -> None:
    lines = RELEASE.read_text().splitlines()
    start = lines.index("    permissions:")
    perms = _release()["jobs"]["release"]["permissions"]
    for line in lines[start + 1:start + 1 + len(perms)]:
        name, _, rest = line.strip().partition(":")
        assert name in perms and "#" in rest and len(rest.split("#", 1)[1].split()) >= 3, line


def test_the_pins_are_the_verified_releases_and_the_docs_name_them() -> None:
    text = RELEASE.read_text()
    docs = (REPO / "docs/release.md").read_text()
    for action, (sha, version) in PINS.items():
        assert re.search(rf"uses: {re.escape(action)}@{sha} # {re.escape(version)}\n", text)
        assert f"{action}@{sha}` ({version})" in docs


def test_the_default_base_is_the_package_commands() -> None:
    from gha_mlops.packaging.service import DEFAULT_BASE

    inputs = _release()[True]["workflow_call"]["inputs"]
    assert inputs["base-image"]["default"] == DEFAULT_BASE


# ---------------------------------------------------------------------------------------------
# The stand-in of actions/attest-build-provenance


def _attest(tmp: Path, **inputs: str) -> subprocess.CompletedProcess[str]:
    (tmp / "temp").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "ACT_"))}
    env.update({"RUNNER_TEMP": str(tmp / "temp"), "GITHUB_OUTPUT": str(tmp / "output"),
                "GITHUB_WORKSPACE": str(tmp), "ACT_HARNESS_OUT": str(tmp)})
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    return subprocess.run([sys.executable, str(ATTEST)], env=env, capture_output=True,
                          text=True, check=False)


def _push_manifest(registry_url: str, name: str, tag: str) -> str:
    """Push a minimal OCI image (an empty config, no layers); its manifest digest."""
    config = b"{}"
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    start = urllib.request.Request(f"{registry_url}/v2/{name}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start, timeout=10) as response:
        location = response.headers["Location"]
    url = location if location.startswith("http") else registry_url + location
    put = urllib.request.Request(f"{url}{'&' if '?' in url else '?'}digest={config_digest}",
                                 data=config, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(put, timeout=10).close()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": config_digest, "size": len(config)},
                           "layers": []}).encode()
    put = urllib.request.Request(f"{registry_url}/v2/{name}/manifests/{tag}", data=manifest,
                                 method="PUT", headers={
                                     "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    urllib.request.urlopen(put, timeout=10).close()
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def test_the_attest_stand_in_refuses_a_subject_the_real_action_refuses(tmp_path: Path) -> None:
    digest = "sha256:" + "a" * 64
    for inputs, message in [
            ({}, "One of subject-path, subject-digest, or subject-checksums must be provided"),
            ({"subject_digest": digest}, "subject-name must be provided"),
            ({"subject_digest": "sha256:abc", "subject_name": "x"}, "subject-digest must be"),
            ({"subject_digest": digest, "subject_path": "f", "subject_name": "x"},
             "Only one of"),
            ({"subject_digest": digest, "subject_name": "octo/tiny",
              "push_to_registry": "true"}, "fully-qualified image name"),
            ({"subject_digest": digest, "subject_name": "127.0.0.1:1/octo/tiny:1.0.0",
              "push_to_registry": "true"}, "without a tag")]:
        proc = _attest(tmp_path, **inputs)
        assert proc.returncode == 1, (inputs, proc.stdout)
        assert proc.stdout.startswith("::error::") and message in proc.stdout, (inputs,
                                                                               proc.stdout)
    assert not (tmp_path / "attest-build-provenance.jsonl").exists()


def test_the_attest_stand_in_pushes_only_an_image_the_registry_has(
        tmp_path: Path, oci_registry: Any) -> None:
    pushed = _push_manifest(oci_registry.url, "octo/tiny", "1.0.0")
    name = f"{oci_registry.host}/octo/tiny"
    missing = _attest(tmp_path, subject_name=name, subject_digest="sha256:" + "0" * 64,
                      push_to_registry="true")
    assert missing.returncode == 1 and "not found in the registry" in missing.stdout
    found = _attest(tmp_path, subject_name=name, subject_digest=pushed,
                    push_to_registry="true")
    assert found.returncode == 0, found.stdout + found.stderr
    [record] = [json.loads(x) for x in
                (tmp_path / "attest-build-provenance.jsonl").read_text().splitlines()]
    assert (record["subject-name"], record["subject-digest"], record["push-to-registry"]) == (
        name, pushed, True)
    statement = json.loads(Path(record["bundle-path"]).read_text())
    assert statement["subject"] == [{"name": name, "digest": {"sha256": pushed[7:]}}]
    assert "bundle-path=" in (tmp_path / "output").read_text()


def _image_step(tmp: Path, registry: str, model: str) -> tuple[int, str, str]:
    """Run the image-naming step's own script, as the runner would (bash, env, GITHUB_OUTPUT)."""
    [step] = [s for s in _release()["jobs"]["release"]["steps"] if s.get("id") == "image"]
    output = tmp / "output"
    output.write_text("")
    proc = subprocess.run(["bash", "-e", "-c", step["run"]], capture_output=True, text=True,
                          check=False, env={"PATH": os.environ["PATH"], "REGISTRY": registry,
                                            "MODEL": model, "GITHUB_OUTPUT": str(output)})
    return proc.returncode, proc.stdout, output.read_text()


def test_the_image_is_named_in_lowercase_from_the_registry_and_the_model(tmp_path: Path) -> None:
    assert _image_step(tmp_path, "ghcr.io/Octo-Org", "digits")[2] == (
        "name=ghcr.io/octo-org/digits\nhost=ghcr.io\n")
    assert _image_step(tmp_path, "127.0.0.1:5000/team/", "vision/digits")[2] == (
        "name=127.0.0.1:5000/team/vision/digits\nhost=127.0.0.1:5000\n")


def test_a_registry_or_model_that_is_no_image_name_writes_no_output(tmp_path: Path) -> None:
    # One class: values that would smuggle lines into $GITHUB_OUTPUT or the log, or are no
    # image name at all.
    for registry, model in [("ghcr.io/octo\ndigest=sha256:0", "digits"),
                            ("ghcr.io/octo", "digits\n::add-mask::x"),
                            ("ghcr.io/octo org", "digits"), ("", "digits"),
                            ("ghcr.io/octo", "../etc")]:
        rc, stdout, output = _image_step(tmp_path, registry, model)
        assert rc == 2 and output == "", (registry, model, output)
        assert stdout.count("\n") == 1 and stdout.startswith("::error "), stdout
