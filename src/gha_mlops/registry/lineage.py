"""What a version's tag message says: the model's lineage, as JSON after a headline.

A version tag's message is a one-line headline, a blank line, then one JSON object::

    Register digits 1.2.0 from run 20260102-101500-ab12cd

    {"schema": "gha-mlops/lineage@1", "run_id": "...", "commit": "...", ...}

GTO reads a tag message only as text (``message`` in ``gto show --json``), so anything goes
there; this module writes the form above and reads any message without trusting it: a message
over :data:`MAX_MESSAGE_BYTES`, without JSON, or whose JSON is not a lineage reads as a lineage
*unknown* (``problem`` says why), never an error.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "gha-mlops/lineage@1"
MAX_MESSAGE_BYTES = 256 * 1024  # a lineage is a few KiB; more is not ours
MAX_METRICS = 1000
MAX_IMAGES = 100


@dataclass(frozen=True)
class ImageRef:
    """A container image of a version: ``image`` (``reg:5000/digits:1.2.0``) and its
    manifest ``digest`` (``sha256:...``)."""

    image: str
    digest: str


@dataclass(frozen=True)
class ProfileRef:
    """The reference profile of a version (gha_mlops.monitor.profile), written when it was
    packaged: the sha256 of its canonical bytes and the rows it summarises. The bytes are in
    the workspace's content cache and in the image (``/model/profile.json``)."""

    sha256: str
    rows: int


@dataclass(frozen=True)
class Lineage:
    """Where a version came from: the run, its commit, the model file (path in the workspace
    and sha256), the datasets (name or path -> version or digest), a hash of the run's params
    values, the run's metrics, the model's signature (``Signature.to_json()`` form, None when
    not derived), the images built from it and its reference profile (git notes, see
    ``Registry.record_image`` and ``Registry.record_profile``).
    ``problem`` is None for a lineage read whole; otherwise it says why the fields are empty."""

    run_id: str
    commit: str
    model_path: str
    model_sha256: str
    datasets: dict[str, str] = field(default_factory=dict)
    params_hash: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    signature: dict[str, Any] | None = None
    images: tuple[ImageRef, ...] = ()
    problem: str | None = None
    profile: ProfileRef | None = None

    @property
    def known(self) -> bool:
        return self.problem is None

    def signature_digest(self) -> str | None:
        """sha256 of the signature's canonical JSON (what ``Signature.digest`` computes)."""
        if self.signature is None:
            return None
        return hashlib.sha256(canonical(self.signature)).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the tag message (images are not in it: they live in notes)."""
        return {"schema": SCHEMA, "run_id": self.run_id, "commit": self.commit,
                "model": {"path": self.model_path, "sha256": self.model_sha256},
                "datasets": dict(sorted(self.datasets.items())),
                "params_hash": self.params_hash, "metrics": dict(sorted(self.metrics.items())),
                "signature": self.signature}


def unknown(problem: str) -> Lineage:
    """A lineage that could not be read, saying why."""
    return Lineage(run_id="", commit="", model_path="", model_sha256="", problem=problem)


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def params_hash(values: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a run's params values (``--set`` overrides applied):
    a comment in the params file does not change it, a value does."""
    return hashlib.sha256(canonical(dict(values))).hexdigest()


def message(headline: str, lineage: Lineage) -> str:
    """The tag message for ``lineage``."""
    return f"{headline}\n\n{json.dumps(lineage.to_json(), indent=1, sort_keys=False)}\n"


def read_message(text: str) -> Lineage:
    """The lineage in a tag message (see the module's docstring); never raises."""
    if len(text) > MAX_MESSAGE_BYTES:
        return unknown(f"the tag message is over {MAX_MESSAGE_BYTES} bytes")
    start = text.find("\n{")
    start = 0 if text.startswith("{") else start + 1 if start >= 0 else -1
    if start < 0:
        return unknown("the tag message holds no lineage JSON (not written by gha-mlops?)")
    try:
        doc, _end = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return unknown("the tag message's lineage is not valid JSON")
    try:
        return _from_json(doc)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        return unknown(f"the tag message's lineage does not have the form gha-mlops writes "
                       f"({str(err)[:120]})")


def _str(doc: Mapping[str, Any], key: str, limit: int = 4096) -> str:
    value = doc[key]
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{key} is not a string")
    return value


def _from_json(doc: Any) -> Lineage:
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"schema is not {SCHEMA}")
    model = doc["model"]
    datasets = doc.get("datasets") or {}
    metrics = doc.get("metrics") or {}
    if not isinstance(model, dict) or not isinstance(datasets, dict) or not isinstance(
            metrics, dict) or len(metrics) > MAX_METRICS or len(datasets) > MAX_METRICS:
        raise ValueError("model, datasets or metrics is not an object of the right size")
    signature = doc.get("signature")
    if signature is not None and not isinstance(signature, dict):
        raise ValueError("signature is not an object")
    return Lineage(
        run_id=_str(doc, "run_id", 200), commit=_str(doc, "commit", 64),
        model_path=_str(model, "path"), model_sha256=_str(model, "sha256", 64),
        datasets={str(k): str(v) for k, v in datasets.items()},
        params_hash=_str(doc, "params_hash", 64),
        metrics={str(k): float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)
                 and math.isfinite(v)},
        signature=signature)


def read_images(note: str) -> tuple[ImageRef, ...]:
    """The images of a version's git note: one JSON object per line (``{"image", "digest"}``),
    later lines first out of duplicates; lines that are not such an object are skipped."""
    seen: dict[tuple[str, str], ImageRef] = {}
    for line in note[:MAX_MESSAGE_BYTES].splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if (isinstance(doc, dict) and isinstance(doc.get("image"), str)
                and isinstance(doc.get("digest"), str)):
            ref = ImageRef(doc["image"][:500], doc["digest"][:200])
            seen[(ref.image, ref.digest)] = ref
    return tuple(seen.values())[-MAX_IMAGES:]


def read_profile(note: str) -> ProfileRef | None:
    """The reference profile a version's git note names (a line ``{"profile": {"sha256",
    "rows"}}``; the last such line wins; lines of another form are skipped)."""
    found = None
    for line in note[:MAX_MESSAGE_BYTES].splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        ref = doc.get("profile") if isinstance(doc, dict) else None
        if (isinstance(ref, dict) and isinstance(ref.get("sha256"), str)
                and len(ref["sha256"]) == 64
                and all(c in "0123456789abcdef" for c in ref["sha256"])
                and isinstance(ref.get("rows"), int) and not isinstance(ref["rows"], bool)
                and 0 < ref["rows"] <= 10**12):
            found = ProfileRef(ref["sha256"], ref["rows"])
    return found
