"""An in-memory :class:`~gha_mlops.reporting.images.ImageHost`, for tests of whatever
publishes pictures (it ships in the package, as the GitHub emulator does)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from gha_mlops.reporting.images import ImageHost, check_sizes


class FakeImageHost(ImageHost):
    """Keeps every uploaded picture in :attr:`stored` (URL -> bytes) and answers
    ``https://images.example/<sha256[:16]>/<name>`` URLs; :attr:`closed` says whether
    :meth:`close` was called. The same size limit as the real hosts applies."""

    def __init__(self, base_url: str = "https://images.example") -> None:
        self.base_url = base_url.rstrip("/")
        self.stored: dict[str, bytes] = {}
        self.uploads = 0
        self.closed = False

    def upload(self, images: Mapping[str, bytes]) -> dict[str, str]:
        """See :meth:`ImageHost.upload`."""
        if self.closed:
            raise RuntimeError("upload after close")
        check_sizes(images)
        self.uploads += 1
        urls = {}
        for name, data in images.items():
            url = f"{self.base_url}/{hashlib.sha256(data).hexdigest()[:16]}/{name}"
            self.stored[url] = bytes(data)
            urls[name] = url
        return urls

    def close(self) -> None:
        """Mark the host closed."""
        self.closed = True
