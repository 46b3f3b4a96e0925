"""Keep anything that looks like a secret out of run records.

Two nets: environment variables whose *name* looks secret are never recorded, and every string
that goes into a record is scrubbed of known token shapes and of the literal values of any
secret-named variable present in the environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSW(OR)?D|PASSPHRASE|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH|SESSION"
    r"|COOKIE|SIGNATURE|_KEY$|^KEY$|_PAT$|DSN|CONN(ECTION)?_?STR)",
    re.IGNORECASE,
)
_TOKEN_SHAPES = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{30,}"
    r"|sk-[A-Za-z0-9_-]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})"
)
# URLs with embedded credentials: https://user:password@host
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")
MASK = "***"


def looks_secret_name(name: str) -> bool:
    """True for variable names such as ``GITHUB_TOKEN``, ``AWS_SECRET_ACCESS_KEY``, ``DB_PASSWORD``."""
    return bool(_SECRET_NAME.search(name))


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Values of secret-named variables long enough to be worth scrubbing, longest first."""
    vals = {v for k, v in environ.items() if looks_secret_name(k) and len(v) >= 6}
    return sorted(vals, key=len, reverse=True)


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    text = _TOKEN_SHAPES.sub(MASK, text)
    return _URL_CREDENTIALS.sub(MASK, text)


def scrub(obj: Any, secrets: Iterable[str]) -> Any:
    """A copy of a JSON-like ``obj`` with every string (keys too) scrubbed."""
    values = list(secrets)
    if isinstance(obj, str):
        return scrub_text(obj, values)
    if isinstance(obj, Mapping):
        return {scrub_text(str(k), values): scrub(v, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, values) for v in obj]
    return obj
