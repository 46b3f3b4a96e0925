"""The prediction log read straight from S3 (a real moto server on loopback): batches in the
writer's format uploaded with boto3, damaged and foreign objects among them, read with the
same rows and the same skip counts as the directory they came from."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import boto3
import numpy as np
import pytest

from gha_mlops.data.stores import open_store
from gha_mlops.monitor import predlog
from gha_mlops.monitor.predlog import read_feedback, read_small, read_window, write_small
from gha_mlops.monitor.predlog_writer import BatchWriter, DirectorySink, write_feedback
from tests.integration.test_remotes import aws_env, bucket, moto_endpoint  # noqa: F401
from tests.unit.test_monitor_predlog import SCHEMA, T0, header, put, row


def _upload(root: Path, endpoint: str, name: str, prefix: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    try:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(root).as_posix()}"
                client.put_object(Bucket=name, Key=key, Body=path.read_bytes())
    finally:
        client.close()


def _log(root: Path) -> None:
    """Three hours of two versions through the writer, and damage of every kind."""
    sink = DirectorySink(root)
    for version, offset in (("v1", 0), ("v2", 1800)):
        with BatchWriter(sink, "m", version, SCHEMA, max_rows=50, max_pending=64) as w:
            for i in range(300):
                t = T0 + offset + i * 30
                w.add(f"{version}-{i}", {"x": [i, 0.5, float(i % 7)], "c": f"k{i % 4}"},
                      {"y": i}, t)
    put(root, [header(), row("ok", T0 + 5), b"{nope\n", row(model="m2"),
               row(version="v9"), row(outputs={"y": 1.5})],
        name="0000000000002-0000001-aaaaaaaa-000001.jsonl.gz")
    put(root, [], raw=b"garbage", name="0000000000003-0000001-aaaaaaaa-000001.jsonl.gz")
    put(root, [header(model="other"), row("o")],
        name="0000000000004-0000001-aaaaaaaa-000001.jsonl.gz")
    huge = gzip.compress(b"".join(json.dumps(x).encode() + b"\n" for x in
                                  [header()] + [row(os.urandom(32).hex(), T0 + 7) for _ in range(300)]))
    assert len(huge) > 8000
    put(root, [], raw=huge, name="0000000000005-0000001-aaaaaaaa-000001.jsonl.gz")
    put(root, [header(model="m2"), row("n", model="m2")],  # in m's folder: counted
        name="0000000000006-0000001-aaaaaaaa-000001.jsonl.gz")
    with BatchWriter(sink, "m2", "v1", SCHEMA) as w:  # a neighbour model: never listed
        w.add("n", {"x": [0.0, 0.0, 0.0], "c": "a"}, {"y": 0}, T0 + 9)
    write_feedback(root, "m", [("v1-1", "cat", T0 + 100), ("v2-3", "dog", T0 + 200)])


@pytest.mark.usefixtures("aws_env")
def test_s3_reads_as_the_directory_does(tmp_path: Path, moto_endpoint: str,  # noqa: F811
                                        bucket: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                        ) -> None:
    root = tmp_path / "log"
    _log(root)
    _upload(root, moto_endpoint, bucket, "logs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # boto3 takes it from there
    # The huge object is over the bound (lowered for the test: 256 MiB in the real one).
    monkeypatch.setattr(predlog, "MAX_OBJECT_BYTES", 8000)
    with open_store(f"s3://{bucket}/logs") as store:
        for kw in ({}, {"version": "v2"}, {"start": T0 + 3000, "end": T0 + 6000}):
            args = {"start": T0, "end": T0 + 3 * 3600} | kw
            in_s3 = read_window(store, "m", **args)  # type: ignore[arg-type]
            on_disk = read_window(root, "m", **args)  # type: ignore[arg-type]
            assert (in_s3.rows, in_s3.ids, in_s3.skipped, in_s3.files, in_s3.versions) == (
                on_disk.rows, on_disk.ids, on_disk.skipped, on_disk.files, on_disk.versions)
            for name in ("x", "c"):
                assert np.array_equal(in_s3.inputs[name], on_disk.inputs[name])
            assert np.array_equal(in_s3.outputs["y"], on_disk.outputs["y"])
        win = read_window(store, "m", start=T0, end=T0 + 3 * 3600)
        assert win.rows == 600 + 1 and win.versions == ("v1", "v2")
        assert win.skipped == {"bad-json": 1, "other-model": 1, "other-version": 1,
                               "bad-value": 1, "file-corrupt": 1, "file-other-model": 2,
                               "file-too-large": 1}
        assert read_window(store, "m", start=T0 - 7200, end=T0 - 3600).rows == 0  # no data
        labels = read_feedback(store, "m", start=T0, end=T0 + 3600)
        assert dict(labels) == {"v1-1": "cat", "v2-3": "dog"}
        assert read_small(store, "m/monitor/alarm.json", 100) is None
        write_small(store, "m/monitor/alarm.json", b'{"windows": []}')
        assert read_small(store, "m/monitor/alarm.json", 100) == b'{"windows": []}'
