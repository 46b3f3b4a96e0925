"""``gha-mlops package``: options in, :func:`gha_mlops.packaging.service.package`, the image
and how to run it out (and, in GitHub Actions, ``image``, ``image-id`` and ``digest`` as step
outputs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from gha_mlops import bootstrap
from gha_mlops.errors import missing_extra
from gha_mlops.gha import Actions
from gha_mlops.gha.safe import log_text
from gha_mlops.packaging.service import DEFAULT_BASE, PackageRequest, PackageResult
from gha_mlops.packaging.service import package as package_model


def _source() -> str | None:
    """The repository's URL in GitHub Actions (the image's source label), else None."""
    server, repo = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    return f"{server.rstrip('/')}/{repo}" if server and repo else None


@click.command()
@click.argument("model")
@click.option("--tag", "-t", default=None, metavar="IMAGE",
              help="The image reference: REGISTRY/PATH[:TAG] (no TAG: the model's version), "
              "or REGISTRY/PATH/ ending in '/' to name only where <name>:<version> goes. "
              "Default: gha-mlops/<name>:<version>.")
@click.option("--base", default=DEFAULT_BASE, show_default=True, metavar="IMAGE",
              help="The base image: it must be on the Docker daemon already (no pull), with "
              "CPython 3 on glibc as python3.")
@click.option("--push", is_flag=True,
              help="Push the image and record its digest on the model version (a git note).")
@click.option("--workspace", "-C", "workspace", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The workspace (the directory of mlops.yaml).")
@click.option("--wheel-cache", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where the wheels for the image's Python are kept "
              "[default: $XDG_CACHE_HOME/gha-mlops/wheels].")
def package(model: str, tag: str | None, base: str, push: bool, workspace: Path,
            wheel_cache: Path | None) -> None:
    """Build a container image that serves MODEL over the Open Inference Protocol (V2 REST).

    MODEL is NAME (its latest version), NAME@VERSION or NAME#STAGE. The model is exported to
    ONNX (checked against the original on the registry's check_data), and the image holds
    only numpy, onnxruntime, the server and the model (last layer), runs as a non-root user
    on port 8080 with a HEALTHCHECK, and carries a CycloneDX SBOM at /sbom/cyclonedx.json.
    The Docker daemon is the one DOCKER_HOST names (default: the local socket).
    """
    engine_factory = bootstrap.image_engine(os.environ)
    if engine_factory is None:
        raise missing_extra("docker", "package")
    with engine_factory() as engine:
        result = package_model(
            workspace, PackageRequest(ref=model, tag=tag, base=base, push=push,
                                      source=_source()),
            engine=engine, wheel_cache=wheel_cache or bootstrap.wheel_cache(os.environ),
            progress=lambda line: click.echo(log_text(line), err=True))
    actions = Actions(os.environ)
    actions.set_output("image", result.image)
    actions.set_output("image-id", result.image_id)
    actions.set_output("digest", result.digest or "")
    _render(result)


def _render(result: PackageResult) -> None:
    click.echo(click.style("built", fg="green", bold=True)
               + f" {log_text(result.image)} ({result.name} {result.version})")
    click.echo(f"  image id: {result.image_id}")
    if result.digest:
        repository = result.image.rpartition(":")[0]
        click.echo(f"  pushed:   {repository}@{result.digest} (recorded on the model version)")
    click.echo(f"  contents: {', '.join(result.sbom_components)}")
    first = result.signature["inputs"][0]
    shape = [1 if dim < 0 else dim for dim in first["shape"]]
    count = 1
    for dim in shape:
        count *= dim
    body = {"inputs": [{"name": first["name"], "shape": shape, "datatype": first["datatype"],
                        "data": [0] * min(count, 16)}]}
    click.echo("run it:")
    click.echo(f"  docker run --rm -p 8080:8080 {result.image}")
    click.echo("query it (Open Inference Protocol V2):")
    click.echo("  curl -s localhost:8080/v2/health/ready")
    if count <= 16:
        click.echo(f"  curl -s localhost:8080/v2/models/{result.name}/infer "
                   f"-H 'content-type: application/json' -d '{json.dumps(body)}'")
    else:
        click.echo(f"  curl -s localhost:8080/v2/models/{result.name}  # the signature; POST "
                   f".../infer with {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", "
                   f"\"data\"}}]}}")
