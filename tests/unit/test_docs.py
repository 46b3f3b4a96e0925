"""The documentation says what the code does: every YAML snippet in README.md and docs/ (and
the caller examples in the header comments of .github/workflows/*.yml) parses; every caller
workflow among them passes actionlint against this repository's real reusable workflows and
actions; the extras the README lists are pyproject's; a missing extra names the install the
docs give; and no phrase is written twice in a row.

A snippet opts out only with ``<!-- not-checked: REASON -->`` on the line before its fence,
REASON saying why (a deliberately partial snippet); use it sparingly.

actionlint does not fetch a remote ``uses:``: ``<owner>/gha-mlops/.github/workflows/x.yml@v1``
is accepted whatever its ``with:``, ``secrets:`` and ``needs.<job>.outputs`` say. So the
snippets are linted as files of a scratch project holding copies of this repository's
``action.yml``, ``actions/`` and ``.github/workflows/``, with every reference to gha-mlops
rewritten to the local form (``./.github/workflows/x.yml``, ``./actions/x``, ``./``), which
actionlint does read: unknown or missing inputs, undefined outputs, and permissions a nested
job needs but the caller does not grant are all reported. A canary proves the resolution
happens (actionlint silently skips local references outside a git project).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *REPO.glob("docs/*.md")])
WORKFLOWS = sorted(REPO.glob(".github/workflows/*.yml"))

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)\s*$")
_OPT_OUT = re.compile(r"^\s*<!--\s*not-checked:(?P<reason>.*?)-->\s*$")
# A reference to this repository as the docs write it: <owner>/gha-mlops[/path]@ref.
_OWN_USES = re.compile(r"(?P<key>\buses:\s*)<owner>/gha-mlops(?:/(?P<path>[^@\s]*))?@\S+")
# Labels the docs give self-hosted runner pools (docs/runners.md), for actionlint's runner-label.
_RUNNER_LABELS = ["gpu"]


@dataclass(frozen=True)
class Snippet:
    """A fenced block of a Markdown file, or an indented example in a workflow's header."""

    path: Path
    line: int  # 1-based line of the snippet's first line in ``path``
    lang: str
    text: str
    opt_out: str | None = None  # the reason given by a not-checked marker

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def markdown_snippets(path: Path, text: str | None = None) -> list[Snippet]:
    """Every fenced block of a Markdown file, dedented by its fence's indentation (a block
    inside a list item), with the reason of a ``not-checked`` marker on the line before."""
    lines = (path.read_text() if text is None else text).splitlines()
    found: list[Snippet] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        close = re.compile(rf"^[ \t]*{re.escape(m['fence'])}{m['fence'][0]}*\s*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), len(lines))
        body = [ln[len(m["indent"]):] if ln.startswith(m["indent"]) else ln
                for ln in lines[i + 1:end]]
        before = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        marker = _OPT_OUT.match(before)
        found.append(Snippet(path, i + 2, m["lang"].lower(), "\n".join(body) + "\n",
                             marker["reason"].strip() if marker else None))
        i = end + 1
    return found


def header_snippets(path: Path) -> list[Snippet]:
    """The examples in a workflow's leading comment: runs of ``#`` lines indented by two or
    more spaces (prose is ``# text``), dedented."""
    found: list[Snippet] = []
    run: list[str] = []
    start = 0
    lines = path.read_text().splitlines()
    for n, line in enumerate([*lines, ""], start=1):
        if line.startswith("#  "):
            if not run:
                start = n
            run.append(line[1:])
            continue
        if run:
            found.append(Snippet(path, start, "yaml", textwrap.dedent("\n".join(run)) + "\n"))
            run = []
        if not line.startswith("#"):
            break
    return found


YAML_SNIPPETS = [s for doc in DOCS for s in markdown_snippets(doc) if s.lang in ("yaml", "yml")]
HEADER_SNIPPETS = [s for wf in WORKFLOWS for s in header_snippets(wf)]
ALL_YAML = YAML_SNIPPETS + HEADER_SNIPPETS


def _parse(snippet: Snippet) -> Any:
    try:
        return yaml.safe_load(snippet.text)
    except yaml.YAMLError as err:
        pytest.fail(f"{snippet.where}: the YAML snippet does not parse:\n{err}\n---\n"
                    f"{snippet.text}")


def _is_workflow(doc: Any) -> bool:
    # PyYAML (YAML 1.1) reads the key `on` as True.
    return isinstance(doc, dict) and any(k in doc for k in ("jobs", "on", True))


def test_snippets_are_found_and_opt_outs_say_why() -> None:
    assert len(YAML_SNIPPETS) >= 15
    assert any(s.path.name == "retrain.yml" for s in HEADER_SNIPPETS)
    for s in ALL_YAML:
        if s.opt_out is not None:
            assert len(s.opt_out.split()) >= 3, (
                f"{s.where}: `<!-- not-checked: REASON -->` needs a reason (three words or more)")


def test_the_extractor_reads_indented_fences_and_markers(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    text = ("1. item\n\n   ```yaml\n   a: 1\n   ```\n\n"
            "<!-- not-checked: only the step matters here -->\n```yaml\n- run: x\n```\n")
    first, second = markdown_snippets(doc, text)
    assert (first.line, first.text, first.opt_out) == (4, "a: 1\n", None)
    assert (second.line, second.opt_out) == (9, "only the step matters here")


@pytest.mark.parametrize("snippet", [s for s in ALL_YAML if s.opt_out is None],
                         ids=lambda s: s.where)
def test_every_yaml_snippet_parses(snippet: Snippet) -> None:
    _parse(snippet)


def _callers() -> list[Snippet]:
    return [s for s in ALL_YAML if s.opt_out is None and _is_workflow(_parse(s))]


def _scratch_project(root: Path) -> Path:
    """A git project holding this repository's actions and workflows, so actionlint resolves
    local ``uses:`` against the real files (outside a git project it skips them silently)."""
    (root / ".git").mkdir(parents=True)
    shutil.copy2(REPO / "action.yml", root / "action.yml")
    shutil.copytree(REPO / "actions", root / "actions")
    shutil.copytree(REPO / ".github/workflows", root / ".github/workflows")
    config = root / "actionlint.yaml"
    config.write_text(yaml.safe_dump({"self-hosted-runner": {"labels": _RUNNER_LABELS}}))
    return config


def _localise(snippet: Snippet) -> str:
    """The snippet with references to gha-mlops in their local form; a header example, a
    sketch of the jobs only, gets an `on:` when it has none."""
    text = _OWN_USES.sub(lambda m: f"{m['key']}./{m['path'] or ''}", snippet.text)
    for line in text.splitlines():
        value = line.partition("uses:")[2].strip()
        assert "gha-mlops" not in value or value.startswith("./"), (
            f"{snippet.where}: `{value}`: write references to this repository as "
            "`<owner>/gha-mlops[/PATH]@REF`, so the docs test can check them")
    doc = yaml.safe_load(text)
    if snippet.path.suffix == ".yml" and True not in doc and "on" not in doc:
        text = "on: workflow_dispatch\n" + text
    return text


def _actionlint() -> str:
    found = Path(sys.executable).parent / "actionlint"
    which = str(found) if found.exists() else shutil.which("actionlint")
    if which is None:
        pytest.fail("actionlint is not installed: `make test` installs it (pip extra dev)")
    return which


CANARY = """\
on: push
jobs:
  retrain:
    uses: <owner>/gha-mlops/.github/workflows/retrain.yml@v1
    with:
      not-an-input: x
"""


def test_every_caller_workflow_passes_actionlint(tmp_path: Path) -> None:
    callers = _callers()
    assert any(s.path.name == "README.md" for s in callers)
    assert any(s.path.name == "retrain.yml" for s in callers)
    config = _scratch_project(tmp_path)
    canary = Snippet(REPO / "docs/canary.md", 1, "yaml", CANARY)
    files: dict[str, tuple[Snippet, int]] = {}
    for n, snippet in enumerate([canary, *callers]):
        text = _localise(snippet)
        name = f"snippet-{n:02d}.yml"
        (tmp_path / ".github/workflows" / name).write_text(text)
        files[name] = (snippet, len(text.splitlines()) - len(snippet.text.splitlines()))
    proc = subprocess.run([_actionlint(), "-oneline", "-config-file", str(config),
                           *(f".github/workflows/{name}" for name in files)],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    findings: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^\.github/workflows/(snippet-\d+\.yml):(\d+):\d+: (.*)$", line)
        assert m, proc.stdout + proc.stderr
        snippet, added = files[m[1]]
        findings.setdefault(m[1], []).append(
            f"{snippet.path.relative_to(REPO)}:{snippet.line + int(m[2]) - 1 - added}: {m[3]}")
    canary_findings = findings.pop("snippet-00.yml", [])
    assert any('"not-an-input" is not defined' in f for f in canary_findings), (
        "actionlint did not resolve the local reusable workflow: the check would be empty\n"
        + proc.stdout + proc.stderr)
    assert not findings, "\n".join(f for fs in findings.values() for f in fs)
    assert proc.returncode == 1, proc.stderr  # 1: only the canary's findings


# ---------------------------------------------------------------------------------------------
# Extras


def _pyproject() -> dict[str, Any]:
    # tomllib is 3.11+; the unit tests also run on 3.10, where tomli may be missing.
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dist(requirement: str) -> str:
    """The normalised distribution name of a requirement (`PyGithub>=2.1` -> `pygithub`)."""
    name = re.match(r"^\s*([A-Za-z0-9._-]+)", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name[1]).lower()


def _installing_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("Installing:")
    end = text.find("\n## ", start)
    return text[start:end if end != -1 else len(text)]


def test_the_readme_lists_every_extra_and_the_core() -> None:
    project = _pyproject()["project"]
    section = _installing_section()
    named = set(re.findall(r"gha-mlops\[([\w-]+)\]", section))
    extras = set(project["optional-dependencies"]) - {"dev"}
    assert extras <= named, f"README's `Installing:` omits the extras {sorted(extras - named)}"
    assert named <= extras, f"README's `Installing:` names unknown extras {sorted(named - extras)}"
    words = {re.sub(r"[-_.]+", "-", w).lower() for w in re.findall(r"[\w.-]+", section)}
    missing = [_dist(r) for r in project["dependencies"] if _dist(r) not in words]
    assert not missing, f"README's `Installing:` omits core dependencies {missing}"


def test_every_extra_the_docs_name_exists() -> None:
    extras = set(_pyproject()["project"]["optional-dependencies"])
    for doc in DOCS:
        for group in re.findall(r"gha-mlops\[([\w,-]+)\]", doc.read_text()):
            unknown = set(group.split(",")) - extras
            assert not unknown, f"{doc.relative_to(REPO)}: gha-mlops[{group}]: no extra {unknown}"


def test_a_missing_extra_names_the_smallest_install_that_provides_it() -> None:
    """`missing_extra("matplotlib", X)` must name the extra the docs give for it: the smallest
    one holding the package (`report` is exactly matplotlib; `torch` also brings torch)."""
    extras = {name: {_dist(r) for r in reqs}
              for name, reqs in _pyproject()["project"]["optional-dependencies"].items()
              if name != "dev"}
    calls = []
    for path in sorted((REPO / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "missing_extra"
                    and len(node.args) == 2
                    and all(isinstance(a, ast.Constant) for a in node.args)):
                module, extra = (a.value for a in node.args)  # type: ignore[attr-defined]
                calls.append((f"{path.relative_to(REPO)}:{node.lineno}", _dist(module), extra))
    assert len(calls) >= 5
    # The docker SDK serves three commands with their own extras: the runner autoscaler
    # (`runners`), `gha-mlops package` (`package`, which also needs onnx) and `gha-mlops
    # deploy` (`deploy`, with paramiko for ssh:// hosts).
    also_right = {"docker": {"package", "runners", "deploy"}}
    for where, dist, extra in calls:
        holders = sorted((len(reqs), name) for name, reqs in extras.items() if dist in reqs)
        assert holders, f"{where}: no extra provides {dist}"
        assert extra == holders[0][1] or extra in also_right.get(dist, set()), (
            f"{where}: missing_extra names [{extra}]; the smallest extra with {dist} is "
            f"[{holders[0][1]}]")


# ---------------------------------------------------------------------------------------------
# Prose

_DOUBLED = re.compile(r"(?<![\w`/.-])((?:[A-Za-z']+[ \t]+){0,5}[A-Za-z']+)[ \t]+\1(?![\w`])")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_phrase_is_written_twice_in_a_row(doc: Path) -> None:
    prose, fence = [], None
    for line in doc.read_text().splitlines():  # code may repeat itself on purpose
        m = _FENCE.match(line)
        if m and (fence is None or (m["fence"].startswith(fence) and not m["lang"])):
            fence = m["fence"] if fence is None else None
        elif fence is None:
            prose.append(line)
    doubled = [m[0] for m in _DOUBLED.finditer("\n".join(prose))]
    assert not doubled, f"{doc.relative_to(REPO)}: written twice: {doubled}"
