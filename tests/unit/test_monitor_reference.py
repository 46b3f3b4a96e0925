"""The reference profile a version names: read from its git note without trusting it, found
in the workspace's cache by its sha256, and refused with a way out when it is not there."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gha_mlops.monitor.profile import ProfileError, load_profile
from gha_mlops.monitor.reference import build_reference, load_reference, store_reference
from gha_mlops.registry import ImageRef, Lineage, ModelVersion, ProfileRef
from gha_mlops.registry.lineage import read_profile

SIGNATURE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
             "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}]}


def _profile() -> bytes:
    x = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
    data, rows = build_reference(SIGNATURE, [x], [(x[:, 0] > 0).astype(np.int64)])
    assert rows == 50
    return data


def _version(profile: ProfileRef | None, images: tuple[ImageRef, ...] = ()) -> ModelVersion:
    lineage = Lineage(run_id="r", commit="c" * 40, model_path="m.onnx", model_sha256="0" * 64,
                      profile=profile, images=images)
    return ModelVersion(name="digits", version="1.0.0", tag="digits@v1.0.0", commit="c" * 40,
                        lineage=lineage)


def test_the_profile_names_columns_as_the_check_does_and_is_deterministic() -> None:
    data = _profile()
    assert data == _profile()
    profile = load_profile(data, where="t")
    assert [f.name for f in profile.features] == ["x[0]", "x[1]"]
    assert [(f.name, f.kind) for f in profile.predictions] == [("label", "categorical")]


def test_the_note_line_is_read_without_trusting_it() -> None:
    good = json.dumps({"profile": {"sha256": "a" * 64, "rows": 5}})
    later = json.dumps({"profile": {"sha256": "b" * 64, "rows": 7}})
    assert read_profile(f"{good}\n{later}\n") == ProfileRef("b" * 64, 7)
    for bad in ("not json", json.dumps({"profile": {"sha256": "A" * 64, "rows": 5}}),
                json.dumps({"profile": {"sha256": "a" * 63, "rows": 5}}),
                json.dumps({"profile": {"sha256": "a" * 64, "rows": True}}),
                json.dumps({"profile": {"sha256": "a" * 64, "rows": 0}}),
                json.dumps({"profile": "a" * 64}), json.dumps([1]),
                json.dumps({"image": "x", "digest": "sha256:" + "0" * 64})):
        assert read_profile(bad) is None, bad
    assert read_profile(f"{good}\nnot json") == ProfileRef("a" * 64, 5)


def test_the_cache_copy_is_found_by_sha256_and_checked(tmp_path: Path) -> None:
    data = _profile()
    digest = store_reference(tmp_path, data)
    assert digest == hashlib.sha256(data).hexdigest()
    mv = _version(ProfileRef(digest, 50))
    assert load_reference(tmp_path, mv) == load_profile(data, where="t")
    # Another profile's sha256 in the lineage: the cached bytes do not match it.
    with pytest.raises(ProfileError, match="neither in this workspace's cache nor in its "
                                           "git notes") as err:
        load_reference(tmp_path, _version(ProfileRef("e" * 64, 50), (
            ImageRef("reg/digits:1.0.0", "sha256:" + "1" * 64),)))
    assert "refs/notes/" in str(err.value.hint) and "docker cp" in str(err.value.hint) and "reg/digits:1.0.0@sha256:111" in str(
        err.value.hint)


def test_no_profile_in_the_lineage_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="has no reference profile") as err:
        load_reference(tmp_path, _version(None))
    assert "check_data" in str(err.value) and "--profile" in str(err.value.hint)


def test_a_given_profile_file_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "profile.json"
    good.write_bytes(_profile())
    assert load_reference(tmp_path, _version(None), profile_file=good).rows == 50
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"format": "gha-mlops.profile/1", "rows": -1}')
    with pytest.raises(ProfileError, match=r"bad\.json"):
        load_reference(tmp_path, _version(None), profile_file=bad)
    with pytest.raises(ProfileError, match="cannot read the reference profile"):
        load_reference(tmp_path, _version(None), profile_file=tmp_path / "missing.json")


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "PATH": os.environ["PATH"], "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout


def test_the_profile_travels_with_the_versions_notes(tmp_path: Path) -> None:
    """A clone that fetched the notes finds the profile without the packaging workspace's
    cache; one that did not is told to fetch them."""
    from gha_mlops.registry import open_registry
    from gha_mlops.registry.lineage import message

    origin = tmp_path / "origin"
    origin.mkdir()
    _git(origin, "init", "-q")
    _git(origin, "commit", "-q", "--allow-empty", "-m", "c")
    lineage = Lineage(run_id="r", commit=_git(origin, "rev-parse", "HEAD").strip(),
                      model_path="m.onnx", model_sha256="0" * 64)
    (tmp_path / "msg").write_text(message("Register digits 1.0.0", lineage))
    _git(origin, "tag", "-a", "digits@v1.0.0", "-F", str(tmp_path / "msg"))
    data = _profile()
    reg = open_registry(origin)
    digest = reg.record_profile(reg.resolve("digits@1.0.0"), data, 50)
    assert digest == hashlib.sha256(data).hexdigest()
    mv = open_registry(origin).resolve("digits@1.0.0")
    assert mv.lineage.profile == ProfileRef(digest, 50)
    assert load_reference(origin, mv) == load_profile(data, where="t")  # from the note

    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(origin), str(clone))
    with pytest.raises(ProfileError, match="has no reference profile"):  # no notes fetched
        load_reference(clone, open_registry(clone).resolve("digits@1.0.0"))
    _git(clone, "fetch", "-q", "origin", "refs/notes/*:refs/notes/*")
    assert load_reference(clone, open_registry(clone).resolve("digits@1.0.0")).rows == 50
    # A profile note that is not the one the lineage names is refused.
    _git(clone, "notes", "--ref=gha-mlops-profiles", "add", "-f", "-m", "{}",
         mv.tag_object)
    with pytest.raises(ProfileError, match="nor in its git notes"):
        load_reference(clone, open_registry(clone).resolve("digits@1.0.0"))
