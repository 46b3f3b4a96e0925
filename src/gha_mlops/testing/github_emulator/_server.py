"""The HTTP side: routing against the description, request and response validation, tokens,
App JWTs and permissions, rate limits, injected faults and the request log; the control API
tests use (seeding, inspection, webhooks, the runner stand-in protocol)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import (
    _actions,  # noqa: F401  (registers the Actions runner and job handlers)
    _deployments,  # noqa: F401  (registers deployments and environments)
    _issues,  # noqa: F401  (registers issues, workflows and workflow_dispatch)
)
from ._apps import JWT_OPERATIONS, authenticate_jwt, install, new_app
from ._broker import RunnerBroker
from ._handlers import HANDLERS, PERMISSIONS, ApiError, Request, Response
from ._spec import OpenApiSpec, Operation, Parameter, load_spec
from ._state import (
    App,
    CheckRun,
    CommitStatus,
    Deployment,
    Dispatch,
    Issue,
    IssueComment,
    Job,
    Org,
    Repo,
    Runner,
    Store,
    Token,
)
from ._webhooks import Delivery, Webhooks

_LEVELS = {"read": 1, "write": 2, "admin": 3}
_DEFAULT_DOCS = "https://docs.github.com/rest"


@dataclass(frozen=True)
class Violation:
    """A departure from GitHub's description: by the client (``request``, ``unknown-route``)
    or by the emulator (``response``, ``unimplemented``, ``emulator-error``)."""

    kind: str
    method: str
    path: str
    operation_id: str | None
    message: str

    def __str__(self) -> str:
        op = f" ({self.operation_id})" if self.operation_id else ""
        return f"[{self.kind}] {self.method} {self.path}{op}: {self.message}"


@dataclass(frozen=True)
class LoggedRequest:
    """One exchange, as the emulator saw it."""

    method: str
    path: str  # below the API prefix, without the query string
    query: Mapping[str, list[str]]
    status: int
    body: Any  # the parsed JSON request body, or None
    response: Any  # the JSON response body, or None
    operation_id: str | None
    token: str | None


@dataclass
class Fault:
    """An injected failure for requests matching ``method`` and ``route`` (a path template
    such as ``/repos/{owner}/{repo}/check-runs`` or a concrete path)."""

    method: str
    route: str
    status: int
    remaining: int | None  # None: every matching request, forever
    retry_after: int | None = None
    rate_limited: bool = False
    message: str | None = None
    hits: int = 0


@dataclass
class _Outcome:
    status: int
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


class GitHubEmulator:
    """A stateful GitHub REST API on 127.0.0.1, validated against GitHub's description.

    Use it as a context manager; ``url`` is the API base to hand to a client
    (``Github(base_url=gh.url, auth=Auth.Token(gh.token))``). The default token ``token`` may
    do everything; ``add_token`` makes narrower ones. Everything a client sends or receives
    that the description forbids ends up in ``violations``.
    """

    def __init__(
        self,
        *,
        spec: OpenApiSpec | None = None,
        spec_path: Path | None = None,
        prefix: str = "/api/v3",
        token: str = "ghs_emulator_default_token",
        login: str = "github-actions[bot]",
    ) -> None:
        self.spec = spec or load_spec(spec_path)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.store = Store()
        self.token = token
        self.add_token(token, login=login)
        self._violations: list[Violation] = []
        self._log: list[LoggedRequest] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._broker = RunnerBroker(self.store)
        self._webhooks = Webhooks(self.store)
        self.store.job_listener = self._webhooks.on_job

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> GitHubEmulator:
        """Bind a free port on 127.0.0.1 and serve in a background thread."""
        emulator = self

        class _Handler(_RequestHandler):
            owner = emulator

        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="github-emulator",
            daemon=True,
        )
        self._thread.start()
        self._webhooks.start(self.url, self.root_url)
        self._broker.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (long polls answer 204 at once)."""
        self._broker.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._webhooks.stop()

    def __enter__(self) -> GitHubEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` (artifact downloads are served below it)."""
        if self._server is None:
            raise RuntimeError("the GitHub emulator is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:PORT/api/v3``."""
        return self.root_url + self.prefix

    # -- seeding and inspection ------------------------------------------------------------

    def create_repo(
        self, full_name: str, *, default_branch: str = "main", private: bool = False
    ) -> Repo:
        """Create an empty repository; seed it with ``Repo.commit``, ``Repo.create_pull``,
        ``Repo.add_workflow_run`` and ``Repo.add_artifact``."""
        return self.store.create_repo(full_name, default_branch=default_branch, private=private)

    def repo(self, full_name: str) -> Repo:
        owner, _, name = full_name.partition("/")
        found = self.store.repo(owner, name)
        if found is None:
            raise KeyError(f"no repository {full_name}")
        return found

    def add_token(
        self,
        value: str,
        *,
        login: str = "github-actions[bot]",
        permissions: Mapping[str, str] | None = None,
        kind: str = "integration",
        rate_limit: int = 5000,
    ) -> Token:
        """Accept ``value`` as a token (see ``Token`` for ``permissions`` and ``kind``)."""
        token = Token(
            value, login, dict(permissions) if permissions is not None else None, kind, rate_limit
        )
        with self.store.lock:
            self.store.tokens[value] = token
        return token

    def exhaust_rate_limit(self, token: str | None = None, *, reset_in: int = 60) -> None:
        """Use up a token's primary rate limit; it comes back ``reset_in`` seconds from now."""
        with self.store.lock:
            t = self.store.tokens[token or self.token]
            t.used = t.rate_limit
            t.reset_at = int(time.time()) + reset_in

    def inject_fault(
        self,
        method: str,
        route: str,
        *,
        status: int = 502,
        count: int | None = 1,
        retry_after: int | None = None,
        rate_limited: bool = False,
        message: str | None = None,
    ) -> Fault:
        """Answer the next ``count`` matching requests (all, if None) with ``status``.

        ``rate_limited`` answers like a primary rate limit (``x-ratelimit-remaining: 0`` and a
        ``x-ratelimit-reset`` a minute ahead; use status 403 or 429); ``retry_after`` adds a
        ``Retry-After`` header, as a secondary rate limit does.
        """
        fault = Fault(
            method.upper(),
            route.removeprefix(self.prefix),
            status,
            count,
            retry_after,
            rate_limited,
            message,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    @property
    def violations(self) -> list[Violation]:
        """Every departure from GitHub's description so far (a copy)."""
        with self._lock:
            return list(self._violations)

    def take_violations(self) -> list[Violation]:
        """Return the violations so far and forget them (for tests that provoke some)."""
        with self._lock:
            taken, self._violations = self._violations, []
            return taken

    @property
    def requests(self) -> list[LoggedRequest]:
        """The request log, oldest first (a copy)."""
        with self._lock:
            return list(self._log)

    def issue_comments(self, full_name: str, number: int) -> list[IssueComment]:
        """The comments on issue or pull request ``number``, oldest first."""
        with self.store.lock:
            return sorted(
                (
                    c
                    for c in self.store.issue_comments.values()
                    if c.repo.lower() == full_name.lower() and c.issue_number == number
                ),
                key=lambda c: c.id,
            )

    def check_runs(self, full_name: str) -> list[CheckRun]:
        """The check runs of a repository, oldest first."""
        with self.store.lock:
            return sorted(
                (r for r in self.store.check_runs.values() if r.repo.lower() == full_name.lower()),
                key=lambda r: r.id,
            )

    def statuses(self, full_name: str) -> list[CommitStatus]:
        """The commit statuses of a repository, oldest first."""
        with self.store.lock:
            return sorted(
                (s for s in self.store.statuses.values() if s.repo.lower() == full_name.lower()),
                key=lambda s: s.id,
            )

    def deployments(self, full_name: str) -> list[Deployment]:
        """The deployments of a repository, oldest first, each with its statuses (copies)."""
        with self.store.lock:
            repo = self.repo(full_name)
            return [
                dataclasses.replace(d, statuses=list(d.statuses))
                for d in sorted(repo.deployments.values(), key=lambda d: d.id)
            ]

    def issues(self, full_name: str, *, pulls: bool = False) -> list[Issue]:
        """The issues of a repository (pull requests too with ``pulls``), oldest first, as
        copies (``number, title, body, user, state, labels, closed_at, state_reason``)."""
        with self.store.lock:
            repo = self.repo(full_name)
            return [
                dataclasses.replace(i, labels=list(i.labels))
                for _, i in sorted(repo.issues.items())
                if pulls or i.pull is None
            ]

    def dispatches(self, full_name: str) -> list[Dispatch]:
        """The ``workflow_dispatch`` events GitHub accepted for a repository, oldest first
        (``workflow_id, path, ref, sha, inputs, actor, run_id, created_at``)."""
        with self.store.lock:
            return list(self.repo(full_name).dispatches)

    # -- organizations and GitHub Apps --------------------------------------------------------

    def create_org(self, login: str) -> Org:
        """Make ``login`` an organization: ``/orgs/{login}/...`` answers, and repositories
        created as ``login/name`` are its repositories."""
        return self.store.create_org(login)

    def create_app(self, app_id: int, *, slug: str | None = None) -> App:
        """Register a GitHub App with a fresh RSA key pair; ``app.private_key_pem`` signs the
        JWTs (RS256, ``iss`` the App id) the App endpoints accept."""
        app = new_app(app_id, slug or f"app-{app_id}")
        with self.store.lock:
            self.store.apps[app_id] = app
        return app

    def install_app(
        self,
        app_id: int,
        *,
        account: str | None = None,
        repo: str | None = None,
        permissions: Mapping[str, str] | None = None,
    ) -> int:
        """Install an App on every repository of ``account`` (a user or an organization) or on
        the one repository ``repo``; its tokens get ``permissions`` (None: everything).
        Returns the installation id."""
        with self.store.lock:
            return install(self.store, app_id, account, repo, permissions).id

    @property
    def installation_token_ttl(self) -> float:
        """Seconds an installation access token lives (GitHub: 3600)."""
        return self.store.installation_token_ttl

    @installation_token_ttl.setter
    def installation_token_ttl(self, seconds: float) -> None:
        self.store.installation_token_ttl = seconds

    def expire_installation_tokens(self) -> None:
        """End every installation token now, as a revocation would (or a client clock that
        runs behind GitHub's): the next request with one gets 401."""
        with self.store.lock:
            for token in self.store.tokens.values():
                if token.installation_id is not None:
                    token.expires_at = time.time()

    # -- jobs, runners and webhooks -------------------------------------------------------------

    @property
    def runner_timeout(self) -> float:
        """Seconds a busy runner may go without a heartbeat before its job fails (default 3)."""
        return self._broker.timeout

    @runner_timeout.setter
    def runner_timeout(self, seconds: float) -> None:
        self._broker.timeout = seconds

    def jobs(self, full_name: str) -> list[Job]:
        """Every job of a repository, every attempt, oldest first (copies)."""
        with self.store.lock:
            return [
                dataclasses.replace(j)
                for j in sorted(self.store.jobs.values(), key=lambda j: j.id)
                if j.repo.lower() == full_name.lower()
            ]

    def job(self, job_id: int) -> Job:
        """A job as it is now (a copy)."""
        with self.store.lock:
            return dataclasses.replace(self.store.jobs[job_id])

    def runners(self, scope: str) -> list[Runner]:
        """The registered runners of a repository (``owner/name``) or an organization, oldest
        first (copies)."""
        with self.store.lock:
            return [
                dataclasses.replace(r)
                for r in sorted(self.store.runners.values(), key=lambda r: r.id)
                if r.scope.lower() == scope.lower()
            ]

    def set_webhook(self, url: str, secret: str) -> None:
        """POST every job transition from now on to ``url``, signed with ``secret``."""
        self._webhooks.configure(url, secret)

    @property
    def drop_webhooks(self) -> int:
        """How many of the next deliveries to drop (recorded with ``dropped=True``, never
        sent), to simulate lost webhooks."""
        return self._webhooks.drop

    @drop_webhooks.setter
    def drop_webhooks(self, count: int) -> None:
        self._webhooks.drop = count

    @property
    def deliveries(self) -> list[Delivery]:
        """Every webhook delivery attempted so far, oldest first."""
        return self._webhooks.deliveries

    def redeliver(self, delivery_id: str) -> None:
        """Send a delivery again: the same ``X-GitHub-Delivery`` id and body, as GitHub's
        redeliver does (recorded with ``redelivery=True``)."""
        self._webhooks.redeliver(delivery_id)

    def flush_webhooks(self, timeout: float = 5.0) -> None:
        """Wait until every webhook handed to the sender so far has been attempted."""
        self._webhooks.flush(timeout)

    # -- request processing (called from server threads) ------------------------------------

    def _violation(self, kind: str, method: str, path: str, op: Operation | None, msg: str) -> None:
        with self._lock:
            self._violations.append(
                Violation(kind, method, path, op.operation_id if op else None, msg)
            )

    def _docs(self, op: Operation | None) -> str:
        if op is None:
            return _DEFAULT_DOCS
        raw = self.spec.document["paths"][op.template][op.method.lower()]
        url: str = raw.get("externalDocs", {}).get("url", _DEFAULT_DOCS)
        return url

    def _error(
        self,
        op: Operation | None,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
    ) -> _Outcome:
        body: dict[str, Any] = {
            "message": message,
            "documentation_url": self._docs(op),
            "status": str(status),
        }
        if errors:
            body["errors"] = errors
        return _Outcome(status, body)

    def process(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> _Outcome:
        """Answer one HTTP request (everything except the socket work)."""
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        if path.startswith("/_emulator/artifacts/") and method == "GET":
            return self._download(path)
        if path.startswith("/_runner/"):  # the stand-in protocol: not validated, not logged
            try:
                return _Outcome(*self._broker.handle(method, path, query, headers, raw))
            except Exception:
                self._violation("emulator-error", method, path, None, traceback.format_exc())
                return _Outcome(500, {"message": "Server Error"})
        body: Any = None
        outcome: _Outcome
        op: Operation | None = None
        token: Token | None = None
        sub = path[len(self.prefix) :] if path.startswith(self.prefix + "/") else None
        try:
            if sub is None:
                self._violation(
                    "unknown-route", method, path, None, f"not below the API prefix {self.prefix!r}"
                )
                outcome = self._error(None, 404, "Not Found")
            else:
                # Routed on the path as sent, so an encoded slash (%2F) stays inside its
                # parameter (an environment's name), then each parameter is decoded.
                routed = parts.path[len(self.prefix) :] if parts.path.startswith(
                    self.prefix + "/") else sub
                op, params, known = self.spec.match(method, routed.rstrip("/") or "/")
                params = {k: unquote(v) for k, v in params.items()}
                if op is None:
                    why = (
                        f"the path exists but has no {method} operation"
                        if known
                        else "no operation in GitHub's description has this path"
                    )
                    self._violation("unknown-route", method, sub, None, why)
                    outcome = self._error(None, 404, "Not Found")
                else:
                    outcome, body, token = self._dispatch(
                        method, sub, op, params, query, headers, raw
                    )
        except Exception:
            self._violation("emulator-error", method, path, op, traceback.format_exc())
            outcome = self._error(op, 500, "Server Error")
        with self._lock:
            self._log.append(
                LoggedRequest(
                    method,
                    sub if sub is not None else path,
                    query,
                    outcome.status,
                    body,
                    outcome.body,
                    op.operation_id if op else None,
                    token.value if token else None,
                )
            )
        for key, value in self._rate_headers(token).items():
            outcome.headers.setdefault(key, value)
        outcome.headers.setdefault("X-GitHub-Request-Id", uuid.uuid4().hex[:20].upper())
        return outcome

    def _rate_headers(self, token: Token | None) -> dict[str, str]:
        if token is None:
            return {
                "x-ratelimit-limit": "60",
                "x-ratelimit-remaining": "59",
                "x-ratelimit-reset": str(int(time.time()) + 3600),
                "x-ratelimit-used": "1",
                "x-ratelimit-resource": "core",
            }
        return {
            "x-ratelimit-limit": str(token.rate_limit),
            "x-ratelimit-remaining": str(max(token.rate_limit - token.used, 0)),
            "x-ratelimit-reset": str(token.reset_at),
            "x-ratelimit-used": str(min(token.used, token.rate_limit)),
            "x-ratelimit-resource": "core",
        }

    def _dispatch(
        self,
        method: str,
        sub: str,
        op: Operation,
        path_params: dict[str, str],
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        raw: bytes,
    ) -> tuple[_Outcome, Any, Token | None]:
        """Validate the request against the operation, admit its token, then run its handler
        (an outcome that refuses it is returned at the first step that does)."""
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                self._violation("request", method, sub, op, "the body is not JSON")
                return self._error(op, 400, "Problems parsing JSON"), None, None
        parsed = self._parse_parameters(method, sub, op, path_params, query)
        if isinstance(parsed, _Outcome):
            return parsed, body, None
        refused = self._check_body(method, sub, op, body)
        if refused is not None:
            return refused, body, None
        token, refused = self._admit(method, sub, op, headers)
        if refused is not None:
            return refused, body, token
        handler = HANDLERS[op.operation_id]
        params, parsed_query = parsed
        req = Request(method, sub, params, parsed_query, body, token, self.url, self.root_url,
                      self.store, self.spec)
        try:
            with self.store.lock:
                resp: Response = handler(req)
            outcome = _Outcome(resp.status, resp.body, headers=dict(resp.headers))
        except ApiError as err:
            outcome = self._error(op, err.status, err.message, err.errors)
        self._check_response(method, sub, op, outcome)
        return outcome, body, token

    def _parse_parameters(
        self, method: str, sub: str, op: Operation, path_params: dict[str, str],
        query: Mapping[str, list[str]],
    ) -> tuple[dict[str, Any], dict[str, Any]] | _Outcome:
        """The path and query parameters, coerced to their schema types; or the outcome that
        refuses the request as GitHub would (404 for a bad path, 422 for a bad query)."""
        params: dict[str, Any] = {}
        for p in op.parameters:
            if p.location != "path":
                continue
            value, problem = self._coerce(p, path_params[p.name])
            if problem:
                self._violation("request", method, sub, op, f"path parameter {p.name}: {problem}")
                return self._error(op, 404, "Not Found")
            params[p.name] = value
        parsed_query: dict[str, Any] = {}
        for p in op.parameters:
            if p.location != "query":
                continue
            if p.name not in query:
                if p.required:
                    self._violation(
                        "request", method, sub, op, f"query parameter {p.name} is required"
                    )
                    return self._error(op, 422, "Validation Failed")
                continue
            value, problem = self._coerce(p, query[p.name][-1])
            if problem:
                self._violation("request", method, sub, op, f"query parameter {p.name}: {problem}")
                return self._error(op, 422, "Validation Failed",
                                   [{"resource": "Search", "field": p.name, "code": "invalid"}])
            parsed_query[p.name] = value
        return params, parsed_query

    def _check_body(self, method: str, sub: str, op: Operation, body: Any) -> _Outcome | None:
        """The outcome that refuses a body the operation's schema rejects, else None."""
        if op.body_pointer is None:
            return None
        if body is None and op.body_required:
            self._violation("request", method, sub, op, "a JSON request body is required")
            return self._error(
                op, 422, "Invalid request.\n\nFor 'links/0/schema', nil is not an object.")
        if body is not None:
            errs = self.spec.errors(op.body_pointer, body)
            if errs:
                self._violation(
                    "request", method, sub, op, "; ".join(f"body{str(e)[1:]}" for e in errs)
                )
                return self._error(op, 422, f"Invalid request.\n\n{errs[0].message}")
        return None

    def _admit(
        self, method: str, sub: str, op: Operation, headers: Mapping[str, str]
    ) -> tuple[Token | None, _Outcome | None]:
        """The request's token, and the outcome that refuses it (authentication, the rate
        limit, an injected fault, an operation the emulator lacks, a permission) or None."""
        token, refused = self._authenticate(op, headers.get("authorization"))
        if refused is not None:
            return None, refused
        if token is not None and op.operation_id != "rate-limit/get":  # free, as on GitHub
            with self.store.lock:
                token.used += 1
                if token.used > token.rate_limit:
                    if time.time() >= token.reset_at:
                        token.used, token.reset_at = 1, int(time.time()) + 3600
                    else:
                        return token, self._rate_limited(op, token)
        fault = self._take_fault(method, sub, op)
        if fault is not None:
            return token, self._fault_outcome(op, fault, token)
        if op.operation_id not in HANDLERS:
            self._violation(
                "unimplemented", method, sub, op,
                "GitHub has this operation but the emulator does not implement it",
            )
            return token, self._error(op, 404, "Not Found")
        return token, self._authorize(op, method, token)

    @staticmethod
    def _coerce(p: Parameter, text: str) -> tuple[Any, str | None]:
        schema = p.schema
        kind = schema.get("type")
        value: Any = text
        try:
            if kind == "integer":
                value = int(text)
            elif kind == "number":
                value = float(text)
            elif kind == "boolean":
                if text not in {"true", "false"}:
                    return text, f"{text!r} is not a boolean"
                value = text == "true"
        except ValueError:
            return text, f"{text!r} is not of type {kind}"
        if "enum" in schema and value not in schema["enum"]:
            return value, f"{value!r} is not one of {schema['enum']}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                return value, f"{value!r} is less than the minimum of {schema['minimum']}"
            if "maximum" in schema and value > schema["maximum"]:
                return value, f"{value!r} is greater than the maximum of {schema['maximum']}"
        return value, None

    def _authenticate(
        self, op: Operation, header: str | None
    ) -> tuple[Token | None, _Outcome | None]:
        """The token an ``Authorization`` header names (None without one), or the 401."""
        if not header:
            return None, None
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() not in {"token", "bearer"}:
            return None, self._error(None, 401, "Bad credentials")
        with self.store.lock:
            token = self.store.tokens.get(value)
            if token is None and value.count(".") == 2:  # a JWT: an App authenticates
                found = authenticate_jwt(self.store, value)
                if isinstance(found, str):
                    return None, self._error(op, 401, found)
                token = found
        if token is None or token.expired:
            return None, self._error(None, 401, "Bad credentials")
        return token, None

    def _authorize(self, op: Operation, method: str, token: Token | None) -> _Outcome | None:
        jwt_only = op.operation_id in JWT_OPERATIONS
        if jwt_only and (token is None or token.app_id is None):
            return self._error(op, 401, "A JSON web token could not be decoded")
        if token is not None and token.app_id is not None and not jwt_only:
            return self._error(op, 403, f"Resource not accessible by {token.kind}")
        needed = PERMISSIONS.get(op.operation_id, ())
        if token is None:
            if method in {"GET", "HEAD"}:
                return None
            return self._error(op, 401, "Requires authentication")
        if token.permissions is None or not needed:
            return None
        granted = {"metadata": "read", **token.permissions}
        for perm, level in needed:
            if _LEVELS.get(granted.get(perm, ""), 0) >= _LEVELS[level]:
                return None
        return self._error(op, 403, f"Resource not accessible by {token.kind}")

    def _rate_limited(self, op: Operation | None, token: Token) -> _Outcome:
        who = (
            "installation ID 1"
            if token.kind == "integration"
            else f"user ID {abs(hash(token.login)) % 10_000_000}"
        )
        return self._error(
            op,
            403,
            f"API rate limit exceeded for {who}. If you reach out to GitHub Support for help, "
            "please include the request ID.",
        )

    def _take_fault(self, method: str, sub: str, op: Operation) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method != method or fault.route not in {sub, op.template}:
                    continue
                if fault.remaining is not None:
                    if fault.remaining <= 0:
                        continue
                    fault.remaining -= 1
                fault.hits += 1
                return fault
        return None

    def _fault_outcome(self, op: Operation, fault: Fault, token: Token | None) -> _Outcome:
        if fault.rate_limited:
            out = (
                self._rate_limited(op, token)
                if token is not None
                else self._error(op, fault.status, "API rate limit exceeded for 127.0.0.1.")
            )
            out.status = fault.status
            out.body["status"] = str(fault.status)
            if fault.message:
                out.body["message"] = fault.message
            reset = str(int(time.time()) + 60)
            out.headers.update({"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})
        else:
            default = (
                "You have exceeded a secondary rate limit. Please wait a few minutes "
                "before you try again."
                if fault.retry_after is not None and fault.status in {403, 429}
                else "Server Error"
            )
            out = self._error(op, fault.status, fault.message or default)
        if fault.retry_after is not None:
            out.headers["Retry-After"] = str(fault.retry_after)
        return out

    def _check_response(self, method: str, sub: str, op: Operation, outcome: _Outcome) -> None:
        declared = op.responses.get(str(outcome.status), op.responses.get("default"))
        if declared is None:
            if outcome.status < 400:
                self._violation(
                    "response",
                    method,
                    sub,
                    op,
                    f"status {outcome.status} is not declared for this operation",
                )
            return
        schema = next((ptr for ctype, ptr in declared.items() if "json" in ctype), None)
        if schema is None:
            if outcome.body is not None and not declared:
                self._violation(
                    "response",
                    method,
                    sub,
                    op,
                    f"status {outcome.status} has no body in GitHub's description",
                )
            return
        for err in self.spec.errors(schema, outcome.body)[:3]:
            self._violation("response", method, sub, op, f"body{str(err)[1:]}")

    def _download(self, path: str) -> _Outcome:
        name = path.rsplit("/", 1)[-1].removesuffix(".zip")
        with self.store.lock:
            artifact = self.store.artifacts.get(int(name)) if name.isdigit() else None
            if artifact is None:
                return _Outcome(404, raw=b"Not Found", headers={"Content-Type": "text/plain"})
            return _Outcome(
                200,
                raw=artifact.data,
                headers={
                    "Content-Type": "application/zip",
                    "Content-Disposition": f'attachment; filename="{artifact.name}.zip"',
                },
            )


class _RequestHandler(BaseHTTPRequestHandler):
    owner: GitHubEmulator
    server_version = "GitHub.com"
    sys_version = ""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        outcome = self.owner.process(self.command, self.path, headers, raw)
        if outcome.raw is not None:
            payload = outcome.raw
        elif outcome.body is not None:
            payload = json.dumps(outcome.body).encode()
            outcome.headers.setdefault("Content-Type", "application/json; charset=utf-8")
        else:
            payload = b""
        self.send_response(outcome.status)
        for key, value in outcome.headers.items():
            self.send_header(key, value)
        self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line; the emulator keeps its own log."""
