"""KServe manifests for an environment: rendering and offline validation only (docs/kserve.md).

:func:`render_kserve` turns one version of a packaged model into the InferenceService
(``serving.kserve.io/v1beta1``) that serves the same image, with the same Open Inference
Protocol (V2 REST), on a Kubernetes cluster with KServe in its Knative ("Serverless")
deployment mode: one YAML file per rollout step of the environment, each the whole resource,
differing only in ``spec.predictor.canaryTrafficPercent`` (the last file has none: the new
revision is promoted). gha-mlops applies nothing to a cluster.

:func:`validate_manifests` checks rendered files without a cluster: the InferenceService's own
structure against :data:`ISVC_SCHEMA` (the subset of KServe's CRD schema for the fields
rendered here), its metadata and container against the real Kubernetes schemas (the
``kserve`` extra: kubernetes-validate), the rules that the API server and KServe's and
Knative's admission webhooks enforce on those fields, and that the files form one rollout.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import itertools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gha_mlops._fs import atomic_write_text
from gha_mlops.config.model import DeployEnvironment
from gha_mlops.errors import UsageError, missing_extra, quoted
from gha_mlops.registry.grammar import MODEL_NAME_RE, SEMVER_RE

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
CONTAINER = "kserve-container"  # KServe's name for a custom predictor's serving container
# Facts of the packaged image (docs/packaging.md): it listens on 8080 (Knative passes the
# same number as PORT) and runs as the distroless "nonroot" uid/gid.
IMAGE_PORT = 8080
IMAGE_UID = 65532
MODEL_LABEL = "io.gha-mlops.model."
ENV_LABEL = "io.gha-mlops.deploy.env"
# Knative derives `<name>-predictor-default-00001` (older KServe) or `<name>-predictor-00001`
# from the InferenceService's name, and Kubernetes caps Service names and label values at
# 63 characters: 39 + 24 fits every release.
MAX_NAME = 39
K8S_VERSION = "1.30"  # the Kubernetes schemas validated against (kubernetes-validate's)
MAX_FILES = 64
MAX_FILE_BYTES = 1024 * 1024
MAX_PROBLEMS = 100

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # KServe's IsvcNameFmt
_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# The distribution reference grammar (docker/distribution reference/regexp.go), IPv6 hosts
# left out: [domain[:port]/]path[:tag][@sha256:hex].
_DOMAIN = (r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
           r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REF = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")
# The names render_kserve gives: NN-<env>-canary-<percent>.yaml, NN-<env>-promote.yaml.
_FILE_NAME = re.compile(
    r"^[0-9]{2,3}-(?P<env>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(canary-[0-9]{1,3}|promote)\.yaml$")
_IMAGE_ID = re.compile(r"^(sha256:)?[0-9a-f]{64}$")
MAX_IMAGE_REF = 512

_INT_OR_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}],
                    "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
                               r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

ISVC_SCHEMA: dict[str, Any] = {
    # The subset of KServe's CRD schema (the openAPIV3Schema of version v1beta1 in
    # config/crd/full/serving.kserve.io_inferenceservices.yaml of kserve/kserve, commit
    # aaac4e294dae2c7b1aa1886447793f3aa1c30912, controller-gen v0.19.0) for the fields
    # render_kserve writes, types and formats as there. Two additions, both what a cluster
    # does too: apiVersion/kind are fixed (the API server routes on them), and every object
    # refuses fields outside the subset (kubectl's default strict field validation refuses
    # fields outside the full schema; a field this subset lacks is one we never render).
    # Containers are checked here only as the CRD's `required: [name]`: their fields are
    # core/v1 Container, checked against the Kubernetes schema itself (validate_manifests).
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"type": "string", "const": API_VERSION},
        "kind": {"type": "string", "const": KIND},
        "metadata": {"type": "object"},  # the CRD says no more: ObjectMeta is checked as a Pod's
        "spec": {
            "type": "object", "required": ["predictor"], "additionalProperties": False,
            "properties": {"predictor": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "canaryTrafficPercent": {"type": "integer", "format": "int64"},
                    "minReplicas": {"type": "integer", "format": "int32"},
                    "labels": _STRING_MAP,
                    "annotations": _STRING_MAP,
                    "containers": {"type": "array",
                                   "items": {"type": "object", "required": ["name"]}},
                },
            }},
        },
    },
}


def render_kserve(name: str, version: str, image: str, env: DeployEnvironment, *,
                  namespace: str | None = None) -> dict[str, str]:
    """The manifests that roll ``name`` ``version`` (packaged as ``image``) out to ``env`` on
    KServe: file name -> YAML text, one file per step of ``env.steps``, in apply order
    (``01-staging-canary-10.yaml``, ``02-staging-canary-50.yaml``, ``03-staging-promote.yaml``).
    Every file is the whole InferenceService; they differ only in ``canaryTrafficPercent``
    (absent in the last: promoted), so stepping never starts new pods.

    ``image`` is pinned to ``repo@sha256:...`` when it carries a digest; a local image id
    (``sha256:...``) is refused (a cluster pulls from a registry). The resource's name is
    :func:`isvc_name` of the model and environment. Raises :class:`UsageError` naming the
    value for a model name, version, image, namespace or step list that cannot be rendered.
    Pure: reads and writes nothing."""
    _check(name, MODEL_NAME_RE, "model name", "a registry model name such as digits")
    _check(version, SEMVER_RE, "version", "a semantic version such as 1.2.0")
    if namespace is not None:
        _check(namespace, _DNS_1123_LABEL, "namespace",
               "a Kubernetes namespace: lower-case letters, digits and '-', at most 63")
        if len(namespace) > 63:
            raise UsageError(f"namespace {quoted(namespace)} is longer than 63 characters",
                             hint="use a shorter Kubernetes namespace")
    steps = _steps(env)
    ref = pinned_image(image)
    env_dns = dns_label(env.name)
    doc = _inference_service(name, version, image, ref, env, namespace)
    files: dict[str, str] = {}
    width = max(2, len(str(len(steps))))
    for index, percent in enumerate(steps, 1):
        last = index == len(steps)
        step_doc = copy.deepcopy(doc)
        predictor = step_doc["spec"]["predictor"]
        if not last:  # first in the predictor, where a reader looks
            step_doc["spec"]["predictor"] = {"canaryTrafficPercent": percent, **predictor}
        what = "promote" if last else f"canary-{percent}"
        header = _header(name, version, env_dns, index, len(steps), None if last else percent,
                         pinned="@" in ref)
        files[f"{index:0{width}d}-{env_dns}-{what}.yaml"] = header + _dump(step_doc)
    return files


def write_manifests(files: Mapping[str, str], out: Path) -> list[Path]:
    """Write rendered ``files`` into the folder ``out`` (created when missing; the caller
    decides where it may be), each atomically, and first remove the manifests an earlier
    rendering for the same environment left there that this one does not write: a stale
    ``03-staging-promote.yaml`` of a three-step rollout would otherwise be applied after the
    last file of a new two-step one, promoting the old version. Other files stay. Returns
    the paths written, in apply order. Raises :class:`UsageError` for a file name that
    :func:`render_kserve` does not make, or an ``out`` that is not a folder."""
    envs = set()
    for fname in files:
        m = _FILE_NAME.fullmatch(fname)
        if m is None:
            raise UsageError(f"{quoted(fname)} is not the name of a rendered manifest",
                             hint="write what render_kserve returned, unchanged")
        envs.add(m["env"])
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is not a folder", hint="give --out a folder for the manifests")
    out.mkdir(parents=True, exist_ok=True)
    for index, old in enumerate(sorted(out.iterdir())):
        if index >= 10_000:  # a folder of manifests, not a dump: stop looking
            break
        m = _FILE_NAME.fullmatch(old.name)
        if m and m["env"] in envs and old.name not in files and not old.is_dir():
            old.unlink()  # a link itself, never what it points to
    written = []
    for fname in sorted(files):
        atomic_write_text(out / fname, files[fname])
        written.append(out / fname)
    return written


def isvc_name(model: str, env: str) -> str:
    """The InferenceService's name for ``model`` in ``env``: ``<model>-<env>`` when that is
    already a DNS-1035 label (what KServe accepts: lower-case letters, digits, '-', starting
    with a letter) of at most :data:`MAX_NAME` characters. Otherwise it is lower-cased, each
    run of other characters ('_', '/', '.') becomes '-', an ``m-`` goes in front of a leading
    digit, it is cut to fit, and ``-`` plus 6 hex digits of the SHA-256 of ``model/env`` go at
    the end, so two models whose names differ only in what was replaced never share a name:
    ``my_model`` in ``staging`` -> ``my-model-staging-<hash>``."""
    plain = f"{model}-{env}"
    if _DNS_1035.fullmatch(plain) and len(plain) <= MAX_NAME:
        return plain
    digest = hashlib.sha256(f"{model}/{env}".encode()).hexdigest()[:6]
    base = re.sub(r"[^a-z0-9]+", "-", plain.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"m-{base}".rstrip("-")
    return f"{base[:MAX_NAME - 7].rstrip('-')}-{digest}"


def dns_label(text: str) -> str:
    """``text`` as a DNS-1123 label for file names and label values: lower-cased, each run of
    other characters as '-', at most 63 characters (``env`` when nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-") or "env"


def pinned_image(image: str) -> str:
    """The reference a cluster pulls: ``repo@sha256:...`` when ``image`` has a digest (a tag
    beside it is dropped: the digest decides), else ``image`` as given (a tag, which Knative
    resolves to a digest when it creates the revision). Raises :class:`UsageError` for a
    malformed reference or a bare local image id."""
    if len(image) > MAX_IMAGE_REF or not image.isprintable():
        raise UsageError(f"image reference {quoted(image)} is not a reference",
                         hint="give REPOSITORY@sha256:DIGEST")
    if _IMAGE_ID.fullmatch(image):
        raise UsageError(
            f"image {image} is a local image id, which a Kubernetes node cannot pull",
            hint="push the image to a registry (gha-mlops package --push) and render again, "
                 "or pass --image REPOSITORY@sha256:DIGEST")
    m = _IMAGE_REF.fullmatch(image)
    if m is None:
        raise UsageError(f"image reference {quoted(image)} is not valid",
                         hint="give REPOSITORY[:TAG][@sha256:DIGEST], the repository in "
                              "lower case")
    return f"{m['name']}@{m['digest']}" if m["digest"] else image


def _check(value: str, pattern: re.Pattern[str], what: str, expected: str) -> None:
    if len(value) > 250 or not pattern.match(value):
        raise UsageError(f"{what} {quoted(value)} cannot be rendered", hint=f"give {expected}")


def _steps(env: DeployEnvironment) -> list[int]:
    """The environment's steps, checked again (a DeployEnvironment may be built by hand):
    1..100, strictly increasing, ending at 100, at most 10."""
    steps = list(env.steps)
    ok = (0 < len(steps) <= 10 and steps[-1] == 100
          and all(isinstance(s, int) and 1 <= s <= 100 for s in steps)
          and all(a < b for a, b in itertools.pairwise(steps)))
    if not ok:
        raise UsageError(
            f"environment {quoted(env.name)}: steps {quoted(steps)} cannot be a rollout",
            file=env.source,
            hint="steps are percentages of traffic, strictly increasing, ending at 100, "
                 "e.g. [10, 50, 100]; [100] is blue/green")
    return steps


def _labels(name: str, version: str, env: DeployEnvironment) -> dict[str, str]:
    """Label values must match Kubernetes' label syntax: the exact name and version are in
    the annotations, the labels carry them as close as that syntax allows."""
    safe_version = re.sub(r"[^A-Za-z0-9_.-]", "_", version)[:63].strip("_.-")
    return {f"{MODEL_LABEL}name": dns_label(name), f"{MODEL_LABEL}version": safe_version,
            ENV_LABEL: dns_label(env.name)}


def _inference_service(name: str, version: str, image: str, ref: str, env: DeployEnvironment,
                       namespace: str | None) -> dict[str, Any]:
    labels = _labels(name, version, env)
    metadata: dict[str, Any] = {"name": isvc_name(name, env.name)}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = labels
    metadata["annotations"] = {
        # canaryTrafficPercent is a Knative ("Serverless") mode feature; "Serverless" is the
        # name every KServe release accepts (newer ones read it as "Knative").
        "serving.kserve.io/deploymentMode": "Serverless",
        f"{MODEL_LABEL}name": name, f"{MODEL_LABEL}version": version,
        f"{MODEL_LABEL}image": image}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
            "spec": {"predictor": {"minReplicas": 1, "labels": dict(labels),
                                   "containers": [_container(ref, env.workers)]}}}


def _container(ref: str, workers: int) -> dict[str, Any]:
    """The predictor's one container. No PORT in env (Knative reserves it and sets it to the
    container port); PROTOCOL=v2 is how a custom KServe predictor declares the V2 protocol.
    CPU: requested, not limited (a CFS quota throttles the server and shows up as p99)."""
    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": IMAGE_PORT}, "periodSeconds": period,
                "timeoutSeconds": 2, "failureThreshold": failures}

    return {
        "name": CONTAINER,
        "image": ref,
        "args": ["--workers", str(workers)],
        "env": [{"name": "PROTOCOL", "value": "v2"}],
        "ports": [{"name": "http1", "containerPort": IMAGE_PORT, "protocol": "TCP"}],
        "readinessProbe": probe("/v2/health/ready", 2, 3),
        "livenessProbe": probe("/v2/health/live", 10, 6),
        "resources": {"requests": {"cpu": f"{500 * workers}m", "memory": f"{256 * workers}Mi"},
                      "limits": {"memory": f"{512 * workers}Mi"}},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}},
    }


def _header(name: str, version: str, env: str, index: int, count: int, percent: int | None,
            *, pinned: bool) -> str:
    # Only validated values appear here (a model name, a semantic version, a DNS label):
    # none can end the comment line.
    if percent is None:
        what = (f"canaryTrafficPercent absent: {name} {version} is promoted, 100 % of the "
                "traffic, and becomes the revision a later rollout is compared with.")
    else:
        what = (f"canaryTrafficPercent {percent}: {percent} % of the traffic to {name} "
                f"{version}, the rest to the last promoted revision.")
    lines = [f"# gha-mlops: {name} {version} in environment {env}, step {index} of {count}.",
             f"# {what}",
             "# Rendering only: gha-mlops applies nothing. Apply one file at a time, in order,",
             "# checking the new revision between steps (docs/kserve.md)."]
    if not pinned:
        lines.append("# The image is a tag, not a digest: Knative resolves it when it "
                     "creates the revision.")
    return "\n".join(lines) + "\n"


def _dump(doc: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False, width=100)


# --- offline validation ---------------------------------------------------------------------

_RESERVED_ENV = {  # name -> who refuses it
    "PORT": "Knative (it sets PORT to the container port)",
    "K_SERVICE": "Knative", "K_CONFIGURATION": "Knative", "K_REVISION": "Knative",
    "PYTHONPATH": "KServe's admission webhook (DefaultBlockedEnvVars)"}


def validate_manifests(files: Mapping[str, str]) -> list[str]:
    """The problems of rendered manifests (file name -> YAML text), each ``FILE: WHERE:
    what``, in file order; ``[]`` when none. Each file must hold one InferenceService that
    passes :data:`ISVC_SCHEMA`, whose metadata and containers pass the Kubernetes
    :data:`K8S_VERSION` schemas as a Pod's (kubernetes-validate, strict: unknown fields are
    errors; it reports the first error of each file), and the rules that the API server and
    KServe's and Knative's webhooks apply to those fields (names, label syntax, ports,
    probes, reserved variables, traffic percent). Together the files must be one rollout:
    one resource, identical but for ``canaryTrafficPercent``, which rises and is absent only
    in the last file.

    Bounded: at most :data:`MAX_FILES` files of :data:`MAX_FILE_BYTES`, YAML aliases bounded
    as in mlops.yaml, at most :data:`MAX_PROBLEMS` problems. Never raises for bad input;
    raises :class:`~gha_mlops.errors.MissingExtraError` when the ``kserve`` extra is not
    installed."""
    schema_validator, k8s = _validators()
    if len(files) > MAX_FILES:
        return [f"{len(files)} files: more than the {MAX_FILES} a rollout renders"]
    problems: list[str] = []
    docs: dict[str, dict[str, Any]] = {}
    for fname in sorted(files):
        doc, error = _load(files[fname])
        if doc is None:
            problems.append(f"{fname}: {error}")
            continue
        found = [f"{_path(e.absolute_path)}: {_short(e.message)}" for e in
                 sorted(schema_validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))]
        found += _k8s_problems(doc, k8s)
        found += _rule_problems(doc)
        problems += [f"{fname}: {p}" for p in found]
        docs[fname] = doc
    if len(docs) == len(files):
        problems += _rollout_problems(docs)
    return problems[:MAX_PROBLEMS]


def _validators() -> tuple[Any, Any]:
    """The CRD subset's validator and kubernetes_validate.utils, or MissingExtraError."""
    try:  # jsonschema comes with kubernetes-validate
        import jsonschema

        k8s = importlib.import_module("kubernetes_validate.utils")
    except ImportError:
        raise missing_extra("kubernetes_validate", "kserve") from None
    return jsonschema.Draft202012Validator(ISVC_SCHEMA), k8s


def _load(text: str) -> tuple[dict[str, Any] | None, str]:
    """The one mapping in ``text``, or None and why not."""
    import yaml

    from gha_mlops.config._yaml import YamlLimitError, load_yaml

    if len(text.encode(errors="replace")) > MAX_FILE_BYTES:
        return None, f"larger than {MAX_FILE_BYTES // 1024} KiB"
    try:
        doc = load_yaml(text)
    except YamlLimitError as err:
        return None, _short(str(err))
    except yaml.YAMLError as err:
        return None, f"not one YAML document: {_short(str(err))}"
    if not isinstance(doc, dict):
        return None, f"holds {type(doc).__name__}, not an InferenceService mapping"
    return doc, ""


def _k8s_problems(doc: dict[str, Any], k8s: Any) -> list[str]:
    """The resource's metadata and containers, as a Pod's, against the Kubernetes schemas."""
    metadata, containers = doc.get("metadata"), _at(doc, "spec", "predictor", "containers")
    if not isinstance(metadata, dict) or not isinstance(containers, list):
        return []  # the CRD subset has said why
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
           "spec": {"containers": containers}}
    try:
        k8s.validate(pod, K8S_VERSION, strict=True)
    except k8s.ValidationError as err:
        where = list(err.path)
        if where[:2] == ["spec", "containers"]:
            where[1:2] = ["predictor", "containers"]
        return [f"{_path(where)}: {_short(err.message)} (Kubernetes {K8S_VERSION} schema)"]
    return []


def _rule_problems(doc: dict[str, Any]) -> list[str]:
    """What the API server and the webhooks refuse that no schema says."""
    found: list[str] = []
    name = _at(doc, "metadata", "name")
    if isinstance(name, str) and not (_DNS_1035.fullmatch(name) and len(name) <= MAX_NAME):
        found.append(f"metadata.name: {quoted(name)} is not a DNS-1035 label of at most "
                     f"{MAX_NAME} characters (lower-case letters, digits, '-', a letter "
                     "first), which KServe requires and Knative's derived names fit in")
    namespace = _at(doc, "metadata", "namespace")
    if isinstance(namespace, str) and not (_DNS_1123_LABEL.fullmatch(namespace)
                                           and len(namespace) <= 63):
        found.append(f"metadata.namespace: {quoted(namespace)} is not a DNS-1123 label")
    for where in (("metadata", "labels"), ("spec", "predictor", "labels")):
        found += _label_problems(_at(doc, *where), ".".join(where), values=True)
    found += _label_problems(_at(doc, "metadata", "annotations"), "metadata.annotations",
                             values=False)
    percent = _at(doc, "spec", "predictor", "canaryTrafficPercent")
    if isinstance(percent, int) and not 0 <= percent <= 100:
        found.append(f"spec.predictor.canaryTrafficPercent: {percent} is not 0..100")
    containers = _at(doc, "spec", "predictor", "containers")
    if isinstance(containers, list):
        if len(containers) != 1:
            found.append(f"spec.predictor.containers: {len(containers)} containers, not the "
                         "one serving container")
        for i, container in enumerate(containers):
            if isinstance(container, dict):
                found += _container_problems(container, f"spec.predictor.containers[{i}]")
    return found


def _label_problems(labels: Any, where: str, *, values: bool) -> list[str]:
    if not isinstance(labels, dict):
        return []
    found = [f"{where}: key {quoted(key)} is not a qualified name ([PREFIX/]NAME)"
             for key in labels if isinstance(key, str) and not _qualified_name(key)]
    if values:
        found += [f"{where}: the value {quoted(value)} of {quoted(key)} is not a label value "
                  "(at most 63 of letters, digits, '-', '_', '.', alphanumeric at both ends)"
                  for key, value in labels.items()
                  if isinstance(value, str) and not (len(value) <= 63
                                                     and _LABEL_VALUE.fullmatch(value))]
    elif sum(len(str(k)) + len(str(v)) for k, v in labels.items()) > 256 * 1024:
        found.append(f"{where}: more than 256 KiB in all")
    return found


def _qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and not (len(prefix) <= 253 and _DNS_1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


def _container_problems(container: dict[str, Any], where: str) -> list[str]:
    found: list[str] = []
    if container.get("name") != CONTAINER:
        found.append(f"{where}.name: {quoted(container.get('name'))}, not {CONTAINER!r}, "
                     "the container KServe serves from")
    image = container.get("image")
    if not isinstance(image, str):
        found.append(f"{where}.image: missing")
    else:
        try:
            pinned_image(image)
        except UsageError as err:
            found.append(f"{where}.image: {err.message}")
    ports = container.get("ports")
    port: Any = None
    if not isinstance(ports, list) or len(ports) != 1 or not isinstance(ports[0], dict):
        found.append(f"{where}.ports: Knative takes exactly one port")
    else:
        port = ports[0].get("containerPort")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            found.append(f"{where}.ports[0].containerPort: {str(port)[:20]} is not 1..65535")
        if ports[0].get("protocol", "TCP") != "TCP":
            found.append(f"{where}.ports[0].protocol: HTTP needs TCP")
    for probe in ("readinessProbe", "livenessProbe"):
        get = _at(container, probe, "httpGet")
        if isinstance(get, dict) and get.get("port") not in (None, port):
            found.append(f"{where}.{probe}.httpGet.port: {str(get.get('port'))[:20]}, not "
                         f"the container port {port} (Knative probes only that one)")
    found += _env_problems(container.get("env"), where)
    context = container.get("securityContext")
    if not (isinstance(context, dict) and context.get("runAsNonRoot") is True
            and context.get("runAsUser") != 0):
        found.append(f"{where}.securityContext: runAsNonRoot must be true (the image runs as "
                     f"uid {IMAGE_UID})")
    return found


def _env_problems(env: Any, where: str) -> list[str]:
    if not isinstance(env, list):
        return []
    found: list[str] = []
    for i, var in enumerate(env):
        if not isinstance(var, dict):
            continue
        name = var.get("name")
        if isinstance(name, str) and name in _RESERVED_ENV:
            found.append(f"{where}.env[{i}]: {name} is refused by {_RESERVED_ENV[name]}")
        if name == "PROTOCOL" and var.get("value") not in ("v1", "v2"):
            found.append(f"{where}.env[{i}]: PROTOCOL must be v1 or v2 (KServe)")
    return found


def _rollout_problems(docs: Mapping[str, dict[str, Any]]) -> list[str]:
    """The files in name order are one rollout of one resource."""
    if not docs:
        return ["no manifest"]
    found: list[str] = []
    names = list(docs)
    percents: list[Any] = []
    first = _without_percent(docs[names[0]])
    for fname in names:
        percents.append(_at(docs[fname], "spec", "predictor", "canaryTrafficPercent"))
        if _without_percent(docs[fname]) != first:
            found.append(f"{fname}: differs from {names[0]} in more than canaryTrafficPercent "
                         "(each step would start new pods, or touch another resource)")
    if percents[-1] is not None:
        found.append(f"{names[-1]}: the last step keeps canaryTrafficPercent "
                     f"{percents[-1]}, so the new revision is never promoted")
    steps = percents[:-1]
    if any(not isinstance(p, int) for p in steps) or any(
            a >= b for a, b in itertools.pairwise(steps)):
        found.append(f"canaryTrafficPercent in file order is {percents}: every step but the "
                     "last needs one, rising")
    return found


def _without_percent(doc: dict[str, Any]) -> Any:
    predictor = _at(doc, "spec", "predictor")
    if not isinstance(predictor, dict):
        return doc
    rest = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
    return {**doc, "spec": {**doc["spec"], "predictor": rest}}


def _at(doc: Any, *keys: str) -> Any:
    """``doc[k1][k2]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(document)"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
