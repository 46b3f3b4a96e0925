"""Which remote URLs are well formed: a pure check shared by the loader (which names the file
and line) and :func:`gha_mlops.data.stores.open_store` (for URLs that come from elsewhere).

A remote is a directory path, ``file:///abs/path`` or ``s3://bucket/prefix`` (``https://``
is recognised, and refused where it is used: it is read-only). Anything else that starts with
``word:`` looks like a URL and is refused: taken as a directory, ``s3:/bucket`` (one slash)
would make a folder named ``s3:`` in the workspace and push the datasets there. Only a leading
``word:`` counts, so ``backups/2024:01`` is an ordinary directory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gha_mlops.config.model import Remote
from gha_mlops.errors import UsageError

URL_FORMS = "s3://bucket/prefix, file:///absolute/path or a plain directory path"

# A URL scheme as RFC 3986 writes it, at the very start, before any '/'.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_KNOWN = ("s3", "file", "http", "https")


def remote_url_problem(url: str) -> tuple[str, str] | None:
    """``(what is wrong, what to write instead)`` for a remote URL that is not one of the
    known forms, or None when it is one (a path, or ``s3://``, ``file://``, ``http(s)://``
    with its two slashes; whether such a URL can be used is the store's business)."""
    if not url.strip():
        return "the remote URL is empty", f"use {URL_FORMS}"
    found = _SCHEME.match(url)
    if found is None:
        return None
    scheme = found.group(1)
    rest = url[found.end():]
    lower = scheme.lower()
    if len(scheme) == 1 and (not rest or rest[0] in "/\\"):
        return (f"{url!r} looks like a Windows drive path",
                "gha-mlops runs on Linux and macOS: write a POSIX directory path such as "
                "/mnt/nas/datasets, or an s3:// URL")
    if lower in _KNOWN and rest.startswith("//"):
        return None
    if lower in _KNOWN:
        tail = rest.lstrip("/")
        if lower == "file":
            fixed = "file:///" + tail
        else:
            fixed = f"{lower}://{tail}" if tail else f"{lower}://bucket/prefix"
        return (f"{url!r} is not a valid {lower}:// URL (a scheme is followed by '//'); "
                "taken as a directory it would create a folder named "
                f"{(scheme + ':')!r} in the workspace",
                f"did you mean {fixed!r}?")
    if rest.startswith("//"):
        return (f"{url!r} has an unknown scheme {scheme!r}", f"use {URL_FORMS}")
    return (f"{url!r} starts with {(scheme + ':')!r}, which reads as a URL scheme gha-mlops "
            "does not know",
            f"use {URL_FORMS}; for a directory whose name has a ':', write ./{url}")


def choose_remote(remotes: Mapping[str, Remote], default: str | None,
                  name: str | None) -> Remote:
    """The remote named ``name``, else ``default_remote``, else the only one declared;
    :class:`UsageError` saying what to write when there is none to choose."""
    if not remotes:
        raise UsageError("no remotes are declared in mlops.yaml",
                         hint="add one, e.g.\n  remotes:\n    storage:\n      url: s3://bucket/"
                         "datasets   # or a shared directory: /mnt/nas/datasets")
    chosen = name or default or (next(iter(remotes)) if len(remotes) == 1 else None)
    if chosen is None:
        raise UsageError("several remotes are declared and none was chosen",
                         hint="pass --remote NAME or set `default_remote:` in mlops.yaml "
                         f"(remotes: {', '.join(remotes)})")
    if chosen not in remotes:
        raise UsageError(f"no remote named {chosen!r} in mlops.yaml",
                         hint="remotes: " + ", ".join(remotes))
    return remotes[chosen]
