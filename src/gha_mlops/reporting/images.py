"""Where a published report's pictures live: the :class:`ImageHost` port and its adapters.

- :class:`AssetsBranchHost`: committed to a branch of the repository through the
  :class:`~gha_mlops.github.port.GitHubPort` (one commit per report), linked by commit-SHA
  URLs, which never change: a later report never alters an earlier comment's pictures.
- :class:`BucketImageHost`: put in the user's bucket (``--images s3://BUCKET/PREFIX``) through
  an object store (the data layer's S3 adapter, which alone imports boto3), each under a name
  made of its content hash, as immutable as a commit-SHA URL.

A fake for tests ships in :mod:`gha_mlops.testing.images`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gha_mlops._closing import Closing
from gha_mlops.errors import UsageError
from gha_mlops.github.port import GitHubPort
from gha_mlops.reporting.compare import MAX_IMAGE_BYTES
from gha_mlops.reporting.markdown import sanitize_report_id

MAX_UPLOAD_BYTES = MAX_IMAGE_BYTES
"""The largest picture a host accepts: the largest a report embeds (a report shows charts,
not data sets); checked again here because a stored report's images come from an artifact."""


class ImageHost(Closing, Protocol):
    """Puts a report's pictures where readers of the pull request can see them; ``close()``
    releases its connections (the host is not used afterwards)."""

    def upload(self, images: Mapping[str, bytes]) -> dict[str, str]:
        """Store ``images`` (file name -> bytes, each at most :data:`MAX_UPLOAD_BYTES`) and
        return file name -> the URL it is shown from; the URL never shows other bytes later.
        Raises a :class:`~gha_mlops.errors.GhaMlopsError` when the host refuses them."""
        ...


def check_sizes(images: Mapping[str, bytes]) -> None:
    """Refuse a picture over :data:`MAX_UPLOAD_BYTES` before anything is uploaded."""
    for name, data in images.items():
        if len(data) > MAX_UPLOAD_BYTES:
            raise UsageError(f"image {name} is {len(data) >> 20} MiB, more than the "
                             f"{MAX_UPLOAD_BYTES >> 20} MiB a report may show",
                             hint="make the plot smaller (fewer pixels or a lower dpi)")


class AssetsBranchHost(ImageHost):
    """Pictures committed to ``branch`` of ``repo`` in folder ``folder`` (the report id and
    the head commit), linked by the commit's SHA; :attr:`commit` is the last commit made."""

    def __init__(self, port: GitHubPort, repo: str, branch: str, folder: str, *,
                 server_url: str = "https://github.com", message: str = "") -> None:
        self._port = port
        self._repo = repo
        self._branch = branch
        self._folder = folder
        self._server = server_url.rstrip("/")
        self._message = message or f"gha-mlops report images ({folder})"
        self.commit = ""

    def upload(self, images: Mapping[str, bytes]) -> dict[str, str]:
        """See :meth:`ImageHost.upload`: one commit holding every image."""
        check_sizes(images)
        files = {f"{self._folder}/{name}": data for name, data in images.items()}
        self.commit = self._port.commit_files(self._repo, self._branch, files, self._message)
        return {name: f"{self._server}/{self._repo}/raw/{self.commit}/{self._folder}/{name}"
                for name in images}

    def close(self) -> None:
        """Nothing to release: the GitHub client belongs to whoever built it."""


class Bucket(Protocol):
    """What :class:`BucketImageHost` needs of an object store (the data layer's stores)."""

    def upload_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""
        ...


@dataclass(frozen=True)
class BucketLocation:
    """``--images s3://BUCKET/PREFIX`` parsed: the store's URL and the public URL of its
    prefix (``--images-base-url``, else the bucket's S3 URL on ``endpoint``)."""

    url: str
    public_root: str

    @classmethod
    def parse(cls, url: str, base_url: str | None, endpoint: str | None) -> BucketLocation:
        """Validate ``url`` (an ``s3://BUCKET[/PREFIX]`` URL) or raise a UsageError."""
        if not url.startswith("s3://") or len(url) <= 5:
            raise UsageError(f"--images must be an s3://BUCKET/PREFIX URL, got {url!r}",
                             hint="leave it out to keep the plots on the gha-mlops-assets "
                                  "branch")
        bucket, _, prefix = url[5:].partition("/")
        root = (base_url or (f"{endpoint.rstrip('/')}/{bucket}" if endpoint else
                             f"https://{bucket}.s3.amazonaws.com")
                + (f"/{prefix.strip('/')}" if prefix.strip("/") and not base_url else ""))
        return cls(url, root.rstrip("/"))


class BucketImageHost(ImageHost):
    """Pictures put in a bucket, each under ``<report id>/<sha256[:16]>-<name>``. The store
    is opened (``open_bucket``) on the first upload: opening it imports the S3 SDK, which a
    report that publishes nothing never needs."""

    def __init__(self, location: BucketLocation, report_id: str,
                 open_bucket: Callable[[], Bucket]) -> None:
        self._location = location
        self._prefix = sanitize_report_id(report_id)
        self._open = open_bucket
        self._bucket: Bucket | None = None

    def upload(self, images: Mapping[str, bytes]) -> dict[str, str]:
        """See :meth:`ImageHost.upload`."""
        check_sizes(images)
        if self._bucket is None:
            self._bucket = self._open()
        urls = {}
        for name, data in images.items():
            key = f"{self._prefix}/{hashlib.sha256(data).hexdigest()[:16]}-{name}"
            self._bucket.upload_bytes(key, data)
            urls[name] = f"{self._location.public_root}/{key}"
        return urls

    def close(self) -> None:
        """Close the store's connections, if it was opened."""
        bucket, self._bucket = self._bucket, None
        close = getattr(bucket, "close", None)
        if close is not None:
            close()
