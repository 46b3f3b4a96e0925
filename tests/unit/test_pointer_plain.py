"""Pointers in the plain form gha-mlops writes are read without PyYAML: whenever that reading
gives a mapping, it is the mapping the bounded YAML loader gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gha_mlops.config._yaml import load_yaml
from gha_mlops.data.pointer import Dataset, plain_pointer, read_pointer, write_pointer

KEYS = ["name", "path", "version", "files", "size", "source"]
TRICKY = ["images", "yes", "No", "null", "~", "1e3", "0x1f", "0123", "2024-01-01", "_x",
          "a:b", "a: b", "a #c", "'q'", "[1]", "{a: 1}", "&a", "*a", "!tag", ".inf", "12",
          "a" * 64, "0" * 64, "1" * 63 + "a", "ab" * 32 + ".dir", "https://h:80/x.tar?a=1&b",
          "https://x/#frag", "http://x:", "-", "- a", "|", ">", "%", "@x", "`x`", "a\tb",
          "\u00e9t\u00e9"]
JUNK = ["# comment", "#", "", "  name: x", "---", "name:x", "# \u00e9", "#\x07", "name: x # c",
        "name: x\r", "other: x", "name : x"]
PAIRS = st.tuples(st.sampled_from(KEYS), st.sampled_from(TRICKY)).map(
    lambda kv: f"{kv[0]}: {kv[1]}")
OTHER = st.sampled_from(JUNK)
LINES = st.one_of(PAIRS, PAIRS, PAIRS, OTHER)


@pytest.mark.parametrize("text", [f"{k}: {v}" for k in KEYS for v in TRICKY]
                         + [f"size: 1\n{junk}" for junk in JUNK])
def test_each_form_alone(text: str) -> None:
    """Each value and each other kind of line, where YAML may read it otherwise (or refuse
    it: then the plain reading must not accept it either)."""
    data = text.encode()
    plain = plain_pointer(data)
    if plain is not None:
        assert plain == load_yaml(data)
        assert all(type(v) is type(load_yaml(data)[k]) for k, v in plain.items())


@settings(max_examples=500)
@given(st.lists(LINES, min_size=1, max_size=5))
def test_the_plain_reading_agrees_with_yaml(lines: list[str]) -> None:
    data = "\n".join(lines).encode()
    plain = plain_pointer(data)
    if plain is not None:
        assert plain == load_yaml(data)
        assert all(type(v) is type(load_yaml(data)[k]) for k, v in plain.items())


def test_what_gha_mlops_writes_is_read_plainly(tmp_path: Path) -> None:
    ds = Dataset(name="images", path="images", pointer="images.lock.yaml",
                 version="ab" * 32 + ".dir", files=3, size=12, source="https://h/x.tar")
    write_pointer(tmp_path, ds)
    assert plain_pointer((tmp_path / ds.pointer).read_bytes()) is not None
    assert read_pointer(tmp_path, ds.pointer) == ds
