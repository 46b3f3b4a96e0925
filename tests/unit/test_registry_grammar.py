"""The tag grammar against GTO's own parser, the version rule as a table, the fold of events
and hostile tag messages."""

from __future__ import annotations

import json

import pytest
from gto.tag import parse_name  # GTO from PyPI: the oracle of the grammar
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gha_mlops.registry._git import RawTag
from gha_mlops.registry.bump import decide_bump
from gha_mlops.registry.grammar import TagName, bumped, parse_tag, parse_version, tag_name
from gha_mlops.registry.index import fold
from gha_mlops.registry.lineage import (
    MAX_MESSAGE_BYTES,
    Lineage,
    message,
    read_images,
    read_message,
)

_ALPHABET = "ab09-_/=.@#!vV12x "
_PIECES = st.sampled_from(["digits", "a", "dir=m", "x/y", "@v1.2.3", "@v0.0.1-rc.1+b",
                           "#prod", "#dev", "!", "#3", "#12", "@deprecated", "@created",
                           "@v01.2.3", "-", "_"])


@settings(deadline=None)
@given(st.one_of(st.text(_ALPHABET, max_size=30),
                 st.lists(_PIECES, max_size=5).map("".join)))
@example("digits@created")  # found by a CI run: GTO half-matches it, with no action
@example("digits@created#3")
def test_tags_parse_as_gto_parses_them(name: str) -> None:
    theirs = parse_name(name, raise_on_fail=False)
    ours = parse_tag(name)
    # GTO gives no action for some names it half-matches (`digits@created`): no event, for
    # GTO as for us.
    if not theirs or "action" not in theirs or theirs["action"].value == "create":
        assert ours is None
        return
    assert ours is not None
    assert (ours.model, ours.action, ours.version, ours.stage, ours.counter) == (
        theirs["name"], theirs["action"].value, theirs.get("version", "v")[1:] or None,
        theirs.get("stage"), theirs.get("counter"))
    assert parse_tag(tag_name(ours)) == ours


def test_tag_names_round_trip() -> None:
    for event, tag in [(TagName("d", "register", version="1.2.3"), "d@v1.2.3"),
                       (TagName("d", "deregister", version="1.2.3", counter=4), "d@v1.2.3!#4"),
                       (TagName("d", "assign", stage="prod", counter=2), "d#prod#2"),
                       (TagName("d", "unassign", stage="prod", counter=5), "d#prod!#5"),
                       (TagName("d", "deprecate", counter=6), "d@deprecated#6")]:
        assert tag_name(event) == tag and parse_tag(tag) == event


@pytest.mark.parametrize(("version", "bump", "expected"), [
    (None, "major", "1.0.0"), ("1.2.3", "major", "2.0.0"), ("1.2.3", "minor", "1.3.0"),
    ("1.2.3", "patch", "1.2.4"), ("1.9.0", "minor", "1.10.0")])
def test_bumps(version: str | None, bump: str, expected: str) -> None:
    assert bumped(version, bump) == expected  # type: ignore[arg-type]


def test_versions_are_plain_releases() -> None:
    assert parse_version("v1.2.3") == parse_version("1.2.3") == "1.2.3"
    for bad in ("1.2", "01.2.3", "1.2.3-rc1", "x", "1.2.3 ", "9999999999.0.0"):
        with pytest.raises(ValueError):
            parse_version(bad)


def _lin(**changes: object) -> Lineage:
    base: dict[str, object] = {
        "run_id": "r", "commit": "c" * 40, "model_path": "m.onnx", "model_sha256": "0" * 64,
        "datasets": {"data:digits": "v1"}, "params_hash": "p1", "metrics": {"acc": 0.9},
        "signature": {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                      "outputs": []}}
    base.update(changes)
    return Lineage(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("new", "bump"), [
    (_lin(), "patch"),
    (_lin(run_id="r2", metrics={"acc": 0.95}), "patch"),
    (_lin(params_hash="p2"), "minor"),
    (_lin(datasets={"data:digits": "v2"}), "minor"),
    (_lin(datasets={}), "minor"),
    (_lin(signature={"inputs": [], "outputs": []}, params_hash="p2"), "major"),
    (_lin(signature=None, params_hash="p2"), "minor"),  # unknown signature: no major
])
def test_the_version_rule(new: Lineage, bump: str) -> None:
    assert decide_bump(_lin(), new).bump == bump


def test_an_unreadable_previous_lineage_is_a_minor_change() -> None:
    assert decide_bump(read_message("not ours"), _lin()).bump == "minor"


def test_lineage_round_trips_through_the_tag_message() -> None:
    lineage = _lin()
    assert read_message(message("Register d 1.0.0", lineage)) == lineage


@pytest.mark.parametrize("text", [
    "", "just words", "head\n\n{not json", "head\n\n" + "[" * 100_000,
    "head\n\n" + json.dumps({"schema": "gha-mlops/lineage@1", "run_id": 5}),
    "head\n\n" + json.dumps({"schema": "other"}),
    "head\n\n{" + " " * MAX_MESSAGE_BYTES + "}",
])
def test_hostile_messages_read_as_lineage_unknown(text: str) -> None:
    lineage = read_message(text)
    assert not lineage.known and lineage.problem


def test_image_notes_skip_what_is_not_an_image() -> None:
    note = '{"image": "r/d:1", "digest": "sha256:' + "a" * 64 + '"}\nrubbish\n[1]\n'
    assert [i.image for i in read_images(note * 3)] == ["r/d:1"]


def _raw(name: str, t: int, commit: str = "c1") -> RawTag:
    return RawTag(name, "o-" + name, commit, t, "me", "me@x", "")


def test_the_fold_follows_gtos_rules() -> None:
    state = fold([
        _raw("d@v1.0.0", 1, "c1"), _raw("d@v1.1.0", 2, "c2"), _raw("d@v2.0.0", 3, "c3"),
        _raw("d#prod#1", 4, "c1"), _raw("d#prod#2", 5, "c2"), _raw("d#dev#3", 6, "c3"),
        _raw("d#prod!#4", 7, "c2"), _raw("d@v2.0.0!#5", 8, "c3"),
        _raw("release-1.0", 9), _raw("e#prod#1", 1, "nowhere")])
    d = state["d"]
    assert d.latest == "1.1.0"  # 2.0.0 was deregistered
    assert d.holders == {"prod": "1.0.0"}  # 1.1.0 demoted; 2.0.0's dev gone with it
    assert not d.deprecated and d.max_counter == 5
    assert state["e"].holders == {} and state["e"].latest is None  # a stage of no version
    assert "release-1.0" not in state
    assert fold([_raw("d@v1.0.0", 1), _raw("d@deprecated#1", 2)])["d"].deprecated
    assert not fold([_raw("d@deprecated#1", 1), _raw("d@v1.0.0", 2)])["d"].deprecated
