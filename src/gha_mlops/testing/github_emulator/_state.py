"""What the emulated GitHub holds: repositories with real git objects, issues and pull
requests, comments, checks, statuses, deployments and environments, workflow runs, jobs and
artifacts, organizations,
self-hosted runners, GitHub Apps and their installations, plus the seed helpers tests use to
create them directly (without going through the API)."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


def now_iso() -> str:
    """The current time as GitHub writes it (``2024-05-01T12:00:00Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_sha(kind: str, payload: bytes) -> str:
    """The object id git gives ``payload`` of type ``kind`` (``blob``, ``tree``, ``commit``)."""
    return hashlib.sha1(f"{kind} {len(payload)}\0".encode() + payload).hexdigest()


@dataclass(frozen=True)
class TreeEntry:
    name: str
    mode: str  # "100644", "100755", "040000", "120000", "160000"
    type: str  # "blob", "tree", "commit"
    sha: str


@dataclass(frozen=True)
class Signature:
    name: str
    email: str
    date: str


@dataclass(frozen=True)
class GitCommit:
    sha: str
    tree: str
    parents: tuple[str, ...]
    message: str
    author: Signature
    committer: Signature


@dataclass
class Issue:
    number: int
    title: str
    body: str | None
    user: str
    state: str = "open"
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    pull: PullRequest | None = None
    labels: list[str] = field(default_factory=list)  # names, as given (matched ignoring case)
    closed_at: str | None = None
    state_reason: str | None = None


@dataclass
class PullRequest:
    number: int
    head_ref: str
    head_sha: str
    base_ref: str
    base_sha: str
    draft: bool = False
    merged: bool = False


@dataclass
class IssueComment:
    id: int
    repo: str  # full name
    issue_number: int
    body: str
    user: str
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class CommitComment:
    id: int
    repo: str
    commit_id: str
    body: str
    user: str
    path: str | None = None
    position: int | None = None
    line: int | None = None
    created_at: str = field(default_factory=now_iso)


@dataclass
class CheckRun:
    id: int
    repo: str
    name: str
    head_sha: str
    status: str = "queued"
    conclusion: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    details_url: str | None = None
    external_id: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CommitStatus:
    id: int
    repo: str
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    user: str
    created_at: str = field(default_factory=now_iso)


@dataclass
class WorkflowRun:
    id: int
    repo: str
    name: str
    run_number: int
    head_branch: str
    head_sha: str
    event: str
    status: str
    conclusion: str | None
    path: str
    actor: str
    pull_requests: tuple[int, ...] = ()
    created_at: str = field(default_factory=now_iso)
    run_attempt: int = 1
    updated_at: str = field(default_factory=now_iso)


@dataclass
class Workflow:
    """A workflow file of a repository, as much as ``workflow_dispatch`` needs: whether its
    ``on:`` has ``workflow_dispatch`` and the ``inputs`` declared there (name -> the input's
    settings as the workflow file writes them: ``required``, ``default``, ``type``,
    ``options``). ``state`` is ``active`` or ``disabled_manually``."""

    id: int
    repo: str  # full name
    name: str
    path: str  # .github/workflows/retrain.yml
    dispatch: bool = True
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: str = "active"
    created_at: str = field(default_factory=now_iso)


@dataclass(frozen=True)
class Dispatch:
    """A ``workflow_dispatch`` GitHub accepted: the workflow, the ref and the commit it
    resolved to, the inputs as sent, who sent them and the workflow run it queued."""

    workflow_id: int
    path: str
    ref: str
    sha: str
    inputs: Mapping[str, Any]
    actor: str
    run_id: int
    created_at: str = field(default_factory=now_iso)


@dataclass
class DeploymentStatus:
    id: int
    state: str
    description: str
    environment: str
    log_url: str  # GitHub keeps target_url equal to it
    environment_url: str
    user: str
    created_at: str = field(default_factory=now_iso)


@dataclass
class Deployment:
    """A deployment of a repository and its statuses, oldest first."""

    id: int
    repo: str  # full name
    sha: str
    ref: str
    task: str
    payload: dict[str, Any] | str
    environment: str
    original_environment: str
    description: str | None
    transient: bool
    production: bool
    user: str
    statuses: list[DeploymentStatus] = field(default_factory=list)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass(frozen=True)
class Reviewer:
    type: str  # "User" | "Team"
    id: int


@dataclass
class Environment:
    """A deployment environment and its protection rules (``branch_policy`` None: every
    branch may deploy; else ``{"protected_branches": bool, "custom_branch_policies": bool}``)."""

    id: int
    name: str
    wait_timer: int = 0
    prevent_self_review: bool = False
    reviewers: tuple[Reviewer, ...] = ()
    branch_policy: dict[str, bool] | None = None
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


# A job's conclusions that make its run's conclusion, worst first.
_RUN_CONCLUSIONS = ("failure", "timed_out", "cancelled", "action_required")


@dataclass
class Job:
    """A workflow job. ``labels`` are its ``runs-on`` labels; ``duration`` and ``conclusion``
    are what a runner stand-in is told to do with it (the job's outcome is what it reports)."""

    id: int
    repo: str  # full name
    run_id: int
    run_attempt: int
    name: str
    labels: tuple[str, ...]
    duration: float
    planned_conclusion: str
    status: str = "queued"
    conclusion: str | None = None
    runner_id: int | None = None
    runner_name: str | None = None
    runner_group_id: int | None = None
    created_at: str = field(default_factory=now_iso)
    started_at: str | None = None
    completed_at: str | None = None
    superseded: bool = False  # re-run: a newer attempt of it exists


@dataclass
class Runner:
    """A self-hosted runner registered with a just-in-time config (ephemeral: it takes one job
    and is removed when the job ends). ``scope`` is ``owner/name`` or an organization login."""

    id: int
    name: str
    scope: str
    labels: tuple[str, ...]
    runner_group_id: int
    work_folder: str
    session_token: str = field(repr=False)
    status: str = "offline"
    busy: bool = False
    job_id: int | None = None
    session: str = "new"  # "new" (JIT config unused), "open", "closed"
    deleted: bool = False
    last_heartbeat: float = 0.0  # time.monotonic() of the last sign of life of a busy runner
    last_seen: float = 0.0
    created_at: str = field(default_factory=now_iso)

    @property
    def is_org(self) -> bool:
        return "/" not in self.scope

    def serves(self, repo: str) -> bool:
        """Whether a job of ``repo`` (full name) may run here: the runner's repository, or
        any repository of the runner's organization."""
        if self.is_org:
            return repo.partition("/")[0].lower() == self.scope.lower()
        return repo.lower() == self.scope.lower()


@dataclass(frozen=True)
class Org:
    id: int
    login: str


@dataclass(frozen=True)
class App:
    """A GitHub App: ``private_key_pem`` signs its JWTs (RS256)."""

    id: int
    slug: str
    private_key_pem: str = field(repr=False)
    public_key_pem: str = field(repr=False)
    identity: Token = field(repr=False)  # what a valid JWT authenticates as (its rate limit)


@dataclass
class Installation:
    """An App installed on an account (every repository of it, ``repositories`` None) or on
    some of its repositories; ``permissions`` None grants everything."""

    id: int
    app_id: int
    account: str
    repositories: tuple[str, ...] | None
    permissions: Mapping[str, str] | None
    created_at: str = field(default_factory=now_iso)

    def covers(self, full_name: str) -> bool:
        if self.repositories is None:
            return full_name.partition("/")[0].lower() == self.account.lower()
        return full_name.lower() in self.repositories


@dataclass
class Artifact:
    id: int
    repo: str
    run_id: int
    name: str
    data: bytes
    expired: bool = False
    created_at: str = field(default_factory=now_iso)


@dataclass
class Token:
    """An access token: whose it is and what it may do.

    ``permissions`` maps a GitHub permission (``checks``, ``contents``, ``issues``,
    ``pull_requests``, ``statuses``, ``actions``, ``metadata``) to ``read`` or ``write``;
    None grants everything (a classic token with full ``repo`` scope). ``kind`` picks GitHub's
    wording of a refusal: ``integration`` (a GitHub App or ``GITHUB_TOKEN``) or
    ``personal access token`` (a fine-grained token).
    """

    value: str
    login: str
    permissions: Mapping[str, str] | None = None
    kind: str = "integration"
    rate_limit: int = 5000
    used: int = 0
    reset_at: int = field(default_factory=lambda: int(time.time()) + 3600)
    expires_at: float | None = None  # unix seconds; an installation token's end
    installation_id: int | None = None  # an installation token: what it may reach
    app_id: int | None = None  # a GitHub App's JWT

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at


class Ids:
    """Monotonic ids shared by every kind of object, like GitHub's database ids."""

    def __init__(self, start: int = 1000) -> None:
        self._next = start
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self._next += 1
            return self._next


@dataclass
class Repo:
    """A repository and its git objects. Seed helpers mutate it under the emulator's lock."""

    id: int
    owner: str
    name: str
    default_branch: str
    private: bool
    _store: Store = field(repr=False)
    blobs: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, tuple[TreeEntry, ...]] = field(default_factory=dict)
    commits: dict[str, GitCommit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "refs/heads/main" -> commit sha
    issues: dict[int, Issue] = field(default_factory=dict)
    deployments: dict[int, Deployment] = field(default_factory=dict)
    environments: dict[str, Environment] = field(default_factory=dict)  # by lowercased name
    workflows: dict[int, Workflow] = field(default_factory=dict)
    dispatches: list[Dispatch] = field(default_factory=list)  # accepted ones, oldest first
    created_at: str = field(default_factory=now_iso)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    # -- git objects -------------------------------------------------------------------

    def add_blob(self, content: bytes) -> str:
        sha = git_sha("blob", content)
        self.blobs[sha] = content
        return sha

    def add_tree(self, entries: Iterable[TreeEntry]) -> str:
        ordered = tuple(sorted(entries, key=lambda e: e.name + ("/" if e.type == "tree" else "")))
        payload = b"".join(
            f"{e.mode.lstrip('0')} {e.name}\0".encode() + bytes.fromhex(e.sha) for e in ordered
        )
        sha = git_sha("tree", payload)
        self.trees[sha] = ordered
        return sha

    def flatten(self, tree_sha: str, prefix: str = "") -> dict[str, TreeEntry]:
        """Every non-tree entry below ``tree_sha``, by its full path."""
        out: dict[str, TreeEntry] = {}
        for e in self.trees[tree_sha]:
            if e.type == "tree":
                out.update(self.flatten(e.sha, f"{prefix}{e.name}/"))
            else:
                out[prefix + e.name] = e
        return out

    def build_tree(self, files: Mapping[str, TreeEntry]) -> str:
        """Write nested trees for ``files`` (full path -> leaf entry); return the root sha."""
        children: dict[str, dict[str, TreeEntry]] = {}
        leaves: list[TreeEntry] = []
        for path, entry in files.items():
            head, sep, rest = path.partition("/")
            if sep:
                children.setdefault(head, {})[rest] = entry
            else:
                leaves.append(TreeEntry(head, entry.mode, entry.type, entry.sha))
        for name, sub in children.items():
            leaves.append(TreeEntry(name, "040000", "tree", self.build_tree(sub)))
        return self.add_tree(leaves)

    def add_commit(
        self,
        tree: str,
        parents: Iterable[str],
        message: str,
        author: Signature,
        committer: Signature | None = None,
    ) -> GitCommit:
        committer = committer or author
        parents = tuple(parents)
        text = f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents)
        text += f"author {author.name} <{author.email}> {author.date}\n"
        text += f"committer {committer.name} <{committer.email}> {committer.date}\n\n{message}"
        commit = GitCommit(
            git_sha("commit", text.encode()), tree, parents, message, author, committer
        )
        self.commits[commit.sha] = commit
        return commit

    def resolve(self, ref: str) -> str | None:
        """A commit sha for a branch, tag, ``heads/x``/``refs/heads/x`` or (short) sha."""
        for candidate in (ref, f"refs/{ref}", f"refs/heads/{ref}", f"refs/tags/{ref}"):
            if candidate in self.refs:
                return self.refs[candidate]
        if ref in self.commits:
            return ref
        if len(ref) >= 7:
            hits = [sha for sha in self.commits if sha.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
        return None

    # -- seed helpers --------------------------------------------------------------------

    def commit(
        self,
        files: Mapping[str, bytes | str | None],
        *,
        message: str = "Update files",
        branch: str | None = None,
        author: str = "Octo Cat",
    ) -> str:
        """Commit ``files`` (path -> content; None deletes) on top of ``branch`` (the default
        branch if None; created if missing) and move the branch. Returns the commit sha."""
        with self._store.lock:
            branch = branch or self.default_branch
            ref = f"refs/heads/{branch}"
            parent = self.refs.get(ref)
            current = self.flatten(self.commits[parent].tree) if parent else {}
            for path, content in files.items():
                if content is None:
                    current.pop(path, None)
                    continue
                data = content.encode() if isinstance(content, str) else content
                current[path] = TreeEntry(path, "100644", "blob", self.add_blob(data))
            tree = self.build_tree(current)
            sig = Signature(author, f"{author.lower().replace(' ', '.')}@example.com", now_iso())
            commit = self.add_commit(tree, [parent] if parent else [], message, sig)
            self.refs[ref] = commit.sha
            return commit.sha

    def create_pull(
        self,
        *,
        head: str,
        base: str | None = None,
        title: str = "A change",
        body: str | None = None,
        user: str = "octocat",
        number: int | None = None,
        draft: bool = False,
    ) -> int:
        """Open a pull request from branch ``head`` into ``base`` (both must exist). Returns its
        number (shared with issues, as on GitHub)."""
        with self._store.lock:
            base = base or self.default_branch
            head_sha = self.refs[f"refs/heads/{head}"]
            base_sha = self.refs[f"refs/heads/{base}"]
            number = number or max(self.issues, default=0) + 1
            self.issues[number] = Issue(
                number,
                title,
                body,
                user,
                pull=PullRequest(number, head, head_sha, base, base_sha, draft=draft),
            )
            return number

    def create_issue(self, *, title: str, body: str | None = None, user: str = "octocat",
                     labels: Iterable[str] = (), state: str = "open") -> int:
        """Open an issue (or a closed one, with ``state="closed"``); returns its number."""
        with self._store.lock:
            number = max(self.issues, default=0) + 1
            issue = Issue(number, title, body, user, labels=list(labels))
            if state == "closed":
                issue.state, issue.closed_at, issue.state_reason = "closed", now_iso(), "completed"
            self.issues[number] = issue
            return number

    def add_workflow(
        self,
        path: str,
        *,
        name: str | None = None,
        dispatch: bool = True,
        inputs: Mapping[str, Mapping[str, Any]] | None = None,
        state: str = "active",
    ) -> int:
        """Register the workflow file ``path`` (``.github/workflows/retrain.yml``; a bare file
        name is put there): ``dispatch`` says whether its ``on:`` has ``workflow_dispatch``,
        ``inputs`` are its ``workflow_dispatch.inputs`` as the file declares them (``{"epochs":
        {"required": True}, "mode": {"type": "choice", "options": ["a", "b"]}}``). It counts as
        present on every ref. Returns its id (the API takes the id or the file name)."""
        if "/" not in path:
            path = f".github/workflows/{path}"
        with self._store.lock:
            wf = Workflow(self._store.ids(), self.full_name, name or path.rsplit("/", 1)[-1],
                          path, dispatch, {k: dict(v) for k, v in (inputs or {}).items()},
                          state)
            self.workflows[wf.id] = wf
            return wf.id

    def add_workflow_run(
        self,
        *,
        name: str = "CI",
        head_branch: str | None = None,
        head_sha: str | None = None,
        event: str = "push",
        status: str = "completed",
        conclusion: str | None = "success",
        path: str = ".github/workflows/ci.yml",
        actor: str = "octocat",
        pull_requests: Iterable[int] = (),
    ) -> int:
        """Record a workflow run (on the branch's head commit unless ``head_sha`` is given);
        returns its id."""
        with self._store.lock:
            head_branch = head_branch or self.default_branch
            sha = head_sha or self.refs.get(f"refs/heads/{head_branch}") or "0" * 40
            run_number = 1 + sum(
                1 for r in self._store.runs.values() if r.repo == self.full_name and r.path == path
            )
            run = WorkflowRun(
                self._store.ids(),
                self.full_name,
                name,
                run_number,
                head_branch,
                sha,
                event,
                status,
                conclusion if status == "completed" else None,
                path,
                actor,
                tuple(pull_requests),
            )
            self._store.runs[run.id] = run
            return run.id

    def queue_job(
        self,
        labels: Iterable[str],
        *,
        name: str = "train",
        duration: float = 0.5,
        conclusion: str = "success",
        workflow: str = "CI",
        run_id: int | None = None,
    ) -> int:
        """Queue a job waiting for a runner with every label of ``labels`` (its ``runs-on``)
        in a new workflow run (or in run ``run_id``'s current attempt), and send its
        ``queued`` webhook; returns the job's id. A runner stand-in that takes it works
        ``duration`` seconds and reports ``conclusion``."""
        with self._store.lock:
            if run_id is None:
                run_id = self.add_workflow_run(name=workflow, status="queued", conclusion=None)
            run = self._store.runs[run_id]
            return self._store.add_job(run, name, tuple(labels), duration, conclusion).id

    def set_environment(
        self,
        name: str,
        *,
        wait_timer: int = 0,
        reviewers: Iterable[tuple[str, int]] = (),
        prevent_self_review: bool = False,
        branch_policy: Mapping[str, bool] | None = None,
    ) -> Environment:
        """Create or update environment ``name`` (names are case-insensitive, as on GitHub):
        ``reviewers`` are ``("User" | "Team", id)`` pairs, ``wait_timer`` minutes,
        ``branch_policy`` ``{"protected_branches": ..., "custom_branch_policies": ...}``."""
        with self._store.lock:
            env = self.environments.get(name.lower())
            if env is None:
                env = Environment(self._store.ids(), name)
                self.environments[name.lower()] = env
            env.wait_timer, env.prevent_self_review = wait_timer, prevent_self_review
            env.reviewers = tuple(Reviewer(kind, int(i)) for kind, i in reviewers)
            env.branch_policy = dict(branch_policy) if branch_policy is not None else None
            env.updated_at = now_iso()
            return env

    def add_artifact(self, run_id: int, name: str, data: bytes, *, expired: bool = False) -> int:
        """Attach an artifact (``data``: the zip archive's bytes) to a run; returns its id."""
        with self._store.lock:
            if run_id not in self._store.runs:
                raise KeyError(f"no workflow run {run_id}")
            artifact = Artifact(self._store.ids(), self.full_name, run_id, name, data, expired)
            self._store.artifacts[artifact.id] = artifact
            return artifact.id


JobListener = Callable[[str, Job], None]


class Store:
    """Everything the emulator holds, guarded by one re-entrant lock; ``changed`` (on that
    lock) is notified whenever a job or a runner changes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.ids = Ids()
        self.repos: dict[str, Repo] = {}
        self.issue_comments: dict[int, IssueComment] = {}
        self.commit_comments: dict[int, CommitComment] = {}
        self.check_runs: dict[int, CheckRun] = {}
        self.statuses: dict[int, CommitStatus] = {}
        self.runs: dict[int, WorkflowRun] = {}
        self.artifacts: dict[int, Artifact] = {}
        self.tokens: dict[str, Token] = {}
        self.orgs: dict[str, Org] = {}
        self.apps: dict[int, App] = {}
        self.installations: dict[int, Installation] = {}
        self.installation_token_ttl = 3600.0
        self.jobs: dict[int, Job] = {}
        self.runners: dict[int, Runner] = {}  # registered runners
        self.runner_sessions: dict[str, Runner] = {}  # by JIT session token, removed ones too
        self.label_ids: dict[str, int] = {}
        self.job_listener: JobListener | None = None  # told of every job transition

    def create_org(self, login: str) -> Org:
        with self.lock:
            org = Org(self.ids(), login)
            self.orgs[login.lower()] = org
            return org

    def org(self, login: str) -> Org | None:
        return self.orgs.get(login.lower())

    def label_id(self, name: str) -> int:
        return self.label_ids.setdefault(name.lower(), len(self.label_ids) + 1)

    # -- jobs and runners (callers hold the lock) -----------------------------------------

    def add_job(
        self, run: WorkflowRun, name: str, labels: tuple[str, ...], duration: float, conclusion: str
    ) -> Job:
        """A queued job in ``run``'s current attempt (sends its ``queued`` event)."""
        job = Job(self.ids(), run.repo, run.id, run.run_attempt, name, labels, duration, conclusion)
        self.jobs[job.id] = job
        self._job_changed(job, "queued")
        return job

    def latest_jobs(self, run_id: int) -> list[Job]:
        """The jobs of a run not re-run since (each job's latest attempt), oldest first."""
        return sorted(
            (j for j in self.jobs.values() if j.run_id == run_id and not j.superseded),
            key=lambda j: j.id,
        )

    def start_job(self, job: Job, runner: Runner) -> None:
        job.status, job.started_at = "in_progress", now_iso()
        job.runner_id, job.runner_name = runner.id, runner.name
        job.runner_group_id = runner.runner_group_id
        runner.busy, runner.job_id = True, job.id
        runner.last_heartbeat = time.monotonic()
        self._job_changed(job, "in_progress")

    def finish_job(self, job: Job, conclusion: str) -> None:
        job.status, job.conclusion, job.completed_at = "completed", conclusion, now_iso()
        self._job_changed(job, "completed")

    def remove_runner(self, runner: Runner) -> None:
        """Deregister ``runner``: its JIT session token now answers 410."""
        runner.deleted, runner.busy, runner.status, runner.session = (
            True,
            False,
            "offline",
            "closed",
        )
        self.runners.pop(runner.id, None)
        self.changed.notify_all()

    def _job_changed(self, job: Job, action: str) -> None:
        run = self.runs[job.run_id]
        jobs = self.latest_jobs(run.id)
        states = {j.status for j in jobs}
        run.status, run.conclusion = "in_progress", None
        if states == {"queued"}:
            run.status = "queued"
        elif states == {"completed"}:
            failed = [c for c in _RUN_CONCLUSIONS if any(j.conclusion == c for j in jobs)]
            run.status, run.conclusion = "completed", failed[0] if failed else "success"
        run.updated_at = now_iso()
        if self.job_listener is not None:
            self.job_listener(action, dataclasses.replace(job))
        self.changed.notify_all()

    def create_repo(
        self, full_name: str, *, default_branch: str = "main", private: bool = False
    ) -> Repo:
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"repository name must be owner/name, got {full_name!r}")
        with self.lock:
            repo = Repo(self.ids(), owner, name, default_branch, private, self)
            self.repos[full_name.lower()] = repo
            return repo

    def repo(self, owner: str, name: str) -> Repo | None:
        return self.repos.get(f"{owner}/{name}".lower())
