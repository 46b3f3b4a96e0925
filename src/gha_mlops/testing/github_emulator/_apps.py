"""GitHub Apps: key pairs, JWT authentication (RS256), installations and their access tokens
(which become emulator tokens with the installation's permissions and an expiry)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ._handlers import (
    ApiError,
    Request,
    Response,
    _repo_fields,
    example,
    paginate,
    route,
    user,
)
from ._state import App, Installation, Store, Token

# The operations a GitHub App calls with its JWT (every other one wants a token).
JWT_OPERATIONS = frozenset(
    {
        "apps/get-repo-installation",
        "apps/get-org-installation",
        "apps/create-installation-access-token",
    }
)
# GitHub refuses a JWT whose ``exp`` is more than ten minutes ahead; clocks may drift a minute.
MAX_JWT_LIFETIME = 600
CLOCK_DRIFT = 60
BAD_JWT = "A JSON web token could not be decoded"
_LEVELS = {"read": 1, "write": 2, "admin": 3}


def new_app(app_id: int, slug: str) -> App:
    """An App with a fresh 2048-bit RSA key pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    identity = Token(f"jwt:{app_id}", f"{slug}[bot]", {}, "integration", app_id=app_id)
    return App(app_id, slug, private_pem, public_pem, identity)


def authenticate_jwt(store: Store, value: str) -> Token | str:
    """The App a JWT authenticates (its identity token), or why it does not (GitHub's words)."""
    try:
        claims = jwt.decode(value, options={"verify_signature": False})
        app = store.apps.get(int(claims.get("iss", 0)))
        if app is None:
            return BAD_JWT
        claims = jwt.decode(
            value,
            app.public_key_pem,
            algorithms=["RS256"],
            options={"require": ["iat", "exp", "iss"], "verify_exp": False, "verify_iat": False},
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        return BAD_JWT
    now = time.time()
    if not isinstance(claims["exp"], int) or claims["exp"] <= now:
        return (
            "'Expiration time' claim ('exp') must be a numeric value representing the future "
            "time at which the assertion expires"
        )
    if claims["exp"] > now + MAX_JWT_LIFETIME + CLOCK_DRIFT or (
        isinstance(claims["iat"], int)
        and claims["exp"] - claims["iat"] > MAX_JWT_LIFETIME + CLOCK_DRIFT
    ):
        return "'Expiration time' claim ('exp') is too far in the future"
    if not isinstance(claims["iat"], int) or claims["iat"] > now + CLOCK_DRIFT:
        return (
            "'Issued at' claim ('iat') must be an Integer representing the time that the "
            "assertion was issued"
        )
    return app.identity


def install(
    store: Store,
    app_id: int,
    account: str | None,
    repo: str | None,
    permissions: Mapping[str, str] | None,
) -> Installation:
    if app_id not in store.apps:
        raise KeyError(f"no GitHub App {app_id}: create it with create_app")
    if (account is None) == (repo is None):
        raise ValueError("install an App on an account or on one repository: pass one of them")
    owner = account or str(repo).partition("/")[0]
    repos = (str(repo).lower(),) if repo else None
    found = Installation(
        store.ids(), app_id, owner, repos, dict(permissions) if permissions is not None else None
    )
    store.installations[found.id] = found
    return found


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- handlers -------------------------------------------------------------------------------


def _app(req: Request) -> App:
    app_id = req.token.app_id if req.token is not None else None
    if app_id is None:
        raise ApiError(401, BAD_JWT)
    return req.store.apps[app_id]


def render_installation(req: Request, inst: Installation) -> dict[str, Any]:
    app = req.store.apps[inst.app_id]
    org = req.store.org(inst.account)
    out = example(req, "installation")
    out.update(
        id=inst.id,
        app_id=app.id,
        app_slug=app.slug,
        account=user(req, inst.account),
        target_id=org.id if org else abs(hash(inst.account)) % 10_000_000,
        target_type="Organization" if org else "User",
        repository_selection="all" if inst.repositories is None else "selected",
        access_tokens_url=f"{req.api_url}/app/installations/{inst.id}/access_tokens",
        repositories_url=f"{req.api_url}/installation/repositories",
        html_url=f"{req.root_url}/settings/installations/{inst.id}",
        permissions=dict(inst.permissions or {}),
        events=["workflow_job"],
        created_at=inst.created_at,
        updated_at=inst.created_at,
        single_file_name=None,
        suspended_by=None,
        suspended_at=None,
    )
    return out


def _installation(req: Request, match: Callable[[Installation], bool]) -> Response:
    app = _app(req)
    for inst in req.store.installations.values():
        if inst.app_id == app.id and match(inst):
            return Response(200, render_installation(req, inst))
    raise ApiError(404, "Not Found")


@route("apps/get-repo-installation")
def get_repo_installation(req: Request) -> Response:
    full_name = f"{req.params['owner']}/{req.params['repo']}"
    return _installation(req, lambda inst: inst.covers(full_name))


@route("apps/get-org-installation")
def get_org_installation(req: Request) -> Response:
    login = req.params["org"].lower()
    return _installation(req, lambda inst: inst.account.lower() == login)


def _token_permissions(
    inst: Installation, asked: Mapping[str, str] | None
) -> dict[str, str] | None:
    if not asked:
        return dict(inst.permissions) if inst.permissions is not None else None
    granted = inst.permissions
    for perm, level in asked.items():
        if granted is not None and _LEVELS.get(granted.get(perm, ""), 0) < _LEVELS[level]:
            raise ApiError(422, "The permissions requested are not granted to this installation.")
    return dict(asked)


@route("apps/create-installation-access-token")
def create_installation_token(req: Request) -> Response:
    app = _app(req)
    inst = req.store.installations.get(req.params["installation_id"])
    if inst is None or inst.app_id != app.id:
        raise ApiError(404, "Not Found")
    permissions = _token_permissions(inst, (req.body or {}).get("permissions"))
    expires = int(time.time() + req.store.installation_token_ttl)
    value = "ghs_" + secrets.token_hex(18)
    req.store.tokens[value] = Token(
        value,
        f"{app.slug}[bot]",
        permissions,
        "integration",
        expires_at=expires,
        installation_id=inst.id,
    )
    body = {
        "token": value,
        "expires_at": iso(expires),
        "permissions": dict(permissions or {}),
        "repository_selection": "all" if inst.repositories is None else "selected",
    }
    return Response(201, body)


@route("apps/list-repos-accessible-to-installation")
def list_installation_repos(req: Request) -> Response:
    token = req.token
    if token is None or token.installation_id is None:
        raise ApiError(403, "You must authenticate with an installation access token")
    inst = req.store.installations[token.installation_id]
    repos = sorted(
        (r for r in req.store.repos.values() if inst.covers(r.full_name)),
        key=lambda r: r.full_name.lower(),
    )
    chunk, headers = paginate(req, repos)
    template = example(req, "repository-paginated-2")["repositories"][0]
    body = {
        "total_count": len(repos),
        "repositories": [_repo_fields(req, r, dict(template)) for r in chunk],
        "repository_selection": "all" if inst.repositories is None else "selected",
    }
    return Response(200, body, headers)
