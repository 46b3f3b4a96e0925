"""The layers of src/gha_mlops, read from the imports themselves (every import, at the top of
a module or inside a function: a lazy import that runs upward is still a dependency).

    cli -> bootstrap -> services (sweep, demo -> pipeline -> data; reporting; runners; train)
        -> runs -> config, github, store, gha, git -> errors, _fs

Arrows point one way: the test fails on an import a package is not allowed (ALLOWED below),
on any cycle between packages, and on a third-party SDK imported outside its adapter module.
Where new code goes: docs/development.md, "Architecture".
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "gha_mlops"

# The example project the demo copies is user code, not ours; the GitHub emulator is a test
# server with its own rules (it imports nothing of the product).
EXCLUDED = ("demo/project/", "testing/github_emulator/")

_BOTTOM = {"errors", "_fs", "_closing"}
_BASE = _BOTTOM | {"git", "gha", "store", "config", "github", "runs"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_fs": {"errors"},
    "_closing": set(),
    "git": _BOTTOM,
    "gha": _BOTTOM,
    "store": _BOTTOM,
    "config": _BOTTOM | {"gha", "store"},
    "github": _BOTTOM | {"gha"},
    "runs": _BOTTOM | {"config", "store", "gha"},
    "train": _BOTTOM | {"config"},
    "data": _BASE,
    "pipeline": _BASE | {"data", "train"},
    "registry": _BASE,
    "reporting": _BASE | {"registry"},
    "packaging": _BASE | {"registry", "train", "deploy", "monitor"},
    "runners": _BASE,
    "sweep": _BASE | {"pipeline", "data", "train"},
    "deploy": _BASE | {"registry"},
    "monitor": _BASE | {"registry", "data", "reporting"},
    "demo": _BASE | {"pipeline", "data", "registry", "packaging", "deploy"},
    "bootstrap": _BASE | {"data", "pipeline", "reporting", "runners", "sweep", "demo",
                          "registry", "packaging", "deploy", "monitor"},
    "cli": _BASE | {"data", "pipeline", "reporting", "runners", "sweep", "demo", "train",
                    "bootstrap", "registry", "packaging", "deploy", "monitor"},
    "testing": _BASE | {"data", "runners", "reporting", "pipeline", "bootstrap", "registry",
                        "packaging", "deploy", "monitor"},
    "__main__": {"cli"},
    "__init__": set(),
}

# Third-party SDKs, and the only modules that may import them (the adapters).
ADAPTERS: dict[str, str] = {
    "boto3": r"data/(stores|s3\w*)\.py|reporting/images\w*\.py|runners/backends/ec2\w*\.py",
    "botocore": r"data/(stores|s3\w*)\.py|reporting/images\w*\.py|runners/backends/ec2\w*\.py",
    "github": r"github/(pygithub|runners)\.py",
    "docker": r"runners/backends/docker\w*\.py|packaging/image\.py|deploy/docker_hosts\.py",
    "matplotlib": r"reporting/plots\.py",
    "torch": r"train/\w+\.py|packaging/export\w*\.py",
    "onnx": r"train/_onnx\.py|packaging/(export|signature)\w*\.py",
    "onnxscript": r"train/_onnx\.py|packaging/export\w*\.py",
    "onnxruntime": r"train/_onnx\.py|packaging/(export\w*|oip_server)\.py",
    "skl2onnx": r"packaging/export\w*\.py",
    "sklearn": r"packaging/export\w*\.py",
    "jinja2": r"reporting/\w*template\w*\.py",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(EXCLUDED):
            continue
        out[rel] = path
    return out


def _imports(rel: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import of ``path``, relative ones made absolute."""
    # The package a relative import starts from: the module's folder (for an __init__.py,
    # the package itself, which is the same folder).
    here = ["gha_mlops", *rel[:-3].split("/")][:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return found


def _own_package(rel: str) -> str:
    top = rel.split("/")[0]
    return top[:-3] if top.endswith(".py") else top


def _package_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for rel, path in _modules().items():
        mine = _own_package(rel)
        for name, line in _imports(rel, path):
            parts = name.split(".")
            if parts[0] != "gha_mlops" or len(parts) < 2:
                continue
            theirs = parts[1]
            if theirs != mine:
                edges[(mine, theirs)].append(f"{rel}:{line} imports {name}")
    return edges


def test_every_import_between_packages_points_down() -> None:
    wrong = [f"{a} may not import {b}: " + "; ".join(where[:3])
             for (a, b), where in sorted(_package_edges().items())
             if b not in ALLOWED.get(a, set())]
    assert not wrong, "imports that run against the layers:\n" + "\n".join(wrong)


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in _package_edges():
        graph[a].add(b)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles between packages: " + "; ".join(
        " -> ".join(c) for c in cycles)


def test_sdks_are_imported_only_by_their_adapters() -> None:
    wrong = []
    for rel, path in _modules().items():
        for name, line in _imports(rel, path):
            sdk = name.split(".")[0]
            if sdk in ADAPTERS and not re.fullmatch(ADAPTERS[sdk], rel):
                wrong.append(f"{rel}:{line} imports {name}")
    assert not wrong, "SDK imports outside their adapter modules:\n" + "\n".join(wrong)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The reader of imports finds lazy and relative imports (so the checks above can fail)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from ..cli import main\n    import boto3\n")
    found = [name for name, _ in _imports("store/m.py", module)]
    assert found == ["gha_mlops.cli", "boto3"]
    assert "cli" not in ALLOWED["store"]


MAX_FUNCTION_LINES = 80
MAX_CLI_MODULE_LINES = 150


def test_no_function_is_over_80_lines() -> None:
    long = []
    for rel, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                size = (node.end_lineno or node.lineno) - start + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{rel}:{start} {node.name} is {size} lines")
    assert not long, "functions over the limit (split them):\n" + "\n".join(long)


def test_commands_are_thin() -> None:
    big = [f"{rel} is {n} lines" for rel, path in _modules().items()
           if rel.startswith("cli/") and (n := len(path.read_text().splitlines()))
           > MAX_CLI_MODULE_LINES]
    assert not big, ("command modules over the limit (move the logic into its service):\n"
                     + "\n".join(big))
