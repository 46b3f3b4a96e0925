"""Read-only ``https://`` sources: one file a dataset pointer pins by sha256 (``source:``).

The download lands beside the cache and resumes where it stopped (``Range``), on a retry or on
a later call; the file enters the cache only once its hash matched (the resumable, verified
download of :mod:`gha_mlops.data.transfer`). The network stack is imported only when a
download runs.
"""

from __future__ import annotations

from pathlib import Path

from gha_mlops.data.ports import TransientStoreError
from gha_mlops.data.transfer import Progress, Tally, resumable_download
from gha_mlops.errors import GhaMlopsError, RemoteError
from gha_mlops.store.hashing import CHUNK
from gha_mlops.store.objects import ContentCache

__all__ = ["fetch_url"]


class _Dropped(Exception):
    """An HTTP transfer that may succeed when resumed (internal)."""


def fetch_url(url: str, sha256: str, cache: ContentCache, *, dest_tmp: Path | None = None,
              timeout: float = 60.0, progress: Progress | None = None) -> None:
    """Download one file from a read-only ``https://`` (or ``http://``) source pinned by
    ``sha256`` into ``cache`` (nothing to do when it is there already).

    Bytes land in ``dest_tmp/<sha256>.partial`` (``cache.tmp`` by default; it must be on the
    cache's filesystem, as the verified file is renamed into the cache); a dropped
    connection is resumed with a ``Range`` request where the server supports it (from the
    start otherwise), on this call's retries or on a later call. The file enters the cache only
    after its hash matched: a mismatch deletes the partial and raises
    :class:`DataIntegrityError`; a server that cannot be reached, answers an error, or keeps
    dropping the connection raises :class:`RemoteError`.
    """
    scheme = url.partition("://")[0].lower()
    if scheme not in ("http", "https"):
        raise RemoteError(f"cannot download {url!r}: only https:// (and http://) sources can "
                          "be pinned by sha256", hint="use an https:// URL")
    if len(sha256) != 64 or not set(sha256) <= set("0123456789abcdef"):
        raise GhaMlopsError(f"{sha256!r} is not a sha256 (64 lowercase hex digits) for {url}",
                            hint="pin the source with the file's sha256 (sha256sum FILE)")
    if cache.object_path(sha256).exists():
        return
    tally = Tally(progress)

    def download(partial: Path, offset: int) -> None:
        try:
            _http_download(url, partial, offset, timeout, tally)
        except _Dropped as err:
            raise TransientStoreError(
                f"download of {url} failed after {partial.stat().st_size} bytes: {err}",
                hint="run again: the download resumes where it stopped") from None

    if resumable_download(cache, sha256, url, None, download, tally, dest_tmp):
        tally.done(1, 0)  # the bytes were counted as they arrived


def _http_download(url: str, partial: Path, offset: int, timeout: float, tally: Tally) -> None:
    """One GET of ``url`` from ``offset`` on, appended to ``partial``; raises :class:`_Dropped`
    for what a retry may fix and :class:`RemoteError` for what it will not."""
    # The network stack (http.client, ssl, email, urllib: ~20 ms) only when a download runs:
    # a no-op `gha-mlops run` imports this module's callers, and must not pay for it.
    import http.client
    import urllib.error
    import urllib.request

    headers = {"User-Agent": "gha-mlops", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            return  # nothing past offset: the partial is complete (the hash decides)
        if err.code in (408, 429) or err.code >= 500:
            raise _Dropped(f"HTTP {err.code}") from None
        raise RemoteError(f"{url} answered HTTP {err.code} {err.reason}",
                          hint="check the URL: the dataset may have moved; if it did, pin "
                               "its new location (and keep the sha256)") from None
    except urllib.error.URLError as err:
        raise _Dropped(f"cannot connect ({err.reason})") from None
    except (OSError, http.client.HTTPException) as err:
        raise _Dropped(str(err) or type(err).__name__) from None
    with resp:
        mode = "ab"
        if offset and resp.status != 206:
            mode = "wb"  # the server ignored Range: start over
        elif offset:
            first = resp.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
            if first != str(offset):
                with open(partial, "wb"):
                    pass  # start over on the next try
                raise _Dropped(f"the server resumed at {first!r}, not at byte {offset}")
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        got = 0
        with open(partial, mode) as fh:
            try:
                while chunk := resp.read(CHUNK):
                    fh.write(chunk)
                    got += len(chunk)
                    tally.done(0, len(chunk))
            except (OSError, http.client.HTTPException) as err:
                raise _Dropped(f"connection lost ({err or type(err).__name__})") from None
        if expected is not None and got < expected:
            raise _Dropped(f"connection closed after {got} of {expected} bytes")
