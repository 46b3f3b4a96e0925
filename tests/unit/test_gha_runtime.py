"""gha_mlops.gha.runtime against the runner's own parsing rules.

The parsers below follow actions/runner: ``ActionCommand.TryParseV2`` and its unescaping (one
``str.replace`` per mapping, in the runner's order) for commands on stdout, and
``FileCommandManager``'s reader of ``NAME=VALUE`` / ``NAME<<DELIMITER`` environment files
(lines end at LF; a value is the text between the header line and the LF before the
delimiter line). What the module writes must come back unchanged through them.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from gha_mlops.gha import Actions, escape_data, escape_property, runtime

# ---------------------------------------------------------------------------- runner parsers

_DATA = [("\r", "%0D"), ("\n", "%0A"), ("%", "%25")]
_PROPERTY = [("\r", "%0D"), ("\n", "%0A"), (":", "%3A"), (",", "%2C"), ("%", "%25")]


def _unescape(text: str, mappings: list[tuple[str, str]]) -> str:
    for token, replacement in mappings:
        text = text.replace(replacement, token)
    return text


def parse_command(line: str) -> tuple[str, dict[str, str], str]:
    """``::name k=v,k=v::data`` as (name, properties, data), the way TryParseV2 reads it."""
    assert line.startswith("::"), line
    end = line.index("::", 2)
    info = line[2:end]
    name, _, props_text = info.partition(" ")
    props: dict[str, str] = {}
    for prop in (p for p in props_text.strip().split(",") if p):
        key, sep, value = prop.partition("=")
        if sep and key and value:
            props[key] = _unescape(value, _PROPERTY)
    return name, props, _unescape(line[end + 2:], _DATA)


def parse_env_file(text: str) -> list[tuple[str, str]]:
    """(name, value) pairs in file order, as the runner's SetEnvFileCommand reads them."""
    index = 0

    def read_line() -> tuple[str | None, int]:
        """The next line and the length of its line break (0 at the end of the text)."""
        nonlocal index
        if index >= len(text):
            return None, 0
        lf = text.find("\n", index)
        if lf < 0:
            line, index = text[index:], len(text)
            return line, 0
        line, index = text[index:lf], lf + 1
        return line, 1

    pairs: list[tuple[str, str]] = []
    line, _ = read_line()
    while line is not None:
        if line:
            eq, heredoc = line.find("="), line.find("<<")
            if eq >= 0 and (heredoc < 0 or eq < heredoc):
                name, value = line.split("=", 1)
                pairs.append((name, value))
            elif heredoc >= 0:
                name, delimiter = line.split("<<", 1)
                assert name and delimiter, f"invalid heredoc header {line!r}"
                start = end = index
                inner, newline = read_line()
                while inner != delimiter:
                    assert inner is not None, f"matching delimiter not found: {delimiter!r}"
                    end = index - newline
                    inner, newline = read_line()
                pairs.append((name, text[start:end] if end > start else ""))
            else:
                raise AssertionError(f"invalid line {line!r}")
        line, _ = read_line()
    return pairs


def _commands(stream: io.StringIO) -> list[tuple[str, dict[str, str], str]]:
    return [parse_command(line) for line in stream.getvalue().splitlines(keepends=False)]


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {var: tmp_path / var.lower() for var in
            ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_STATE", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")}


@pytest.fixture
def gha(files: dict[str, Path]) -> tuple[Actions, io.StringIO]:
    stream = io.StringIO()
    environ = {"GITHUB_ACTIONS": "true", **{k: str(v) for k, v in files.items()}}
    return Actions(environ, stream), stream


TRICKY = [
    "",
    "plain",
    "100% done",
    "%25 already escaped?",
    "%0A is not a newline",
    "line one\nline two",
    "ends with newline\n",
    "\n",
    "\n\n",
    "two trailing\n\n",
    "\nleading newline",
    "windows\r\nline\r\n",
    "lone \r carriage return",
    "a::b::c",
    "key=value<<EOF",
    "ghadelim_0123456789abcdef0123456789abcdef",
    "commas, colons: and %3A %2C",
    "unicode ✓ ü 漢字 🙂",
    "   spaces around   ",
    "\t tabs \t",
]


def _random_strings(n: int) -> list[str]:
    """Deterministic random strings over the characters that matter to the escaping."""
    rng = random.Random(1234)
    alphabet = ["%", "\r", "\n", ":", ",", "=", "<", "<<", "::", "0A", "0D", "25", "3A", "2C",
                "a", " ", "ü", "ghadelim_"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(n)]


# ---------------------------------------------------------------------------- outside Actions

def test_outside_actions_nothing_is_printed_or_written(tmp_path: Path) -> None:
    stream = io.StringIO()
    actions = Actions({}, stream)
    assert not actions.active
    assert actions.annotate("error", "boom", file="a.py", line=3) is False
    assert actions.error("boom") is False
    assert actions.warning("w") is False
    assert actions.notice("n") is False
    assert actions.debug("d") is False
    assert actions.mask("s3cret") is False
    assert actions.start_group("g") is False
    assert actions.end_group() is False
    with actions.group("stage"):
        stream.write("inside\n")
    assert stream.getvalue() == "inside\n"
    assert actions.set_output("a", "b") is False
    assert actions.set_env("A", "b") is False
    assert actions.save_state("a", "b") is False
    assert actions.add_path(tmp_path) is False
    assert actions.summary("# hi") is False
    assert list(tmp_path.iterdir()) == []


def test_github_actions_must_be_exactly_true() -> None:
    for value in ("false", "1", "TRUE", ""):
        assert not Actions({"GITHUB_ACTIONS": value}).active
    assert Actions({"GITHUB_ACTIONS": "true"}).active


def test_files_are_written_only_where_their_variable_names_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    actions = Actions({"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(out)}, io.StringIO())
    assert actions.set_output("x", "1") is True
    assert actions.set_env("X", "1") is False  # no GITHUB_ENV
    assert actions.summary("text") is False
    assert parse_env_file(out.read_text()) == [("x", "1")]


# ---------------------------------------------------------------------------- escaping

@pytest.mark.parametrize("text", TRICKY + _random_strings(200))
def test_escaped_data_and_properties_round_trip_through_the_runner(text: str) -> None:
    assert "\n" not in escape_data(text) and "\r" not in escape_data(text)
    assert _unescape(escape_data(text), _DATA) == text
    escaped = escape_property(text)
    assert not {",", ":", "\n", "\r"} & set(escaped)
    assert _unescape(escaped, _PROPERTY) == text


def test_escaping_matches_the_documented_examples() -> None:
    assert escape_data("50%\nnext\r") == "50%25%0Anext%0D"
    assert escape_property("C:\\a,b%") == "C%3A\\a%2Cb%25"


# ---------------------------------------------------------------------------- annotations

@pytest.mark.parametrize("message", TRICKY[1:] + _random_strings(50))
def test_annotation_message_and_properties_round_trip(
        gha: tuple[Actions, io.StringIO], message: str) -> None:
    actions, stream = gha
    title = "title: with, commas\nand % percent"
    file = "dir,with/odd:name%.py"
    assert actions.annotate("warning", message, file=file, line=12, col=3, title=title)
    assert stream.getvalue().count("\n") == 1  # one line, whatever the message holds
    name, props, data = _commands(stream)[0]
    assert name == "warning"
    assert props == {"file": file, "line": "12", "col": "3", "title": title}
    assert data == message


def test_annotation_properties_in_the_documented_order(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    actions.annotate("error", "msg", file="mlops.yaml", line=4, end_line=6, col=5, end_column=9,
                     title="gha-mlops")
    assert stream.getvalue() == (
        "::error file=mlops.yaml,line=4,endLine=6,col=5,endColumn=9,title=gha-mlops::msg\n")


def test_missing_or_meaningless_positions_are_left_out(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    actions.annotate("notice", "no position", file=None, line=0, col=None, title="")
    actions.annotate("notice", "file only", file="a.txt")
    assert stream.getvalue() == "::notice::no position\n::notice file=a.txt::file only\n"


def test_level_helpers_and_debug(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    assert actions.error("e\nmore", file="x.py", line=1)
    assert actions.warning("w", title="T")
    assert actions.notice("n")
    assert actions.debug("50% of\nit")
    assert _commands(stream) == [
        ("error", {"file": "x.py", "line": "1"}, "e\nmore"),
        ("warning", {"title": "T"}, "w"),
        ("notice", {}, "n"),
        ("debug", {}, "50% of\nit"),
    ]


def test_unknown_annotation_level_is_refused(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    with pytest.raises(ValueError, match="notice, warning or error"):
        actions.annotate("info", "x")  # type: ignore[arg-type]
    assert stream.getvalue() == ""


# ---------------------------------------------------------------------------- masking

def test_a_single_line_secret_is_masked_once(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    assert actions.mask("ghp_abc%def")
    assert _commands(stream) == [("add-mask", {}, "ghp_abc%def")]


def test_every_line_of_a_multi_line_secret_is_masked(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    key = "-----BEGIN KEY-----\r\nMIIabc\n\n   \n  indented line  \n-----END KEY-----\n"
    assert actions.mask(key)
    masked = [data for name, _, data in _commands(stream) if name == "add-mask"]
    assert masked[0] == key  # the whole value, for places that show it unbroken
    assert masked[1:] == ["-----BEGIN KEY-----", "MIIabc", "indented line", "-----END KEY-----"]
    # Every line that could appear in a log is covered; no blank line is ever masked.
    for line in key.splitlines():
        assert not line.strip() or line.strip() in masked
    assert all(m.strip() for m in masked)


def test_a_blank_value_masks_nothing(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    assert actions.mask("") is False
    assert actions.mask(" \n\t\n") is False
    assert stream.getvalue() == ""


# ---------------------------------------------------------------------------- log groups

def test_group_wraps_what_is_printed_inside(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    with actions.group("train: python train.py"):
        stream.write("epoch 1\n")
    assert stream.getvalue() == "::group::train: python train.py\nepoch 1\n::endgroup::\n"


def test_group_is_closed_when_the_body_raises(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    with pytest.raises(RuntimeError), actions.group("g"):
        raise RuntimeError("boom")
    assert stream.getvalue() == "::group::g\n::endgroup::\n"
    assert actions.end_group() is False  # nothing left open


def test_groups_do_not_nest_and_titles_are_one_line(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    actions.start_group("first")
    actions.start_group("second\nline two of a multi-line command")
    actions.start_group("x" * 500)
    actions.end_group()
    lines = stream.getvalue().splitlines()
    assert lines[:4] == ["::group::first", "::endgroup::", "::group::second", "::endgroup::"]
    assert lines[4].startswith("::group::x") and len(lines[4]) < 250
    assert lines[5:] == ["::endgroup::"]


def test_group_title_is_escaped(gha: tuple[Actions, io.StringIO]) -> None:
    actions, stream = gha
    actions.start_group("100% :: done")
    assert _commands(stream)[0] == ("group", {}, "100% :: done")


# ---------------------------------------------------------------------------- outputs

@pytest.mark.parametrize("value", TRICKY + _random_strings(100))
def test_output_values_round_trip_through_the_runner(
        gha: tuple[Actions, io.StringIO], files: dict[str, Path], value: str) -> None:
    actions, stream = gha
    assert actions.set_output("before", "1")
    assert actions.set_output("value", value)
    assert actions.set_output("after", "2")
    text = files["GITHUB_OUTPUT"].read_bytes().decode("utf-8")
    assert parse_env_file(text) == [("before", "1"), ("value", value), ("after", "2")]
    assert stream.getvalue() == ""  # outputs never go through stdout


def test_a_value_containing_the_delimiter_gets_another_one(
        gha: tuple[Actions, io.StringIO], files: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    actions, _ = gha
    first, second = b"\x01" * 16, b"\x02" * 16
    candidates = iter([first, second])
    monkeypatch.setattr(runtime.os, "urandom", lambda n: next(candidates))
    collision = f"ghadelim_{first.hex()}"
    value = f"line\n{collision}\nafter the would-be end\n"
    actions.set_output("tricky", value)
    text = files["GITHUB_OUTPUT"].read_text()
    assert f"tricky<<ghadelim_{second.hex()}\n" in text
    assert parse_env_file(text) == [("tricky", value)]


def test_delimiters_are_random(gha: tuple[Actions, io.StringIO], files: dict[str, Path]) -> None:
    actions, _ = gha
    actions.set_output("a", "x")
    actions.set_output("a", "x")
    headers = [ln for ln in files["GITHUB_OUTPUT"].read_text().splitlines() if "<<" in ln]
    assert len(headers) == 2 and headers[0] != headers[1]


def test_outputs_append_to_what_other_steps_wrote(
        gha: tuple[Actions, io.StringIO], files: dict[str, Path]) -> None:
    actions, _ = gha
    files["GITHUB_OUTPUT"].write_text("earlier=value\n")
    actions.set_output("mine", "multi\nline")
    assert parse_env_file(files["GITHUB_OUTPUT"].read_text()) == [
        ("earlier", "value"), ("mine", "multi\nline")]


def test_line_breaks_are_written_as_lf_on_every_platform(
        gha: tuple[Actions, io.StringIO], files: dict[str, Path]) -> None:
    actions, _ = gha
    actions.set_output("v", "a\nb")
    assert b"\r" not in files["GITHUB_OUTPUT"].read_bytes()


@pytest.mark.parametrize("name", ["", "a=b", "a<b", "a<<b", "two\nlines", "cr\r", "nul\0",
                                  " padded"])
def test_names_that_would_break_the_file_are_refused(
        gha: tuple[Actions, io.StringIO], files: dict[str, Path], name: str) -> None:
    actions, _ = gha
    for write in (actions.set_output, actions.save_state, actions.set_env):
        with pytest.raises(ValueError):
            write(name, "value")
    assert not files["GITHUB_OUTPUT"].exists() and not files["GITHUB_ENV"].exists()


# ---------------------------------------------------------------------------- env, path, state

@pytest.mark.parametrize("value", ["", "simple", "multi\nline\n", "--max-old-space-size=4096",
                                   "x=y<<z"])
def test_set_env_round_trips(gha: tuple[Actions, io.StringIO], files: dict[str, Path],
                             value: str) -> None:
    actions, _ = gha
    assert actions.set_env("MY_VAR", value)
    assert parse_env_file(files["GITHUB_ENV"].read_text()) == [("MY_VAR", value)]


@pytest.mark.parametrize("name", ["NODE_OPTIONS", "node_options", "GITHUB_TOKEN", "GITHUB_SHA",
                                  "RUNNER_TEMP", "github_output"])
def test_set_env_refuses_what_github_forbids(
        gha: tuple[Actions, io.StringIO], files: dict[str, Path], name: str) -> None:
    actions, _ = gha
    with pytest.raises(ValueError, match=name):
        actions.set_env(name, "x")
    assert not files["GITHUB_ENV"].exists()


def test_set_env_refuses_a_nul_in_the_value(gha: tuple[Actions, io.StringIO]) -> None:
    actions, _ = gha
    with pytest.raises(ValueError, match="NUL"):
        actions.set_env("A", "x\0y")


def test_add_path_appends_one_line_per_directory(
        gha: tuple[Actions, io.StringIO], files: dict[str, Path], tmp_path: Path) -> None:
    actions, _ = gha
    assert actions.add_path(tmp_path / "bin")
    assert actions.add_path("/opt/tool dir/bin")
    assert files["GITHUB_PATH"].read_text().splitlines() == [
        str(tmp_path / "bin"), "/opt/tool dir/bin"]
    for bad in ("", "a\nb", "a\rb"):
        with pytest.raises(ValueError):
            actions.add_path(bad)
    assert len(files["GITHUB_PATH"].read_text().splitlines()) == 2


def test_save_state_round_trips(gha: tuple[Actions, io.StringIO], files: dict[str, Path]) -> None:
    actions, _ = gha
    assert actions.save_state("pid", "1234")
    assert actions.save_state("notes", "a\nb\n")
    assert parse_env_file(files["GITHUB_STATE"].read_text()) == [("pid", "1234"),
                                                                 ("notes", "a\nb\n")]


def test_summary_appends_markdown_blocks(gha: tuple[Actions, io.StringIO],
                                         files: dict[str, Path]) -> None:
    actions, _ = gha
    assert actions.summary("# Title\n\n")
    assert actions.summary("| a |\n| - |")
    assert files["GITHUB_STEP_SUMMARY"].read_text() == "# Title\n| a |\n| - |\n"


def test_the_environment_of_this_process_is_left_alone(
        gha: tuple[Actions, io.StringIO]) -> None:
    actions, _ = gha
    before = dict(os.environ)
    actions.set_env("GHA_MLOPS_TEST_VAR", "1")
    actions.add_path("/nowhere")
    assert dict(os.environ) == before
