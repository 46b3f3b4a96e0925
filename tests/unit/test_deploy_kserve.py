"""KServe manifests (gha_mlops.deploy.kserve): what is rendered for an environment's steps,
the image pinned by digest, names Kubernetes accepts, and the offline validation catching
each class of broken manifest. docs/kserve.md's example is the rendering."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gha_mlops.config.model import DeployEnvironment, DeployHostConfig
from gha_mlops.deploy.kserve import (
    MAX_NAME,
    isvc_name,
    pinned_image,
    render_kserve,
    validate_manifests,
    write_manifests,
)
from gha_mlops.errors import MissingExtraError, UsageError

DIGEST = "sha256:" + "4f" * 32
IMAGE = f"registry.example.com:5000/team/digits:1.2.0@{DIGEST}"
DOC = Path(__file__).resolve().parents[2] / "docs" / "kserve.md"


def _env(name: str = "staging", steps: tuple[int, ...] = (10, 50, 100),
         workers: int = 1) -> DeployEnvironment:
    return DeployEnvironment(name=name, stage=name, steps=steps, workers=workers, port=8080,
                             hosts=(DeployHostConfig("unix:///var/run/docker.sock",
                                                     "127.0.0.1"),),
                             backend_ports=(8081, 8082))


def _docs(files: dict[str, str]) -> list[dict[str, Any]]:
    return [yaml.safe_load(files[name]) for name in sorted(files)]


def test_a_three_step_environment_renders_a_file_per_step_differing_only_in_traffic() -> None:
    files = render_kserve("digits", "1.2.0", IMAGE, _env(), namespace="ml")
    assert list(files) == ["01-staging-canary-10.yaml", "02-staging-canary-50.yaml",
                           "03-staging-promote.yaml"]
    docs = _docs(files)
    predictors = [d["spec"]["predictor"] for d in docs]
    assert [p.get("canaryTrafficPercent") for p in predictors] == [10, 50, None]
    # Only the traffic changes between steps: KServe starts the new revision's pods once.
    for doc in docs:
        doc["spec"]["predictor"].pop("canaryTrafficPercent", None)
    assert docs[0] == docs[1] == docs[2]
    isvc = docs[0]
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1",
                                                 "InferenceService")
    assert isvc["metadata"]["name"] == "digits-staging"
    assert isvc["metadata"]["namespace"] == "ml"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert isvc["metadata"]["labels"]["io.gha-mlops.model.version"] == "1.2.0"
    [container] = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert {"name": "PROTOCOL", "value": "v2"} in container["env"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["runAsUser"] == 65532
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert validate_manifests(files) == []


def test_blue_green_is_one_promoting_file_and_workers_scale_the_requests() -> None:
    files = render_kserve("digits", "1.2.0", IMAGE, _env("production", (100,), workers=4))
    assert list(files) == ["01-production-promote.yaml"]
    [doc] = _docs(files)
    assert "namespace" not in doc["metadata"]
    [container] = doc["spec"]["predictor"]["containers"]
    assert container["args"] == ["--workers", "4"]
    assert container["resources"]["requests"] == {"cpu": "2000m", "memory": "1024Mi"}
    assert validate_manifests(files) == []


@pytest.mark.parametrize(("given", "pulled"), [
    (IMAGE, f"registry.example.com:5000/team/digits@{DIGEST}"),  # the tag goes, the digest rules
    (f"ghcr.io/o/digits@{DIGEST}", f"ghcr.io/o/digits@{DIGEST}"),
    ("ghcr.io/o/digits:1.2.0", "ghcr.io/o/digits:1.2.0"),  # no digest: the tag, with a note
])
def test_the_image_is_pinned_by_digest_when_it_has_one(given: str, pulled: str) -> None:
    files = render_kserve("digits", "1.2.0", given, _env())
    for text in files.values():
        doc = yaml.safe_load(text)
        assert doc["spec"]["predictor"]["containers"][0]["image"] == pulled
        assert doc["metadata"]["annotations"]["io.gha-mlops.model.image"] == given
        assert ("not a digest" in text) == ("@" not in given)


@pytest.mark.parametrize("image", [
    DIGEST,  # a local image id: no node can pull it
    "Registry/Team/Digits:1.2.0",  # upper case in the path
    "digits:1.2.0\n  securityContext: {}",  # text that would break out of the value
    "digits@sha256:abc",  # a short digest
])
def test_an_image_a_cluster_cannot_pull_is_refused_with_what_to_give(image: str) -> None:
    with pytest.raises(UsageError) as err:
        render_kserve("digits", "1.2.0", image, _env())
    assert err.value.hint and ("sha256" in err.value.hint or "push" in err.value.hint)
    with pytest.raises(UsageError):
        pinned_image(image)


@pytest.mark.parametrize(("model", "env"), [
    ("my_model", "staging"), ("org/digits", "staging"), ("Digits", "prod_eu"),
    ("9lives", "staging"), ("m" * 120, "staging"), ("a_b/c-d_e", "x" * 60),
])
def test_a_name_kubernetes_refuses_becomes_a_dns_1035_label_that_keeps_them_apart(
        model: str, env: str) -> None:
    name = isvc_name(model, env)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= MAX_NAME
    assert name == isvc_name(model, env)
    files = render_kserve(model, "1.2.0", IMAGE, _env(env))
    assert all(yaml.safe_load(t)["metadata"]["name"] == name for t in files.values())
    assert validate_manifests(files) == []


def test_names_the_conversion_would_merge_stay_apart() -> None:
    names = {isvc_name(m, "staging") for m in ("my_model", "my-model", "My-Model", "my/model")}
    assert len(names) == 4 and "my-model-staging" in names


def test_a_valid_name_is_kept_and_a_version_label_a_selector_cannot_hold_is_annotated() -> None:
    assert isvc_name("digits", "staging") == "digits-staging"
    files = render_kserve("digits", "1.2.0-rc.1+build.7", IMAGE, _env())
    doc = yaml.safe_load(files["03-staging-promote.yaml"])
    assert doc["metadata"]["labels"]["io.gha-mlops.model.version"] == "1.2.0-rc.1_build.7"
    assert doc["metadata"]["annotations"]["io.gha-mlops.model.version"] == "1.2.0-rc.1+build.7"
    assert validate_manifests(files) == []


@pytest.mark.parametrize(("model", "version", "namespace", "steps"), [
    ("digits\n# injected", "1.2.0", None, (10, 100)),  # not a registry model name
    ("digits", "v1", None, (10, 100)),  # not a semantic version
    ("digits", "1.2.0", "Team_ML", (10, 100)),  # not a namespace
    ("digits", "1.2.0", None, (50, 10, 100)),  # steps that do not rise
    ("digits", "1.2.0", None, (10, 50)),  # never reaches 100
])
def test_input_that_cannot_be_rendered_is_a_usage_error(
        model: str, version: str, namespace: str | None, steps: tuple[int, ...]) -> None:
    with pytest.raises(UsageError):
        render_kserve(model, version, IMAGE, _env(steps=steps), namespace=namespace)


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = doc["spec"]["predictor"]["containers"][0]
    return container


def _break_port(doc: dict[str, Any]) -> None:
    _container(doc)["ports"][0]["containerPort"] = 70000


def _port_as_text(doc: dict[str, Any]) -> None:
    _container(doc)["ports"][0]["containerPort"] = "8080"


def _unknown_container_field(doc: dict[str, Any]) -> None:
    _container(doc)["imagePullPolicyy"] = "Always"


def _unknown_predictor_field(doc: dict[str, Any]) -> None:
    doc["spec"]["predictor"]["minReplica"] = 1


def _wrong_kind(doc: dict[str, Any]) -> None:
    doc["apiVersion"] = "serving.kubeflow.org/v1alpha2"


def _bad_name(doc: dict[str, Any]) -> None:
    doc["metadata"]["name"] = "my_model"


def _bad_label(doc: dict[str, Any]) -> None:
    doc["metadata"]["labels"]["io.gha-mlops.model.version"] = "1.2.0+build"


def _reserved_env(doc: dict[str, Any]) -> None:
    _container(doc)["env"].append({"name": "PORT", "value": "9000"})


def _probe_elsewhere(doc: dict[str, Any]) -> None:
    _container(doc)["readinessProbe"]["httpGet"]["port"] = 9090


def _root(doc: dict[str, Any]) -> None:
    _container(doc)["securityContext"]["runAsNonRoot"] = False


def _local_image(doc: dict[str, Any]) -> None:
    _container(doc)["image"] = DIGEST


@pytest.mark.parametrize(("breakage", "expected"), [
    (_break_port, r"ports\[0\]\.containerPort: 70000 is not 1\.\.65535"),
    (_port_as_text, r"containerPort: '8080' is not of type 'integer' \(Kubernetes"),
    (_unknown_container_field, r"containers\[0\]: .*'imagePullPolicyy' was unexpected"),
    (_unknown_predictor_field, r"spec\.predictor: .*'minReplica' was unexpected"),
    (_wrong_kind, r"apiVersion: 'serving.kserve.io/v1beta1' was expected"),
    (_bad_name, r"metadata\.name: 'my_model' is not a DNS-1035 label"),
    (_bad_label, r"metadata\.labels: the value '1\.2\.0\+build' of 'io\.gha-mlops\.model\.v"),
    (_reserved_env, r"env\[1\]: PORT is refused by Knative"),
    (_probe_elsewhere, r"readinessProbe\.httpGet\.port: 9090, not the container port 8080"),
    (_root, r"securityContext: runAsNonRoot must be true"),
    (_local_image, r"image: image sha256:\w+ is a local image id"),
])
def test_validation_catches_each_class_of_broken_manifest(breakage: Any, expected: str) -> None:
    files = render_kserve("digits", "1.2.0", IMAGE, _env())
    doc = yaml.safe_load(files["02-staging-canary-50.yaml"])
    breakage(doc)
    files["02-staging-canary-50.yaml"] = yaml.safe_dump(doc)
    problems = validate_manifests(files)
    assert any(p.startswith("02-staging-canary-50.yaml: ") and re.search(expected, p)
               for p in problems), problems


def test_validation_catches_files_that_are_not_one_rollout() -> None:
    files = render_kserve("digits", "1.2.0", IMAGE, _env())
    swapped = dict(zip(sorted(files), [files[n] for n in sorted(files)][::-1], strict=True))
    assert any("never promoted" in p for p in validate_manifests(swapped))
    other = render_kserve("digits", "1.3.0", IMAGE, _env())
    mixed = {**files, "02-staging-canary-50.yaml": other["02-staging-canary-50.yaml"]}
    assert any(p.startswith("02-staging-canary-50.yaml: differs from 01-staging-canary-10.yaml")
               for p in validate_manifests(mixed))


@pytest.mark.parametrize(("text", "expected"), [
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)), "aliases expand to more"),
    ("kind: [unclosed\n", "not one YAML document"),
    ("- a list\n", "holds list, not an InferenceService"),
    ("a: 1\n---\nb: 2\n", "not one YAML document"),
    ("x: " + "y" * (2 * 1024 * 1024) + "\n", "larger than 1024 KiB"),
])
def test_hostile_files_are_problems_not_tracebacks(text: str, expected: str) -> None:
    [problem] = validate_manifests({"01-x.yaml": text})
    assert problem.startswith("01-x.yaml: ") and expected in problem and len(problem) < 400


def test_more_files_than_a_rollout_renders_are_refused_unread() -> None:
    assert validate_manifests({f"{i:03d}.yaml": "x" for i in range(65)}) == [
        "65 files: more than the 64 a rollout renders"]


def test_validation_without_the_kserve_extra_names_the_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes_validate.utils", None)
    with pytest.raises(MissingExtraError) as err:
        validate_manifests({})
    assert err.value.hint == "pip install 'gha-mlops[kserve]'"


def test_writing_removes_what_an_earlier_rendering_of_the_environment_would_apply_last(
        tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    write_manifests(render_kserve("digits", "1.2.0", IMAGE, _env()), out)
    write_manifests(render_kserve("digits", "1.2.0", IMAGE, _env("production")), out)
    (out / "README.md").write_text("ours\n")
    target = tmp_path / "elsewhere.yaml"
    target.write_text("kept\n")
    (out / "04-staging-promote.yaml").symlink_to(target)
    files = render_kserve("digits", "1.3.0", IMAGE, _env(steps=(25, 100)))
    written = write_manifests(files, out)
    assert [p.name for p in written] == ["01-staging-canary-25.yaml", "02-staging-promote.yaml"]
    assert sorted(p.name for p in out.iterdir()) == [
        "01-production-canary-10.yaml", "01-staging-canary-25.yaml",
        "02-production-canary-50.yaml", "02-staging-promote.yaml",
        "03-production-promote.yaml", "README.md"]
    assert target.read_text() == "kept\n"  # the link went, not what it pointed to
    assert all((out / n).read_text() == t for n, t in files.items())
    with pytest.raises(UsageError):
        write_manifests({"../01-staging-promote.yaml": "x"}, out)
    with pytest.raises(UsageError):
        write_manifests(files, out / "README.md")


def test_the_docs_example_is_the_rendering() -> None:
    """docs/kserve.md shows the files of its example environment and the first in full."""
    files = render_kserve("digits", "1.2.0", f"ghcr.io/acme/digits@{DIGEST}", _env())
    doc = DOC.read_text()
    shown = doc.split("```yaml\n# gha-mlops: digits 1.2.0", 1)[1].split("```", 1)[0]
    assert "# gha-mlops: digits 1.2.0" + shown == files["01-staging-canary-10.yaml"]
    for name in files:
        assert f"`{name}`" in doc


def test_the_image_facts_kserve_renders_are_packagings() -> None:
    """deploy may not import packaging, so kserve keeps its own copy of the image's port, uid
    and label prefix: held here to what the image is built with."""
    from gha_mlops.deploy import kserve
    from gha_mlops.packaging import build, service

    assert (kserve.IMAGE_PORT, kserve.IMAGE_UID, kserve.MODEL_LABEL) == (
        build.PORT, build.UID, service.LABEL_PREFIX)
