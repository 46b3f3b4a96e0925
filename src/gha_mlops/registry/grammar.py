"""GTO's tag grammar (``gto/constants.py``, ``gto/tag.py`` of GTO 1.x), as pure functions.

A tag name says one event of one model (an *artifact* in GTO's words):

==============================  =================================================
``NAME@vX.Y.Z``                 register version X.Y.Z (at the tag's commit)
``NAME@vX.Y.Z!#N``              deregister it (GTO's deregister; ``model deprecate NAME
                                VERSION``)
``NAME#STAGE#N``                assign STAGE to the version registered at the tag's commit
``NAME#STAGE!#N``               unassign it (``model demote``)
``NAME@deprecated#N``           deprecate the whole model (``model deprecate NAME``)
==============================  =================================================

``N`` is a counter, one more than the largest of the model's tags, so every event of a model
has its own tag. A model name may hold ``/``; GTO's ``dir:name`` form is written
``dir=name`` in a tag (``=`` stands for ``:``).
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

Action = Literal["register", "deregister", "assign", "unassign", "deprecate"]

_NAME = r"[a-zA-Z0-9]([a-zA-Z0-9\-/_]*[a-zA-Z0-9])?"
_SEMVER = (r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
           r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
           r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
           r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?")
_ARTIFACT = rf"(?:[a-zA-Z0-9\-_./]+=)?{_NAME}"
# GTO's tag_re, with named groups only where this module reads them.
TAG_RE = re.compile(
    rf"^(?P<artifact>{_ARTIFACT})(((#(?P<stage>{_NAME})|@v(?P<version>{_SEMVER}))"
    rf"(?P<cancel>!?))|@((?P<deprecated>deprecated)|(?P<created>created)))"
    rf"(#(?P<counter>[0-9]+))?$")
MODEL_NAME_RE = re.compile(rf"^{_NAME}$")
STAGE_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-_]*[a-zA-Z0-9])?$")
SEMVER_RE = re.compile(rf"^{_SEMVER}$")
PLAIN_VERSION_RE = re.compile(r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$")
MAX_TAG_NAME = 250  # git refuses longer ref components on most file systems


class TagName(NamedTuple):
    """A parsed tag name. ``version`` is without the ``v``; ``counter`` None for a plain
    ``NAME@vX.Y.Z``. (A named tuple: the index makes one per tag, 10,000 at a time.)"""

    model: str
    action: Action
    version: str | None = None
    stage: str | None = None
    counter: int | None = None


def parse_tag(name: str) -> TagName | None:
    """The event ``name`` says, or None for a tag outside the grammar (a release tag, a
    GTO ``@created`` tag, which GTO never writes either)."""
    if len(name) > MAX_TAG_NAME:
        return None
    match = TAG_RE.fullmatch(name)
    if match is None or match["created"]:
        return None
    model = match["artifact"].replace("=", ":")
    counter = int(match["counter"]) if match["counter"] else None
    cancel = match["cancel"] == "!"
    if match["deprecated"]:
        return TagName(model, "deprecate", counter=counter)
    if match["version"]:
        return TagName(model, "deregister" if cancel else "register",
                       version=match["version"], counter=counter)
    return TagName(model, "unassign" if cancel else "assign", stage=match["stage"],
                   counter=counter)


def tag_name(event: TagName) -> str:
    """The tag that writes ``event`` (the inverse of :func:`parse_tag`)."""
    model = event.model.replace(":", "=")
    count = f"#{event.counter}" if event.counter is not None else ""
    if event.action == "register":
        return f"{model}@v{event.version}{count}"
    if event.action == "deregister":
        return f"{model}@v{event.version}!{count}"
    if event.action == "assign":
        return f"{model}#{event.stage}{count}"
    if event.action == "unassign":
        return f"{model}#{event.stage}!{count}"
    return f"{model}@deprecated{count}"


def semver_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key of a SemVer string: a pre-release sorts below its release (simplified: the
    pre-release text compares as a string)."""
    match = SEMVER_RE.fullmatch(version)
    if match is None:
        return (-1, -1, -1, 0, version)
    pre = match.group(4)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3)),
            0 if pre else 1, pre or "")


Bump = Literal["major", "minor", "patch"]
FIRST_VERSION = "1.0.0"  # a model's first version (docs/registry.md, "The version rule")


def bumped(version: str | None, bump: Bump) -> str:
    """The version after ``version`` (None: no version yet, giving ``1.0.0``)."""
    if version is None:
        return FIRST_VERSION
    major, minor, patch = semver_key(version)[:3]
    if bump == "major":
        return f"{major + 1}.0.0"
    if bump == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def parse_version(text: str) -> str:
    """``X.Y.Z`` or ``vX.Y.Z`` as ``X.Y.Z``; ValueError for anything else (no pre-release:
    the registry writes plain releases)."""
    plain = text[1:] if text.startswith("v") else text
    if not PLAIN_VERSION_RE.fullmatch(plain):
        raise ValueError(text)
    return plain
