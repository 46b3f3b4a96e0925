"""The demo's registry and packaging lines (:mod:`gha_mlops.demo.release`)."""

from __future__ import annotations

import click

from gha_mlops.demo.release import MODEL, Release
from gha_mlops.gha.safe import log_text


def show_release(release: Release, cd: str) -> None:
    """Say what the demo registered and packaged, and how to run and query the image."""
    version = release.version
    if version is not None:
        how = "registered" if release.registered_now else "already registered (this commit)"
        click.echo(f"  model version  {MODEL} {version.version}, {how}: git tag {version.tag}")
    image = release.image
    if image is not None:
        click.echo(f"  image          {log_text(image.image)}  (Open Inference Protocol V2 on "
                   "port 8080)")
        click.echo("")
        click.echo("run and query the model:")
        click.echo(f"  docker run --rm -d -p 8080:8080 --name digits {log_text(image.image)}")
        click.echo("  curl -s localhost:8080/v2/health/ready && "
                   f"curl -s localhost:8080/v2/models/{MODEL}")
        click.echo(f"  {cd} && python src/query.py localhost:8080   # one test image -> digit")
    if release.note:
        click.echo(f"  {release.note}")
    if version is not None:
        click.echo("")
        click.echo("the registry (git tags, GTO's grammar):")
        click.echo(f"  {cd} && gha-mlops model show {MODEL}            # lineage: run, data, "
                   "metrics, images")
        click.echo(f"  {cd} && gha-mlops model promote {MODEL} {version.version} --stage prod"
                   "   # the champion of reports")
        if image is None:
            click.echo(f"  {cd} && gha-mlops package {MODEL}               # the serving image "
                       "(needs Docker)")
