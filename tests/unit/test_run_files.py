"""The one reader of a run's files (gha_mlops.runs.files): hash-checked, one size limit, never
led outside the run's folder or its cache by a hostile record."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gha_mlops.runs.files import (
    MAX_RUN_FILE_BYTES,
    RunFileError,
    read_run_file,
    recorded_size,
)
from tests.conftest import cache_object


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()



def test_the_runs_bytes_come_from_the_cache_first_then_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_bytes(b"head")
    cache_object(tmp_path, b"base")
    assert read_run_file(tmp_path, "m.json", _sha(b"base")).source == "cache"
    assert read_run_file(tmp_path, "m.json", _sha(b"head")).data == b"head"
    # Told to read the workspace only, the cache's copy is not used.
    with pytest.raises(RunFileError) as err:
        read_run_file(tmp_path, "m.json", _sha(b"base"), cache=False)
    assert err.value.reason == "changed"
    assert err.value.message == "m.json in the workspace is not this run's (its sha256 differs)"


@pytest.mark.parametrize("rel", ["../outside.json", "/etc/passwd", "a/../../outside.json", ""])
def test_a_path_leaving_the_run_is_never_read(tmp_path: Path, rel: str) -> None:
    (tmp_path / "outside.json").write_bytes(b"secret")
    ws = tmp_path / "ws"
    ws.mkdir()
    with pytest.raises(RunFileError) as err:
        read_run_file(ws, rel, _sha(b"secret"))
    assert err.value.reason == "unsafe"
    assert recorded_size(ws, rel, _sha(b"secret")) is None


def test_a_digest_is_never_made_into_a_path_and_links_out_of_the_cache_are_not_followed(
        tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    ws = tmp_path / "ws"
    obj = cache_object(ws, b"secret")
    obj.unlink()
    os.symlink(secret, obj)
    with pytest.raises(RunFileError) as err:
        read_run_file(ws, "m.json", _sha(b"secret"))
    assert err.value.reason == "missing"
    with pytest.raises(RunFileError):
        read_run_file(ws, "m.json", "../../../../secret")


def test_one_size_limit_for_every_copy(tmp_path: Path) -> None:
    big = b"x" * (MAX_RUN_FILE_BYTES + 1)
    (tmp_path / "big.csv").write_bytes(big)
    with pytest.raises(RunFileError) as err:
        read_run_file(tmp_path, "big.csv", _sha(big))
    assert err.value.reason == "too-large" and "big.csv is too large" in err.value.message
    (tmp_path / "big.csv").unlink()
    cache_object(tmp_path, big)  # the cache's copy is not read past the limit either
    with pytest.raises(RunFileError) as err:
        read_run_file(tmp_path, "big.csv", _sha(big))
    assert err.value.reason == "missing"


def test_a_folder_without_a_cache_or_the_file_is_absent_not_an_error_to_report(
        tmp_path: Path) -> None:
    with pytest.raises(RunFileError) as err:
        read_run_file(tmp_path, "m.json", _sha(b"x"))
    assert err.value.reason == "absent"
