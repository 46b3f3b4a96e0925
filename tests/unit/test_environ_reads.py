"""Only the entry points read the process environment (docs/development.md): every other
module gets what it needs passed in (a ``Mapping[str, str]`` or the values already resolved),
so its tests hand it a mapping of their own instead of changing ``os.environ``.

The scan reads the source with ``ast``: any reach into the ``os`` module's environment
(``os.environ``, ``os.getenv``, ``os.putenv``..., under whatever name ``os`` was imported, or
``from os import environ``) outside the allow-list fails, naming the file and the line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gha_mlops.bootstrap import runner_backends
from gha_mlops.runners.backends.docker import DEFAULT_DOCKER_HOST, DockerBackend
from gha_mlops.runners.config import load_config
from gha_mlops.runners.scaler import FAILPOINTS_ENV, armed_failpoints

SRC = Path(__file__).resolve().parents[2] / "src" / "gha_mlops"
# The os module's ways into the process environment.
ENVIRON_NAMES = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})
ALLOWED = (
    "cli/",  # the entry points: each command reads the environment once and passes it in
    # The composition root: builds the real adapters from the environment the CLI hands it
    # (its builders take a mapping; it may read the process's own as a default).
    "bootstrap.py",
    "train/",  # by design: the helpers a stage's script imports read that stage's environment
    "testing/",  # fakes and the GitHub emulator, for tests (the product never imports them)
    # The adapter that runs git hands the process's environment on to the child (PATH, HOME,
    # git's own variables) with two overrides; it passes it through, never interprets it.
    "git.py",
    # The serving image's entry point (a script of its own, not a library): its settings
    # come as flags or as the container's variables (PREDLOG, PREDLOG_SAMPLE, AWS_*).
    "packaging/oip_server.py",
)


def environ_reads(tree: ast.AST) -> list[int]:
    """The lines of ``tree`` that reach into the ``os`` module's environment."""
    aliases = {"os"}  # the names the os module is bound to (`import os as _os`)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name == "os" and a.asname}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in ENVIRON_NAMES or a.name == "*" for a in node.names):
                lines.append(node.lineno)
        elif (isinstance(node, ast.Attribute) and node.attr in ENVIRON_NAMES
              and isinstance(node.value, ast.Name) and node.value.id in aliases):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_scan_sees_every_way_in() -> None:
    code = ("import os\nimport os as _o\nfrom os import environ\nfrom os import getenv as g\n"
            "os.environ.get('A')\n_o.getenv('B')\nos.putenv('C', 'd')\n"
            "x.environ\nos.path.join('a')\nenviron = {}\n")
    assert environ_reads(ast.parse(code)) == [3, 4, 5, 6, 7]


def test_only_the_entry_points_read_the_environment() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if not rel.startswith(ALLOWED):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
            found += [f"{rel}:{line}" for line in environ_reads(tree)]
    assert not found, ("these read os.environ; take a Mapping[str, str] (or the resolved "
                       "value) from the CLI instead: " + ", ".join(found))


def test_the_service_is_wired_from_the_environment_it_is_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("docker")
    # The process's own values, which must not be the ones used.
    monkeypatch.setenv("DOCKER_HOST", "tcp://process.invalid:2375")
    monkeypatch.setenv(FAILPOINTS_ENV, "process")
    (tmp_path / "runners.yaml").write_text(
        "github: {repo: octo/demo, token_env: TOKEN}\nwebhook: {secret_env: SECRET}\n"
        "pools: [{name: gpu, labels: [gpu], image: img, max: 1}]\n")
    config = load_config(tmp_path / "runners.yaml", {"TOKEN": "t", "SECRET": "s" * 20})
    given = {"DOCKER_HOST": "tcp://given.invalid:2375", FAILPOINTS_ENV: "after-launch,,x"}
    backend = runner_backends(config, given)["docker"]
    try:
        assert isinstance(backend, DockerBackend)
        assert backend.daemon_url == "tcp://given.invalid:2375"
    finally:
        backend.close()
    assert armed_failpoints(given) == {"after-launch", "x"}
    assert armed_failpoints({}) == frozenset()
    default = runner_backends(config, {})["docker"]
    try:
        assert isinstance(default, DockerBackend) and default.daemon_url == DEFAULT_DOCKER_HOST
    finally:
        default.close()
