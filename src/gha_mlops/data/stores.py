"""Adapters for the :class:`~gha_mlops.data.ports.ObjectStore` port.

- :class:`LocalStore`: a directory (a shared disk or NAS), ``/path`` or ``file:///path``.
- :class:`S3Store`: an S3 bucket (or anything that speaks S3) through boto3, imported lazily;
  credentials come from the standard AWS chain (environment, profile, OIDC web identity,
  instance role), so a GitHub Actions job with ``aws-actions/configure-aws-credentials`` works.
- :class:`MemoryStore`: a dict, counting the requests and bytes it serves; shipped in the
  package so tests (ours and users') can exercise the transfer layer without a network.

:func:`open_store` turns a remote URL into one of them, :func:`open_remote` a remote declared
in ``mlops.yaml`` (the opener the data service is handed, through :mod:`gha_mlops.bootstrap`).
Each store is a context manager whose ``close()`` releases what it holds (an S3 client's
connections). Every failure a user can cause becomes a :class:`~gha_mlops.errors.RemoteError`
that names the remote and says what to do; failures worth retrying are
:class:`~gha_mlops.data.ports.TransientStoreError`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from gha_mlops._fs import temp_file
from gha_mlops.config._remotes import URL_FORMS as _URL_FORMS
from gha_mlops.config._remotes import remote_url_problem
from gha_mlops.config.model import Remote
from gha_mlops.data.ports import ObjectStore, TransientStoreError
from gha_mlops.errors import RemoteError, missing_extra

__all__ = ["LocalStore", "MemoryStore", "S3Store", "open_remote", "open_store"]

_CHUNK = 1 << 20


def _check_key(key: str) -> None:
    """Keys are relative POSIX paths without ``.``/``..`` parts (a programming error if not)."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")


def open_remote(remote: Remote, *, root: Path) -> ObjectStore:
    """The store of ``remote``, declared in the ``mlops.yaml`` of the workspace ``root``: a
    relative directory is taken relative to ``root``. A URL of no known form (``s3:/bucket``:
    one slash) raises :class:`RemoteError` naming the remote before it could be taken for a
    directory and created. The caller closes the store."""
    wrong = remote_url_problem(remote.url)
    if wrong is not None:
        raise RemoteError(f"remote {remote.name}: {wrong[0]}", hint=wrong[1])
    url = remote.url
    if "://" not in url and not os.path.isabs(url):
        url = str((root / url).resolve())  # a shared directory relative to the workspace
    return open_store(url, endpoint_url=remote.endpoint_url, region=remote.region,
                      profile=remote.profile)


def open_store(url: str, *, endpoint_url: str | None = None, region: str | None = None,
               profile: str | None = None) -> ObjectStore:
    """The store a remote URL names: ``s3://bucket[/prefix]``, ``file:///abs/path`` or a plain
    directory path (relative paths are taken as given, so callers resolve them first). A
    path that starts with ``word:`` (``s3:/bucket``, ``gs:bucket``) is not taken for a
    directory: see :func:`gha_mlops.config._remotes.remote_url_problem`.

    ``endpoint_url``, ``region`` and ``profile`` only apply to ``s3://``. An unknown scheme,
    or an ``https://`` URL (read-only sources are pinned per dataset, see
    :func:`gha_mlops.data.https.fetch_url`), raises :class:`RemoteError`.
    """
    wrong = remote_url_problem(url)
    if wrong is not None:  # e.g. s3:/bucket, which would be a folder named 's3:' here
        raise RemoteError(wrong[0], hint=wrong[1])
    if "://" not in url:
        return LocalStore(Path(url).expanduser(), url=url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if not parts.netloc:
            raise RemoteError(f"remote {url!r} names no bucket",
                              hint="write it as s3://bucket/prefix")
        return S3Store(parts.netloc, parts.path.strip("/"), endpoint_url=endpoint_url,
                       region=region, profile=profile)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise RemoteError(f"remote {url!r} names a host; file:// URLs are local paths",
                              hint="write file:///absolute/path (three slashes), or mount "
                                   "the share and use its path")
        return LocalStore(Path(unquote(parts.path)), url=url)
    if scheme in ("http", "https"):
        raise RemoteError(f"remote {url!r} is an {scheme}:// URL, which is read-only",
                          hint="declare it as a dataset source pinned by sha256; a remote "
                               f"that gha-mlops pushes to must be {_URL_FORMS}")
    raise RemoteError(f"remote {url!r} has an unknown scheme {parts.scheme!r}",
                      hint=f"use {_URL_FORMS}")


# --------------------------------------------------------------------------------- local


class LocalStore(ObjectStore):
    """A directory as an object store: key ``a/b`` is the file ``root/a/b``.

    Writes go to a hidden temp file beside the key and are renamed into place, so a reader
    (another machine on the same NAS included) sees a key whole or not at all; listings skip
    hidden names. The directory itself must exist: an unmounted share is an error, not an
    empty remote.
    """

    def __init__(self, root: Path, *, url: str | None = None) -> None:
        self.root = root
        self.url = url if url is not None else str(root)

    def __repr__(self) -> str:
        return f"LocalStore({self.url!r})"

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise RemoteError(f"remote directory {self.url} does not exist",
                              hint="create it (mkdir -p), mount the share, or fix the URL")

    def _error(self, err: OSError, what: str) -> RemoteError:
        return RemoteError(f"cannot {what} in remote {self.url}: {err.strerror or err}",
                           hint="check that the directory is mounted and writable")

    def upload_file(self, key: str, src: Path) -> None:
        """Copy ``src`` to ``key`` through a temp file and a rename."""
        self._write(key, lambda tmp: shutil.copyfile(src, tmp))

    def upload_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` to ``key`` through a temp file and a rename."""
        self._write(key, lambda tmp: Path(tmp).write_bytes(data))

    def _write(self, key: str, fill: Callable[[str], object]) -> None:
        dest = self._path(key)
        self._check_root()
        tmp = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_file(dest.parent, f".{dest.name}.")
            os.close(fd)
            fill(tmp)
            os.chmod(tmp, 0o444)  # objects are immutable
            os.replace(tmp, dest)
        except OSError as err:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            raise self._error(err, f"write {key}") from err

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``key``; ``KeyError`` if it does not exist."""
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                return fh.read(max(0, end - start))
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as err:
            raise self._error(err, f"read {key}") from err

    def download(self, key: str, dest: Path, *, offset: int = 0) -> None:
        """Append ``key`` from byte ``offset`` on to ``dest``; ``KeyError`` if it is absent."""
        path = self._path(key)
        try:
            fin = open(path, "rb")  # noqa: SIM115 - closed below; errors differ from dest's
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as err:
            raise self._error(err, f"read {key}") from err
        with fin, open(dest, "ab") as fout:
            fin.seek(offset)
            shutil.copyfileobj(fin, fout, _CHUNK)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every key starting with ``prefix``."""
        self._check_root()
        base = prefix.rpartition("/")[0]
        top = self.root / base if base else self.root
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(d)
            except FileNotFoundError:
                continue
            except OSError as err:
                raise self._error(err, f"list {prefix}") from err
            with it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue  # temp files of writes in progress
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file():
                        key = os.path.relpath(entry.path, self.root).replace(os.sep, "/")
                        if key.startswith(prefix):
                            yield key, entry.stat().st_size

    def size(self, key: str) -> int | None:
        """The size of ``key``, or None when it does not exist."""
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as err:
            raise self._error(err, f"stat {key}") from err


# --------------------------------------------------------------------------------- memory


class MemoryStore(ObjectStore):
    """An in-memory store for tests. Thread-safe.

    ``requests`` counts calls by kind (a listing counts one request per 1,000 keys, as S3
    pages them), ``bytes_read``/``bytes_written`` count payload bytes: tests assert on them to
    prove what a transfer did not do. ``objects`` may be edited directly to simulate damage.
    """

    def __init__(self, url: str = "memory://store") -> None:
        self.url = url
        self.objects: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.bytes_read = 0
        self.bytes_written = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Nothing to release (the objects stay readable: tests look at them after)."""

    def reset_counters(self) -> None:
        """Zero the request and byte counters."""
        with self._lock:
            self.requests.clear()
            self.bytes_read = self.bytes_written = 0

    def _count(self, kind: str, *, read: int = 0, written: int = 0, n: int = 1) -> None:
        with self._lock:
            self.requests[kind] += n
            self.bytes_read += read
            self.bytes_written += written

    def _get(self, key: str) -> bytes:
        _check_key(key)
        try:
            return self.objects[key]
        except KeyError:
            raise KeyError(key) from None

    def upload_file(self, key: str, src: Path) -> None:
        """Store the bytes of ``src`` under ``key``."""
        self.upload_bytes(key, src.read_bytes())

    def upload_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""
        _check_key(key)
        self._count("put", written=len(data))
        with self._lock:
            self.objects[key] = bytes(data)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``key``; ``KeyError`` if it does not exist."""
        self._count("get")
        data = self._get(key)[start:end]
        self._count("get", read=len(data), n=0)
        return data

    def download(self, key: str, dest: Path, *, offset: int = 0) -> None:
        """Append ``key`` from ``offset`` on to ``dest``; ``KeyError`` if it does not exist."""
        self._count("get")
        data = self._get(key)[offset:]
        self._count("get", read=len(data), n=0)
        with open(dest, "ab") as fh:
            fh.write(data)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every key starting with ``prefix``."""
        with self._lock:
            found = [(k, len(v)) for k, v in self.objects.items() if k.startswith(prefix)]
        self._count("list", n=max(1, -(-len(found) // 1000)))
        yield from sorted(found)

    def size(self, key: str) -> int | None:
        """The size of ``key``, or None when it does not exist."""
        self._count("head")
        with self._lock:
            data = self.objects.get(key)
        return None if data is None else len(data)


# --------------------------------------------------------------------------------- S3

# Packs are at most a few tens of MiB and are uploaded many at a time: they go in one PUT.
# Only objects above this are split into parts (uploaded in parallel by s3transfer).
_MULTIPART_THRESHOLD = 64 << 20
_MULTIPART_CHUNK = 16 << 20
_CREDENTIALS_HINT = ("set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run in a "
                     "job with OIDC credentials (aws-actions/configure-aws-credentials)")
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                    "RequestTimeTooSkewed", "Throttling", "ThrottlingException", "500", "502",
                    "503", "504"}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                     "InvalidToken", "TokenRefreshRequired"}


def _import_boto3() -> Any:
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError as err:
        raise missing_extra("boto3", "aws") from err
    return boto3


class S3Store(ObjectStore):
    """An S3 bucket (AWS, MinIO, moto, ...) under an optional key prefix, through boto3.

    One client is shared by all threads (boto3 clients are thread-safe); its connection pool
    is sized for ``max_connections`` parallel requests. botocore retries each request up to
    ``max_attempts`` times (connection failures, 5xx, throttling); a body cut off midway is
    a :class:`TransientStoreError` for the transfer layer to resume. Call :meth:`close` (or
    use it as a context manager) to release the connections.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, profile: str | None = None,
                 max_connections: int = 32, max_attempts: int = 4) -> None:
        boto3 = _import_boto3()
        from botocore.config import Config  # type: ignore[import-untyped]
        from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint_url = endpoint_url
        try:
            session = boto3.session.Session(profile_name=profile, region_name=region)
            self._client = session.client(
                "s3", endpoint_url=endpoint_url,
                config=Config(max_pool_connections=max_connections, connect_timeout=10,
                              read_timeout=60,
                              retries={"max_attempts": max_attempts, "mode": "standard"}))
        except BotoCoreError as err:
            raise self._translate(err, "") from err
        from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

        self._transfer_config = TransferConfig(multipart_threshold=_MULTIPART_THRESHOLD,
                                               multipart_chunksize=_MULTIPART_CHUNK,
                                               max_concurrency=8)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _translate(self, err: BaseException, key: str) -> RemoteError | KeyError:
        """The error a user sees for a botocore/urllib3 failure on ``key``."""
        import botocore.exceptions as bx  # type: ignore[import-untyped]
        import urllib3.exceptions

        where = f"{self.url}/{key}" if key else self.url
        if isinstance(err, bx.ProfileNotFound):
            return RemoteError(f"AWS profile for remote {self.url} not found: {err}",
                               hint="fix the profile option or define it in ~/.aws/config")
        if isinstance(err, (bx.NoCredentialsError, bx.PartialCredentialsError,
                            bx.CredentialRetrievalError)):
            return RemoteError(f"no AWS credentials for remote {self.url}",
                               hint=_CREDENTIALS_HINT)
        # botocore has retried requests that failed to connect or answered 5xx/throttling
        # already: those failures are final. A body cut off midway is not retried by botocore.
        if isinstance(err, (bx.EndpointConnectionError, bx.ConnectTimeoutError)):
            endpoint = self.endpoint_url or "the S3 endpoint"
            return RemoteError(
                f"cannot reach {endpoint} for remote {self.url}",
                hint="check the endpoint-url option and the network; run again once it is up")
        if isinstance(err, (bx.ConnectionError, bx.ReadTimeoutError,
                            bx.ResponseStreamingError, bx.IncompleteReadError,
                            urllib3.exceptions.HTTPError)):
            return TransientStoreError(f"connection to remote {self.url} failed while "
                                       f"transferring {where}: {err}",
                                       hint="run again: completed objects are kept")
        if isinstance(err, bx.ClientError):
            code = str(err.response.get("Error", {}).get("Code", ""))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket":
                return RemoteError(f"bucket {self.bucket!r} of remote {self.url} does not "
                                   "exist", hint="create the bucket or fix the URL")
            if code in _MISSING_KEY_CODES and key:
                return KeyError(key)
            if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
                return RemoteError(f"access denied to {where}",
                                   hint="grant these credentials s3:GetObject, s3:PutObject "
                                        "and s3:ListBucket on the bucket, or use other "
                                        "credentials (AWS_PROFILE, the OIDC role)")
            if code in _CREDENTIAL_CODES:
                return RemoteError(f"the AWS credentials were rejected by remote {self.url} "
                                   f"({code})", hint=_CREDENTIALS_HINT)
            if code in _TRANSIENT_CODES or status >= 500:
                return RemoteError(f"remote {self.url} kept failing on {where}: {code}",
                                   hint="the service is unavailable or throttling: run again "
                                        "later (completed objects are kept)")
            return RemoteError(f"remote {self.url} refused the request on {where}: {err}",
                               hint="check the URL and the bucket's configuration")
        return RemoteError(f"remote {self.url} failed on {where}: {err}",
                           hint="check the URL, the endpoint and the credentials")

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        import botocore.exceptions as bx
        import urllib3.exceptions
        from boto3.exceptions import S3UploadFailedError  # type: ignore[import-untyped]

        try:
            yield
        except S3UploadFailedError as err:
            # s3transfer wraps the ClientError that says why; classify that one.
            cause = err.__context__ if isinstance(err.__context__, bx.ClientError) else err
            raise self._translate(cause, key) from err
        except (bx.BotoCoreError, bx.ClientError, urllib3.exceptions.HTTPError) as err:
            raise self._translate(err, key) from err

    def upload_file(self, key: str, src: Path) -> None:
        """Upload ``src`` to ``key``; multipart above 64 MiB (S3 makes it visible at the end)."""
        with self._errors(key):
            self._client.upload_file(str(src), self.bucket, self._key(key),
                                     Config=self._transfer_config)

    def upload_bytes(self, key: str, data: bytes) -> None:
        """One PUT of ``data`` to ``key``."""
        with self._errors(key):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """One ranged GET (``Range: bytes=start-(end-1)``); ``KeyError`` if ``key`` is absent."""
        if end <= start:
            return b""
        import botocore.exceptions as bx

        try:
            with self._errors(key):
                resp = self._client.get_object(Bucket=self.bucket, Key=self._key(key),
                                               Range=f"bytes={start}-{end - 1}")
                body = resp["Body"]
                try:
                    data: bytes = body.read()
                finally:
                    body.close()
                return data
        except RemoteError as err:
            if isinstance(err.__cause__, bx.ClientError) and _code(err.__cause__) == \
                    "InvalidRange":
                return b""  # the range starts past the end: the object is shorter
            raise

    def download(self, key: str, dest: Path, *, offset: int = 0) -> None:
        """Stream ``key`` from ``offset`` on (a ranged GET when resuming), appending to
        ``dest`` as bytes arrive, so a dropped connection keeps what was received."""
        import botocore.exceptions as bx

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if offset:
            args["Range"] = f"bytes={offset}-"
        try:
            with self._errors(key):
                resp = self._client.get_object(**args)
        except RemoteError as err:
            if offset and isinstance(err.__cause__, bx.ClientError) and \
                    _code(err.__cause__) == "InvalidRange":
                return  # nothing past offset: dest already holds the whole object
            raise
        body = resp["Body"]
        try:
            with open(dest, "ab") as fh, self._errors(key):
                for chunk in body.iter_chunks(_CHUNK):
                    fh.write(chunk)
        finally:
            body.close()

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` under ``prefix``, one LIST request per 1,000 keys."""
        root = f"{self.prefix}/" if self.prefix else ""
        full, strip = root + prefix, len(root)
        with self._errors(prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full)
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield obj["Key"][strip:], int(obj["Size"])

    def size(self, key: str) -> int | None:
        """HEAD ``key``: its size, or None when it does not exist."""
        try:
            with self._errors(key):
                resp = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except KeyError:
            return None
        return int(resp["ContentLength"])


def _code(err: Any) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))
