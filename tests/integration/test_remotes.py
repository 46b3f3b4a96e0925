"""Remotes for real: a moto S3 server, a directory, and an HTTP server that misbehaves.

The moto server is a real process on loopback (``python -m moto.server``), reached by boto3
through ``endpoint_url``, started once for the module; boto3 is never patched. The HTTP server
runs in a thread on loopback and can drop the connection midway, ignore ``Range`` or serve
wrong bytes.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.data import https, transfer
from gha_mlops.data.packs import object_key
from gha_mlops.data.stores import LocalStore, S3Store, open_store
from gha_mlops.errors import DataIntegrityError, MissingExtraError, RemoteError
from gha_mlops.store.objects import ContentCache
from tests.integration.aws_fixtures import free_port, moto_process

boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real moto S3 server on 127.0.0.1, for the whole module."""
    with moto_process(tmp_path_factory.mktemp("moto") / "server.log") as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials and a region; no profile files or instance metadata are consulted."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(transfer, "_BACKOFF", 0.0)


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()
    return name


def _keys(moto_endpoint: str, bucket: str) -> dict[str, int]:
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {o["Key"]: o["Size"] for p in pages for o in p.get("Contents", ())}
    finally:
        client.close()


def _dataset(cache: ContentCache, n: int = 200, size: int = 2000,
             large: int = 300_000) -> list[str]:
    """``n`` small objects and one large one (above the 64 KiB threshold used here)."""
    rng = random.Random(42)
    digests = []
    for blob in [rng.randbytes(size) for _ in range(n)] + [rng.randbytes(large)]:
        digest = hashlib.sha256(blob).hexdigest()
        cache.put_verified_bytes(blob, digest)
        digests.append(digest)
    return digests


def _assert_verified(cache: ContentCache, digests: list[str]) -> None:
    for d in digests:
        assert hashlib.sha256(cache.object_path(d).read_bytes()).hexdigest() == d
    assert not cache.tmp.exists() or not list(cache.tmp.iterdir())


THRESHOLD = 64 << 10


def _round_trip(store: Any, tmp_path: Path) -> list[str]:
    src = ContentCache(tmp_path / "src")
    digests = _dataset(src)
    pushed = transfer.push(store, src, digests, index_dir=tmp_path / "idx",
                           large_threshold=THRESHOLD)
    assert pushed.objects == len(digests) and pushed.requests < 40
    again = transfer.push(store, src, digests, index_dir=tmp_path / "idx",
                          large_threshold=THRESHOLD)
    assert (again.objects, again.bytes) == (0, 0)
    dst = ContentCache(tmp_path / "dst")
    fetched = transfer.fetch(store, dst, digests, index_dir=tmp_path / "idx-2")
    assert fetched.objects == len(digests) and fetched.bytes == pushed.bytes
    _assert_verified(dst, digests)
    return digests


# --------------------------------------------------------------------------------- S3


def test_s3_round_trip_with_packs_and_large_objects(moto_endpoint: str, bucket: str,
                                                    tmp_path: Path) -> None:
    store = open_store(f"s3://{bucket}/team/data", endpoint_url=moto_endpoint)
    assert isinstance(store, S3Store) and store.url == f"s3://{bucket}/team/data"
    with store:
        digests = _round_trip(store, tmp_path)
    keys = _keys(moto_endpoint, bucket)
    assert all(k.startswith("team/data/v1/") for k in keys)
    assert f"team/data/{object_key(digests[-1])}" in keys
    packs = [k for k in keys if k.endswith(".pack")]
    assert packs and len(packs) == len([k for k in keys if k.endswith(".idx")])
    assert len(keys) < 20  # 201 objects in a handful of keys


def test_s3_large_download_resumes_from_a_partial(moto_endpoint: str, bucket: str,
                                                  tmp_path: Path) -> None:
    src = ContentCache(tmp_path / "src")
    (big,) = _dataset(src, n=0)
    with S3Store(bucket, "p", endpoint_url=moto_endpoint) as store:
        transfer.push(store, src, [big], index_dir=tmp_path / "idx", large_threshold=THRESHOLD)
        whole = src.object_path(big).read_bytes()
        for seed in (whole[:100_000], whole, b"junk" * 1000):
            dst = ContentCache(tmp_path / f"dst-{uuid.uuid4().hex}")
            dst.tmp.mkdir(parents=True)
            (dst.tmp / f"{big}.partial").write_bytes(seed)
            stats = transfer.fetch(store, dst, [big], index_dir=tmp_path / "idx")
            assert stats.objects == 1
            _assert_verified(dst, [big])


def test_missing_bucket_is_a_clear_error(moto_endpoint: str, tmp_path: Path) -> None:
    src = ContentCache(tmp_path / "src")
    digests = _dataset(src, n=2, large=10)
    with S3Store("no-such-bucket", "x", endpoint_url=moto_endpoint) as store, \
            pytest.raises(RemoteError) as info:
        transfer.push(store, src, digests, index_dir=tmp_path / "idx")
    assert "s3://no-such-bucket/x" in info.value.message
    assert info.value.hint and "create the bucket" in info.value.hint
    assert info.value.exit_code == 6


def test_missing_credentials_say_how_to_provide_them(moto_endpoint: str, bucket: str,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with S3Store(bucket, endpoint_url=moto_endpoint) as store, \
            pytest.raises(RemoteError) as info:
        transfer.missing_on_remote(store, ["a" * 64], index_dir=tmp_path / "idx")
    assert f"s3://{bucket}" in info.value.message and "credentials" in info.value.message
    assert info.value.hint and "AWS_PROFILE" in info.value.hint and "OIDC" in info.value.hint


def test_unknown_profile_and_unreachable_endpoint(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="profile"):
        open_store("s3://b/p", profile="nobody")
    closed = f"http://127.0.0.1:{free_port()}"
    with S3Store("b", endpoint_url=closed, max_attempts=1) as store, \
            pytest.raises(RemoteError, match="cannot reach") as info:
        transfer.missing_on_remote(store, ["a" * 64], index_dir=tmp_path / "idx")
    assert closed in info.value.message and info.value.hint


def test_two_concurrent_fetches_into_one_cache(moto_endpoint: str, bucket: str,
                                               tmp_path: Path) -> None:
    src = ContentCache(tmp_path / "src")
    digests = _dataset(src, n=300, size=3000, large=2_000_000)
    dst = ContentCache(tmp_path / "dst")
    with S3Store(bucket, endpoint_url=moto_endpoint) as store:
        transfer.push(store, src, digests, index_dir=tmp_path / "idx",
                      large_threshold=THRESHOLD)
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def one(i: int) -> None:
            start.wait()
            try:
                transfer.fetch(store, dst, digests, index_dir=tmp_path / f"idx-{i}", jobs=4)
            except BaseException as err:  # reported by the main thread
                errors.append(err)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    _assert_verified(dst, digests)


# --------------------------------------------------------------------------------- local


def test_local_directory_round_trip(tmp_path: Path) -> None:
    for i, form in enumerate(("file://{}", "{}")):
        remote = tmp_path / "nas" / f"remote-{i}"
        remote.mkdir(parents=True)
        url = form.format(remote)
        store = open_store(url)
        assert isinstance(store, LocalStore) and store.url == url
        _round_trip(store, tmp_path / f"work-{i}")
        assert not [p for p in remote.rglob(".*")]  # no temp files left behind
    with pytest.raises(RemoteError, match="does not exist") as info:
        transfer.push(open_store(str(tmp_path / "unmounted")), ContentCache(tmp_path / "c"),
                      [], index_dir=tmp_path / "idx")
    assert info.value.hint and "mkdir" in info.value.hint


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://host/x", "unknown scheme"),
    ("https://example.com/data", "read-only"),
    ("file://server/share", "names a host"),
    ("s3:///prefix", "names no bucket"),
    ("", "empty"),
])
def test_open_store_refuses_what_it_cannot_use(url: str, message: str) -> None:
    with pytest.raises(RemoteError, match=message) as info:
        open_store(url)
    assert info.value.hint


_FETCH_IN_A_PROCESS = """
import sys
from pathlib import Path
from gha_mlops.data import transfer
from gha_mlops.data.stores import open_store
from gha_mlops.store.objects import ContentCache
remote, cache, index_dir, *digests = sys.argv[1:]
transfer.fetch(open_store(remote), ContentCache(Path(cache)), digests, index_dir=Path(index_dir))
"""


def test_two_processes_fetching_into_one_cache(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    src = ContentCache(tmp_path / "src")
    digests = _dataset(src, n=300, size=3000, large=20_000_000)
    transfer.push(LocalStore(remote), src, digests, index_dir=tmp_path / "idx",
                  large_threshold=THRESHOLD)
    dst = tmp_path / "dst"
    procs = [subprocess.Popen([sys.executable, "-c", _FETCH_IN_A_PROCESS, str(remote), str(dst),
                               str(tmp_path / f"idx-{i}"), *digests],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    _assert_verified(ContentCache(dst), digests)


# --------------------------------------------------------------------------------- https


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    payload = b""
    served = b""  # what is sent: the payload, or wrong bytes
    ranges = True  # honour Range
    drops = 0  # how many responses are cut off ...
    drop_after = 0  # ... after this many body bytes
    log: list[str | None]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.log.append(rng)
        if self.path != "/data.bin":
            self.send_error(404)
            return
        data = srv.served
        start = 0
        if rng and srv.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if srv.ranges else "none")
        self.end_headers()
        if srv.drops:
            srv.drops -= 1
            self.wfile.write(body[:srv.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def http_server() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.payload = server.served = random.Random(5).randbytes(1_000_000)
    server.log = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/data.bin"


def test_https_source_resumes_after_a_dropped_connection(http_server: _Server,
                                                         tmp_path: Path) -> None:
    http_server.drops, http_server.drop_after = 1, 300_000
    cache = ContentCache(tmp_path / "cache")
    sha = hashlib.sha256(http_server.payload).hexdigest()
    https.fetch_url(_url(http_server), sha, cache)
    assert http_server.log == [None, "bytes=300000-"]
    _assert_verified(cache, [sha])
    https.fetch_url(_url(http_server), sha, cache)  # already cached: no request
    assert len(http_server.log) == 2


def test_a_source_that_ignores_range_is_downloaded_again_whole(http_server: _Server,
                                                               tmp_path: Path) -> None:
    http_server.ranges = False
    http_server.drops, http_server.drop_after = 2, 300_000
    cache = ContentCache(tmp_path / "cache")
    sha = hashlib.sha256(http_server.payload).hexdigest()
    https.fetch_url(_url(http_server), sha, cache)
    assert len(http_server.log) == 3
    _assert_verified(cache, [sha])


def test_a_source_that_keeps_dropping_fails_and_a_later_run_resumes(
        http_server: _Server, tmp_path: Path) -> None:
    http_server.drops, http_server.drop_after = 100, 100_000
    cache = ContentCache(tmp_path / "cache")
    sha = hashlib.sha256(http_server.payload).hexdigest()
    with pytest.raises(RemoteError, match="failed after") as info:
        https.fetch_url(_url(http_server), sha, cache)
    assert info.value.hint and "resume" in info.value.hint
    partial = cache.tmp / f"{sha}.partial"
    assert partial.stat().st_size == transfer.ATTEMPTS * 100_000
    assert not cache.object_path(sha).exists()
    http_server.drops = 0
    http_server.log.clear()
    https.fetch_url(_url(http_server), sha, cache)
    assert http_server.log == [f"bytes={transfer.ATTEMPTS * 100_000}-"]
    _assert_verified(cache, [sha])


def test_a_source_serving_wrong_bytes_is_rejected(http_server: _Server, tmp_path: Path) -> None:
    wrong = bytearray(http_server.payload)
    wrong[123_456] ^= 1
    http_server.served = bytes(wrong)
    cache = ContentCache(tmp_path / "cache")
    sha = hashlib.sha256(http_server.payload).hexdigest()
    with pytest.raises(DataIntegrityError) as info:
        https.fetch_url(_url(http_server), sha, cache)
    message = info.value.message
    assert _url(http_server) in message and sha in message
    assert hashlib.sha256(wrong).hexdigest() in message
    assert [p for p in cache.root.rglob("*") if p.is_file()] == []


def test_a_missing_source_is_a_remote_error(http_server: _Server, tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="HTTP 404"):
        https.fetch_url(_url(http_server).replace("data.bin", "gone"), "0" * 64,
                           ContentCache(tmp_path / "cache"))
    with pytest.raises(RemoteError, match="only https"):
        https.fetch_url("ftp://x/y", "0" * 64, ContentCache(tmp_path / "cache"))


def test_s3_without_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # what an absent package looks like
    with pytest.raises(MissingExtraError) as info:
        open_store("s3://bucket/prefix")
    assert info.value.hint == "pip install 'gha-mlops[aws]'"


def test_cli_push_and_pull_through_an_s3_remote(moto_endpoint: str, bucket: str,
                                                tmp_path: Path) -> None:
    """The commands a user types, against the moto server: add, push, status, pull."""
    import os
    import subprocess

    config = (f"remotes:\n  s3:\n    url: s3://{bucket}/datasets\n"
              f"    endpoint_url: {moto_endpoint}\nstages:\n  s:\n    cmd: 'true'\n")

    def gha(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
        return subprocess.run([sys.executable, "-m", "gha_mlops", "data", *args], cwd=cwd,
                              env=env, capture_output=True, text=True, check=False)

    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "mlops.yaml").write_text(config)
    for i in range(50):
        (src / f"images/{i}.bin").write_bytes(os.urandom(500 + i))
    assert gha(src, "add", "images").returncode == 0
    push = gha(src, "push")
    assert push.returncode == 0, push.stderr
    assert "pushed 51 objects" in push.stdout
    assert "remote: has it" in gha(src, "status", "--remote").stdout
    other = tmp_path / "other"
    other.mkdir()
    (other / "mlops.yaml").write_text(config)
    (other / "images.lock.yaml").write_text((src / "images.lock.yaml").read_text())
    pull = gha(other, "pull")
    assert pull.returncode == 0, pull.stderr
    for f in (src / "images").iterdir():
        assert (other / "images" / f.name).read_bytes() == f.read_bytes()
