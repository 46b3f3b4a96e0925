"""Stand-in for ``actions/attest-build-provenance`` v4, for tests under ``act`` only.

The real action signs an in-toto statement (SLSA build provenance) with a Sigstore certificate
minted from the job's OIDC token, stores it through GitHub's attestations API and, with
``push-to-registry``, pushes it to the image's registry beside the image. None of that can be
reached from the test machines. This stand-in keeps the part a workflow can get wrong:

* the subject is checked as the real action checks it: exactly one of ``subject-path``,
  ``subject-digest`` and ``subject-checksums``; a digest is ``algorithm:hex`` (64 hex digits for
  sha256); ``subject-name`` is required with a digest; ``push-to-registry`` needs a digest and a
  fully-qualified image name (without a tag, the form the real action documents);
* with ``push-to-registry``, the subject must exist: the image's manifest is looked up by its
  digest in its registry (plain HTTP for loopback registries, as the Docker daemon does), so a
  digest that is not the pushed image's fails the step;
* the statement (unsigned) is written to ``bundle-path``, and every call's inputs are appended to
  ``$ACT_HARNESS_OUT/attest-build-provenance.jsonl`` (else ``$RUNNER_TEMP``) for the test.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import json
import os
import re
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from standins import env_path, fail, info, inp, lines, resolve, set_output

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
_DIGEST = re.compile(r"^(?P<alg>[a-z0-9]+):(?P<hex>[0-9a-f]+)$")
_HEX_LENGTH = {"sha256": 64, "sha512": 128, "sha1": 40}
_MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def _digest(value: str) -> dict[str, str]:
    m = _DIGEST.match(value)
    if not m or len(m["hex"]) != _HEX_LENGTH.get(m["alg"], len(m["hex"])):
        fail(f'subject-digest must be in the format "sha256:<hex-digest>", got "{value}"')
    return {m["alg"]: m["hex"]}


def _subjects() -> list[dict[str, object]]:
    given = [k for k in ("subject-path", "subject-digest", "subject-checksums") if inp(k)]
    if not given:
        fail("One of subject-path, subject-digest, or subject-checksums must be provided")
    if len(given) > 1:
        fail("Only one of subject-path, subject-digest, or subject-checksums may be provided")
    name = inp("subject-name")
    if inp("subject-digest"):
        if not name:
            fail("subject-name must be provided when using subject-digest")
        return [{"name": name, "digest": _digest(inp("subject-digest"))}]
    if inp("subject-checksums"):
        found = []
        for line in lines(resolve(inp("subject-checksums")).read_text()):
            hexdigest, _, file = line.partition(" ")
            found.append({"name": file.strip().lstrip("*"), "digest": {"sha256": hexdigest}})
        return found
    paths = [Path(p) for pattern in lines(inp("subject-path"))
             for p in sorted(glob.glob(str(resolve(pattern)))) if Path(p).is_file()]
    if not paths:
        fail(f"Could not find subject at path {inp('subject-path')}")
    return [{"name": name or p.name, "digest": {"sha256": hashlib.sha256(p.read_bytes())
                                                 .hexdigest()}} for p in paths]


def _split_image(name: str) -> tuple[str, str]:
    """(registry host, repository) of a fully-qualified image name without tag or digest."""
    host, sep, repository = name.partition("/")
    if not sep or not ("." in host or ":" in host or host == "localhost"):
        fail(f"subject-name must be a fully-qualified image name (REGISTRY/REPOSITORY) to push "
             f"to a registry, got '{name}'")
    if "@" in repository or ":" in repository:
        fail(f"subject-name must name the image without a tag or digest, got '{name}'")
    return host, repository


def _check_in_registry(name: str, digest: str) -> None:
    host, repository = _split_image(name)
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    loopback = hostname in ("localhost", "[::1]") or hostname.startswith("127.")
    conn: http.client.HTTPConnection = (http.client.HTTPConnection(host, timeout=30) if loopback
                                        else http.client.HTTPSConnection(host, timeout=30))
    try:
        conn.request("HEAD", f"/v2/{repository}/manifests/{digest}",
                     headers={"Accept": _MANIFEST_TYPES})
        status = conn.getresponse().status
    except OSError as err:
        fail(f"stand-in attest: cannot reach the registry {host}: {err}")
    finally:
        conn.close()
    if status == 401:
        fail(f"stand-in attest: registry {host} asks for credentials; only open loopback "
             "registries are supported")
    if status != 200:
        fail(f"Failed to push attestation: image {name}@{digest} not found in the registry "
             f"(HTTP {status})")
    info(f"stand-in attest: {name}@{digest} exists in {host}")


def main() -> None:
    subjects = _subjects()
    push = inp("push-to-registry", "false").lower() == "true"
    if push:
        if not inp("subject-digest"):
            fail("push-to-registry requires subject-name and subject-digest")
        _check_in_registry(inp("subject-name"), inp("subject-digest"))
    env = os.environ
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {"buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {
                "ref": env.get("GITHUB_REF", ""), "repository":
                f"{env.get('GITHUB_SERVER_URL', '')}/{env.get('GITHUB_REPOSITORY', '')}",
                "path": env.get("GITHUB_WORKFLOW_REF", "")}},
            "resolvedDependencies": [{"digest": {"gitCommit": env.get("GITHUB_SHA", "")}}]}},
        "standin": "unsigned: written by the test stand-in of actions/attest-build-provenance",
    }
    runner_temp = env_path("RUNNER_TEMP")
    attestation_id = uuid.uuid4().hex[:12]
    bundle = runner_temp / f"attestation-{attestation_id}.json"
    bundle.write_text(json.dumps(statement, indent=2))
    record = {"subject-name": inp("subject-name"), "subject-digest": inp("subject-digest"),
              "subject-path": inp("subject-path"), "push-to-registry": push,
              "subjects": subjects, "bundle-path": str(bundle)}
    log = Path(env.get("ACT_HARNESS_OUT") or runner_temp) / "attest-build-provenance.jsonl"
    with log.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    url = (f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/"
           f"{env.get('GITHUB_REPOSITORY', '')}/attestations/{attestation_id}")
    set_output("bundle-path", str(bundle))
    set_output("attestation-id", attestation_id)
    set_output("attestation-url", url)
    if inp("show-summary", "true").lower() == "true" and env.get("GITHUB_STEP_SUMMARY"):
        with open(env["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as fh:
            fh.write(f"## Attestation created\n\n- [{subjects[0]['name']}]({url})\n")
    info(f"Attestation created for {len(subjects)} subject(s): {url}")


if __name__ == "__main__":
    main()
