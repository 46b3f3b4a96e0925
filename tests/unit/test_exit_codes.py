"""The exit codes are one table (:class:`gha_mlops.errors.ExitCode`): every error class in the
package takes its code from it, no two meanings share a code, and docs/exit-codes.md lists
exactly that table."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import gha_mlops
from gha_mlops.errors import ExitCode, GhaMlopsError

DOC = Path(__file__).resolve().parents[2] / "docs" / "exit-codes.md"
# Modules that are scripts, not library code: importing them runs them.
_SCRIPTS = ("gha_mlops.__main__", "gha_mlops.demo.project.")
# Optional dependencies (extras): a module that needs a missing one is skipped, not failed.
_EXTRAS = {"torch", "numpy", "matplotlib", "boto3", "botocore", "github", "docker",
           "prometheus_client", "jinja2"}


def _import_all() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(gha_mlops.__path__, "gha_mlops."):
        if info.name in _SCRIPTS or info.name.startswith(_SCRIPTS[1]):
            continue
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] not in _EXTRAS:
                raise
            continue
        names.append(info.name)
    return names


def _subclasses(cls: type[GhaMlopsError]) -> set[type[GhaMlopsError]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def test_every_error_class_takes_its_code_from_the_table() -> None:
    modules = _import_all()
    assert "gha_mlops.github.port" in modules and "gha_mlops.runners.backends.base" in modules
    classes = {c for c in _subclasses(GhaMlopsError) | {GhaMlopsError}
               if c.__module__.startswith("gha_mlops")}
    assert len(classes) > 10  # the walk found the package's errors, not just the root
    outside = {f"{c.__module__}.{c.__qualname__}: {c.exit_code!r}" for c in classes
               if not isinstance(c.exit_code, ExitCode)}
    assert not outside, "exit codes not taken from errors.ExitCode"


def test_no_two_meanings_share_a_code() -> None:
    # An IntEnum member with the value of an earlier one is an alias, not a member.
    names = list(ExitCode.__members__)
    assert len({int(code) for code in ExitCode}) == len(names), names
    assert ExitCode.INTERNAL == 70 and ExitCode.INTERRUPTED == 130


def test_the_docs_list_exactly_the_table() -> None:
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*`?([A-Z_]+)`?\s*\|", DOC.read_text("utf-8"), re.M)
    assert sorted((int(code), name) for code, name in rows) == sorted(
        (int(code), code.name) for code in ExitCode)
