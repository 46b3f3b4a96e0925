"""GitHub's OpenAPI description: finding it, loading it once, routing and validating against it.

The description (npm ``@octokit/openapi``, ``generated/api.github.com.json``) is OpenAPI 3.0.3:
its schemas use ``nullable: true``, which JSON Schema does not know. While parsing, every schema
object that says ``nullable: true`` becomes ``{"anyOf": [{"type": "null"}, <the rest>]}``, so
the document can be handed to ``jsonschema`` as Draft 2020-12. Validators are built lazily, one
per schema location, and ``$ref`` is resolved through a ``referencing`` registry that holds the
whole document once.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gha_mlops.errors import GhaMlopsError

ENV_VAR = "GHA_MLOPS_GITHUB_OPENAPI"
DEFAULT_RELATIVE_PATH = Path(".ci/npm/node_modules/@octokit/openapi/generated/api.github.com.json")
WEBHOOK_EXAMPLES_ENV_VAR = "GHA_MLOPS_GITHUB_WEBHOOK_EXAMPLES"
WEBHOOK_EXAMPLES_RELATIVE_PATH = Path(
    ".ci/npm/node_modules/@octokit/webhooks-examples/api.github.com/index.json"
)
_SPEC_URI = "urn:gha-mlops:github-openapi"
# Path parameters whose values contain slashes on GitHub (``heads/main``, ``docs/a.md``).
_SLASHY_PARAMS = frozenset({"ref", "path"})
_MAX_MESSAGE = 600


class SpecNotFoundError(GhaMlopsError):
    """GitHub's OpenAPI description is not installed where the emulator looks for it."""


def _repo_root() -> Path:
    # src/gha_mlops/testing/github_emulator/_spec.py -> the repository root (a source checkout).
    return Path(__file__).resolve().parents[4]


def find_spec_file(env: Mapping[str, str] | None = None) -> Path:
    """Return the path of ``api.github.com.json``: ``$GHA_MLOPS_GITHUB_OPENAPI`` if set, else
    the npm install under the repository's ``.ci/npm``. Raises ``SpecNotFoundError`` if absent."""
    return _find_npm_file(ENV_VAR, DEFAULT_RELATIVE_PATH, "GitHub's OpenAPI description", env)


def find_webhook_examples_file(env: Mapping[str, str] | None = None) -> Path:
    """Return the path of ``@octokit/webhooks-examples``' ``api.github.com/index.json``:
    ``$GHA_MLOPS_GITHUB_WEBHOOK_EXAMPLES`` if set, else the npm install under ``.ci/npm``."""
    return _find_npm_file(
        WEBHOOK_EXAMPLES_ENV_VAR, WEBHOOK_EXAMPLES_RELATIVE_PATH, "GitHub's webhook examples", env
    )


def _find_npm_file(var: str, default: Path, what: str, env: Mapping[str, str] | None) -> Path:
    env = os.environ if env is None else env
    configured = env.get(var)
    path = Path(configured) if configured else _repo_root() / default
    if not path.is_file():
        raise SpecNotFoundError(
            f"{what} was not found at {path}",
            hint=(
                "install it with `npm ci --prefix .ci/npm` (or `npm install --prefix .ci/npm "
                "@octokit/openapi @octokit/webhooks-examples`) from the repository root, or "
                f"point {var} at the file"
            ),
        )
    return path


def _openapi_to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """``json.load`` object hook: rewrite OpenAPI 3.0 ``nullable`` into JSON Schema."""
    if node.get("nullable") is True:
        rest = {k: v for k, v in node.items() if k != "nullable"}
        annotations: dict[str, Any] = {
            k: rest.pop(k) for k in ("description", "example", "title") if k in rest
        }
        return {"anyOf": [{"type": "null"}, rest], **annotations}
    return node


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class Parameter:
    """A path or query parameter of an operation, with the location of its schema."""

    name: str
    location: str  # "path" or "query"
    required: bool
    schema: dict[str, Any]
    schema_pointer: str


@dataclass(frozen=True)
class Operation:
    """One operation of the description (a method on a path template)."""

    method: str
    template: str
    operation_id: str
    parameters: tuple[Parameter, ...]
    body_required: bool
    body_pointer: str | None  # the JSON request body's schema, if the operation takes one
    responses: Mapping[str, Mapping[str, str]]  # status -> content type -> schema pointer
    pattern: re.Pattern[str] = field(compare=False)
    slashy_pattern: re.Pattern[str] = field(compare=False)

    @property
    def literal_segments(self) -> int:
        return sum(1 for seg in self.template.split("/") if seg and "{" not in seg)


def _compile(template: str, slashy: bool) -> re.Pattern[str]:
    out = []
    for piece in re.split(r"(\{[^}]+\})", template):
        if piece.startswith("{") and piece.endswith("}"):
            name = piece[1:-1]
            rx = ".+" if slashy and name in _SLASHY_PARAMS else "[^/]+"
            out.append(f"(?P<{re.sub(r'[^0-9A-Za-z_]', '_', name)}>{rx})")
        else:
            out.append(re.escape(piece))
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class SchemaError:
    """One way an instance fails its schema, worded for a test failure."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class OpenApiSpec:
    """The parsed description, its operations and lazily built validators (thread-safe)."""

    def __init__(self, document: dict[str, Any], source: Path | None = None) -> None:
        self.document = document
        self.source = source
        self._registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, DRAFT202012.create_resource(document)
        )
        self._validators: dict[str, Draft202012Validator] = {}
        self._lock = threading.Lock()
        self.operations = self._build_operations()
        self._by_first_segment: dict[str, list[Operation]] = {}
        for op in self.operations:
            first = op.template.split("/")[1] if op.template.count("/") else ""
            self._by_first_segment.setdefault(first, []).append(op)

    @cached_property
    def operations_by_id(self) -> dict[str, Operation]:
        return {op.operation_id: op for op in self.operations}

    def _deref(self, node: Any, pointer: str) -> tuple[Any, str]:
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"external $ref {ref!r} in the OpenAPI description")
            pointer = ref[1:]
            node = self.document
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, pointer

    def _build_operations(self) -> list[Operation]:
        ops: list[Operation] = []
        for template, item in self.document["paths"].items():
            shared = item.get("parameters", [])
            for method, raw in item.items():
                if method not in {"get", "post", "put", "patch", "delete", "head"}:
                    continue
                base = _pointer("paths", template, method)
                params: dict[tuple[str, str], Parameter] = {}
                for i, p in enumerate([*shared, *raw.get("parameters", [])]):
                    where = _pointer("paths", template) if i < len(shared) else base
                    node, ptr = self._deref(
                        p, f"{where}/parameters/{i if i < len(shared) else i - len(shared)}"
                    )
                    if node["in"] not in {"path", "query"}:
                        continue
                    params[(node["name"], node["in"])] = Parameter(
                        name=node["name"],
                        location=node["in"],
                        required=bool(node.get("required", False)),
                        schema=node.get("schema", {}),
                        schema_pointer=f"{ptr}/schema",
                    )
                body_pointer = None
                body_required = False
                if "requestBody" in raw:
                    body, ptr = self._deref(raw["requestBody"], f"{base}/requestBody")
                    body_required = bool(body.get("required", False))
                    content = body.get("content", {})
                    for ctype in content:
                        if "json" in ctype:
                            body_pointer = f"{ptr}/content/{_pointer(ctype)[1:]}/schema"
                            break
                responses: dict[str, dict[str, str]] = {}
                for status, resp in raw.get("responses", {}).items():
                    node, ptr = self._deref(resp, f"{base}/responses/{status}")
                    responses[status] = {
                        ctype: f"{ptr}/content/{_pointer(ctype)[1:]}/schema"
                        for ctype, media in node.get("content", {}).items()
                        if "schema" in media
                    }
                ops.append(
                    Operation(
                        method=method.upper(),
                        template=template,
                        operation_id=raw["operationId"],
                        parameters=tuple(params.values()),
                        body_required=body_required,
                        body_pointer=body_pointer,
                        responses=responses,
                        pattern=_compile(template, slashy=False),
                        slashy_pattern=_compile(template, slashy=True),
                    )
                )
        return ops

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """Find the operation for ``method path``.

        Returns ``(operation, path parameters, path_known)``; ``operation`` is None when no
        template matches (``path_known`` False) or the template has no such method (True).
        The most specific template wins (most literal segments), and only ``ref``/``path``
        parameters may hold slashes, tried after every template without them.
        """
        first = path.split("/")[1] if path.count("/") else ""
        candidates = self._by_first_segment.get(first, [])
        for slashy in (False, True):
            hits: list[tuple[Operation, re.Match[str]]] = []
            for op in candidates:
                m = (op.slashy_pattern if slashy else op.pattern).match(path)
                if m:
                    hits.append((op, m))
            if not hits:
                continue
            best = max(op.literal_segments for op, _ in hits)
            hits = [(op, m) for op, m in hits if op.literal_segments == best]
            for op, m in hits:
                if op.method == method:
                    names = [p.name for p in op.parameters if p.location == "path"]
                    groups = m.groupdict()
                    return op, {n: groups[re.sub(r"[^0-9A-Za-z_]", "_", n)] for n in names}, True
            return None, {}, True
        return None, {}, False

    def validator(self, pointer: str) -> Draft202012Validator:
        """A validator for the schema at ``pointer`` (a JSON pointer into the document)."""
        with self._lock:
            found = self._validators.get(pointer)
            if found is None:
                ref = f"{_SPEC_URI}#{quote(pointer, safe='/~')}"
                found = Draft202012Validator({"$ref": ref}, registry=self._registry)
                self._validators[pointer] = found
            return found

    def errors(self, pointer: str, instance: Any) -> list[SchemaError]:
        """Every way ``instance`` fails the schema at ``pointer``; the best one first."""
        errs = list(self.validator(pointer).iter_errors(instance))
        if not errs:
            return []
        first = best_match(errs)
        ordered = [first, *(e for e in errs if e is not first)]
        return [SchemaError(where=e.json_path, message=_shorten(e.message)) for e in ordered[:5]]


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


_CACHE: dict[Path, OpenApiSpec] = {}
_CACHE_LOCK = threading.Lock()


def load_spec(path: Path | None = None) -> OpenApiSpec:
    """Parse the description once per process (about a second) and return the shared copy."""
    resolved = (path or find_spec_file()).resolve()
    with _CACHE_LOCK:
        spec = _CACHE.get(resolved)
        if spec is None:
            with resolved.open("rb") as fh:
                document = json.load(fh, object_hook=_openapi_to_json_schema)
            spec = OpenApiSpec(document, source=resolved)
            _CACHE[resolved] = spec
        return spec


_WEBHOOK_EXAMPLES: dict[Path, dict[str, dict[str, Any]]] = {}


def load_workflow_job_examples(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The ``workflow_job`` webhook examples by action (``queued``, ``in_progress``,
    ``completed``, ``waiting``): per action, the first example whose job has that status and
    the fields of today's payloads (``run_attempt``, ``workflow_name``). Parsed once."""
    resolved = (path or find_webhook_examples_file()).resolve()
    with _CACHE_LOCK:
        found = _WEBHOOK_EXAMPLES.get(resolved)
        if found is None:
            with resolved.open("rb") as fh:
                events = json.load(fh)
            examples = next(e["examples"] for e in events if e["name"] == "workflow_job")
            found = {}
            for ex in sorted(examples, key=lambda e: "run_attempt" not in e["workflow_job"]):
                if ex["workflow_job"]["status"] == ex["action"]:
                    found.setdefault(ex["action"], ex)
            _WEBHOOK_EXAMPLES[resolved] = found
        return found
