"""The git commands of the registry, through :func:`gha_mlops.git._run` (one runner of git:
argument lists, ``--`` before outside values, timeouts, no prompts)."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from gha_mlops.git import GitError, _run, _text, has_config

NOTES_REF = "refs/notes/gha-mlops"
# The reference profiles of versions, one note each (a profile is too large for NOTES_REF).
PROFILE_NOTES_REF = "refs/notes/gha-mlops-profiles"
PUSH_TIMEOUT = 300.0
_OID = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
_FIELDS = ("%(refname:strip=2)", "%(objecttype)", "%(objectname)", "%(*objecttype)",
           "%(*objectname)", "%(taggerdate:unix)", "%(taggername)", "%(taggeremail)",
           "%(contents)")


class RawTag(NamedTuple):
    """One annotated tag as ``git for-each-ref`` gives it."""

    name: str
    object: str  # the tag object
    target: str  # the commit it points to
    time: int  # the tagger's date, Unix seconds
    tagger: str
    email: str
    message: str


def list_tags(repo: Path) -> list[RawTag]:
    """Every annotated tag pointing at a commit, with its message, from ONE
    ``git for-each-ref refs/tags``. Lightweight tags and tags of other objects are left out
    (GTO ignores them too). Records end with a separator made fresh for each call, so no tag
    message can forge a record boundary."""
    token = os.urandom(12).hex()
    fmt = "%00".join(_FIELDS) + f"%00{token}"
    proc = _run(["for-each-ref", f"--format={fmt}", "refs/tags"], repo)
    if proc.returncode != 0:
        raise GitError(f"`git for-each-ref` failed in {repo}: {_text(proc.stderr).strip()}",
                       stderr=_text(proc.stderr).strip())
    out: list[RawTag] = []
    # Decoded once (odd bytes shown, never an error), then split: 10,000 tags per call.
    text = proc.stdout.decode("utf-8", "backslashreplace")
    for record in text.split(f"\0{token}\n"):
        fields = record.split("\0", len(_FIELDS) - 1)
        if len(fields) != len(_FIELDS) or fields[1] != "tag" or fields[3] != "commit":
            continue
        when = int(fields[5]) if fields[5].isdigit() else 0
        out.append(RawTag(fields[0], fields[2], fields[4], when, fields[6],
                          fields[7].strip("<>"), fields[8]))
    return out


def refs_fingerprint(repo: Path) -> bytes:
    """What changes whenever a tag is created, moved or deleted: the object names of every
    tag, from ``git for-each-ref --format=%(objectname)`` (no message is read)."""
    proc = _run(["for-each-ref", "--format=%(refname)%00%(objectname)", "refs/tags"], repo)
    return proc.stdout if proc.returncode == 0 else b""


def commit_exists(repo: Path, commit: str) -> bool:
    """True when ``commit`` (a full object name) is a commit of ``repo``."""
    if not _OID.fullmatch(commit):
        return False
    proc = _run(["cat-file", "-t", commit], repo)
    return proc.returncode == 0 and proc.stdout.strip() == b"commit"


def create_tag(repo: Path, name: str, commit: str, message: str, *, when: int) -> None:
    """An annotated tag ``name`` on ``commit`` with ``message``, dated ``when`` (the tagger
    date GTO orders events by), signed by git's committer identity (``git var``: the
    configuration or ``GIT_COMMITTER_NAME``/``_EMAIL``), else by ``gha-mlops``. The tag object
    is written with ``hash-object`` and the ref created with ``update-ref`` expecting no old
    value, so an existing tag is never replaced."""
    proc = _run(["var", "GIT_COMMITTER_IDENT"], repo)
    ident = _text(proc.stdout).strip() if proc.returncode == 0 else ""
    who = ident.rsplit(" ", 2)[0] if ident.count(" ") >= 2 and ">" in ident else (
        "gha-mlops <gha-mlops@localhost>")
    body = (f"object {commit}\ntype commit\ntag {name}\ntagger {who} {when} +0000\n\n"
            f"{message if message.endswith(chr(10)) else message + chr(10)}")
    with _scratch(body) as path:
        proc = _run(["hash-object", "-t", "tag", "-w", "--", str(path)], repo)
    if proc.returncode != 0:
        err = _text(proc.stderr).strip()
        raise GitError(f"cannot write the tag object of {name}: {err}", stderr=err)
    obj = _text(proc.stdout).strip()
    proc = _run(["update-ref", "-m", "gha-mlops model", f"refs/tags/{name}", obj, ""], repo)
    if proc.returncode != 0:
        err = _text(proc.stderr).strip()
        raise GitError(f"cannot create the tag {name}: {err}", stderr=err)


@contextlib.contextmanager
def _scratch(text: str) -> Iterator[Path]:
    """A private temporary file holding ``text`` (git reads messages from files here: no
    process of this module takes stdin)."""
    fd, path = tempfile.mkstemp(prefix="gha-mlops-tag-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        yield Path(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def rev_parse(repo: Path, ref: str) -> str | None:
    proc = _run(["rev-parse", "-q", "--verify", "--end-of-options", ref], repo)
    return _text(proc.stdout).strip() if proc.returncode == 0 else None


def note_of(repo: Path, obj: str) -> str:
    """The gha-mlops note on ``obj`` ("" when none)."""
    if rev_parse(repo, NOTES_REF) is None:
        return ""
    proc = _run(["notes", f"--ref={NOTES_REF}", "show", obj], repo)
    return _text(proc.stdout) if proc.returncode == 0 else ""


def profile_note(repo: Path, obj: str, limit: int) -> bytes | None:
    """The bytes of the profile note on ``obj`` (refs/notes/gha-mlops-profiles; None when
    none, or when larger than ``limit``: not ours)."""
    if rev_parse(repo, PROFILE_NOTES_REF) is None:
        return None
    proc = _run(["notes", f"--ref={PROFILE_NOTES_REF}", "show", obj], repo)
    if proc.returncode != 0 or len(proc.stdout) > limit + 1:
        return None
    return proc.stdout.removesuffix(b"\n")  # git ends a note with a newline


def set_profile_note(repo: Path, obj: str, data: bytes) -> None:
    """Make ``data`` (one line: a profile's canonical JSON) the profile note on ``obj``."""
    ident = [] if has_config(repo, "user.email") else [
        "-c", "user.name=gha-mlops", "-c", "user.email=gha-mlops@localhost"]
    with _scratch(data.decode("ascii") + "\n") as path:
        proc = _run([*ident, "notes", f"--ref={PROFILE_NOTES_REF}", "add", "-f", "-F",
                     str(path), "--", obj], repo)
    if proc.returncode != 0:
        err = _text(proc.stderr).strip()
        raise GitError(f"`git notes add` failed: {err}", stderr=err)


def append_note(repo: Path, obj: str, line: str) -> None:
    """Append ``line`` to the gha-mlops note on ``obj`` (a commit of refs/notes/gha-mlops)."""
    ident = [] if has_config(repo, "user.email") else [
        "-c", "user.name=gha-mlops", "-c", "user.email=gha-mlops@localhost"]
    with _scratch(line + "\n") as path:
        proc = _run([*ident, "notes", f"--ref={NOTES_REF}", "append", "-F", str(path),
                     "--", obj], repo)
    if proc.returncode != 0:
        err = _text(proc.stderr).strip()
        raise GitError(f"`git notes append` failed: {err}", stderr=err)


def remote_ref(repo: Path, remote: str, ref: str) -> str | None:
    """The object ``ref`` names on ``remote`` (``git ls-remote``), None when absent."""
    proc = _run(["ls-remote", "--end-of-options", remote, ref], repo, timeout=PUSH_TIMEOUT)
    if proc.returncode != 0:
        err = _text(proc.stderr).strip()
        raise GitError(f"`git ls-remote {remote}` failed: {err}", stderr=err,
                       hint="check the remote's name or URL and your access to it")
    for line in _text(proc.stdout).splitlines():
        oid, _, name = line.partition("\t")
        if name == ref:
            return oid
    return None


def push(repo: Path, remote: str, refs: list[str]) -> None:
    """``git push REMOTE REF...`` (never forced: a ref that differs remotely is refused by
    git)."""
    proc = _run(["push", "--porcelain", "--end-of-options", remote,
                 *[f"{r}:{r}" for r in refs]], repo, timeout=PUSH_TIMEOUT)
    if proc.returncode != 0:
        err = _text(proc.stderr).strip() or _text(proc.stdout).strip()
        raise GitError(f"`git push {remote}` failed: {err}", stderr=err,
                       hint="nothing was forced; fetch the remote's tags (git fetch --tags) "
                            "and try again")
