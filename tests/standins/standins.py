"""Local stand-ins for the third-party actions our workflows use, for tests under `act` only.

GitHub, and so ``actions/checkout`` and friends, cannot be reached from the test machines. The
harness (``tests/integration/_act.py``) maps every SHA-pinned ref of those actions to the
directories next to this file through ``act --local-repository``; their ``action.yml`` files call
``python standins.py <command>``. Only the standard library is used, and the interfaces (inputs,
outputs, environment files, failure messages) follow the real actions:

* ``checkout`` (actions/checkout v4): a git fetch from a local repository (``STANDIN_CHECKOUT_SOURCE``
  for ``github.repository``, ``STANDIN_REPOS`` for others) into ``GITHUB_WORKSPACE/<path>``;
  ``ref``, ``fetch-depth``, ``fetch-tags``, ``clean``, ``persist-credentials`` are honoured; with
  no ``ref``, the source's uncommitted working-tree changes are laid over the commit (what ``act``
  itself does for a local checkout).
* ``setup-python`` (actions/setup-python v5): a fresh virtual environment from a host interpreter
  (``STANDIN_PYTHON_CANDIDATES``) whose version satisfies ``python-version``; it fails like the
  real action when no interpreter matches.
* ``cache-restore`` / ``cache-save`` (actions/cache v4, also ``/restore`` and ``/save``): entries in
  ``STANDIN_CACHE_DIR`` keyed by ``key`` and a version derived from ``path``; ``restore-keys`` and
  key prefixes match the newest entry, as the cache service does.
* ``upload-artifact`` / ``download-artifact`` (v4): artifacts of the current ``act`` run live in
  ``STANDIN_ARTIFACT_DIR/files/<name>/`` with the artifact root rules of upload-artifact.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import fnmatch
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

# --------------------------------------------------------------------------------------------
# The runner's interface: inputs, outputs, state and environment files.


def inp(name: str, default: str = "") -> str:
    """An input, as node actions (``INPUT_RESTORE-KEYS``) or our composites (``INPUT_RESTORE_KEYS``)
    receive it."""
    upper = name.upper().replace(" ", "_")
    for key in (f"INPUT_{upper}", f"INPUT_{upper.replace('-', '_')}"):
        value = os.environ.get(key)
        if value is not None and value.strip() != "":
            return value.strip()
    return default


def required(name: str) -> str:
    value = inp(name)
    if not value:
        fail(f"Input required and not supplied: {name}")
    return value


def boolean(name: str, default: bool) -> bool:
    value = inp(name)
    if not value:
        return default
    if value in ("true", "True", "TRUE"):
        return True
    if value in ("false", "False", "FALSE"):
        return False
    fail(f'Input does not meet YAML 1.2 "Core Schema" specification: {name}\n'
         "Support boolean input list: `true | True | TRUE | false | False | FALSE`")


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _append(env_file: str, name: str, value: str) -> None:
    path = os.environ.get(env_file)
    if not path:
        fail(f"{env_file} is not set: not running under a runner")
    with open(path, "a", encoding="utf-8") as fh:
        if "\n" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4()}"
            fh.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            fh.write(f"{name}={value}\n")


def set_output(name: str, value: str) -> None:
    _append("GITHUB_OUTPUT", name, value)


def set_env(name: str, value: str) -> None:
    _append("GITHUB_ENV", name, value)
    os.environ[name] = value


def save_state(name: str, value: str) -> None:
    _append("GITHUB_STATE", name, value)


def add_path(directory: Path) -> None:
    path = os.environ.get("GITHUB_PATH")
    if not path:
        fail("GITHUB_PATH is not set: not running under a runner")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{directory}\n")


def info(message: str) -> None:
    print(message, flush=True)


def notice(message: str) -> None:
    print(f"::notice::{message}", flush=True)


def warning(message: str) -> None:
    print(f"::warning::{message}", flush=True)


def fail(message: str) -> NoReturn:
    print(f"::error::{message}", flush=True)
    raise SystemExit(1)


def env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        fail(f"{name} is not set: run this workflow through tests/integration/_act.py")
    return Path(value)


def workspace() -> Path:
    return env_path("GITHUB_WORKSPACE").resolve()


def resolve(path: str, base: Path | None = None) -> Path:
    """``~`` expanded; relative paths are rooted at ``base`` (the workspace by default)."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else (base or workspace()) / p


def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        fail(f"The process 'git {' '.join(args)}' failed with exit code {proc.returncode}\n"
             f"{proc.stderr.strip()}")
    return proc.stdout.strip()


def copy_any(src: Path, dst: Path) -> None:
    """Copy a file, link or tree over whatever is at ``dst``, as extracting the cache's tar
    archive over existing files does (existing files and links are replaced)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and not src.is_symlink():
        if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
            dst.unlink()
        dst.mkdir(exist_ok=True)
        shutil.copystat(src, dst)
        for child in src.iterdir():
            copy_any(child, dst / child.name)
        return
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    elif dst.is_symlink() or dst.exists():
        dst.unlink()
    shutil.copy2(src, dst, follow_symlinks=False)


def empty_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


# --------------------------------------------------------------------------------------------
# actions/checkout


def _checkout_source(repository: str) -> Path:
    if repository.lower() == os.environ.get("GITHUB_REPOSITORY", "").lower():
        return env_path("STANDIN_CHECKOUT_SOURCE")
    repos: dict[str, str] = json.loads(os.environ.get("STANDIN_REPOS") or "{}")
    for name, path in repos.items():
        if name.lower() == repository.lower():
            return Path(path)
    fail(f"stand-in checkout: no local source for repository '{repository}' "
         "(give it to the harness in `repos`)")


def _resolve_commit(source: Path, ref: str) -> tuple[str, str | None]:
    """(commit sha, branch name or None) of ``ref`` in the source repository."""
    candidates: list[tuple[str, str | None]] = []
    if ref.startswith("refs/heads/"):
        candidates.append((ref, ref[len("refs/heads/"):]))
    elif ref.startswith("refs/"):
        candidates.append((ref, None))
    else:
        candidates += [(f"refs/heads/{ref}", ref), (f"refs/tags/{ref}", None),
                       (f"refs/remotes/origin/{ref}", ref), (ref, None)]
    for candidate, branch in candidates:
        sha = git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=source,
                  check=False)
        if sha:
            return sha, branch
    fail(f"A branch or tag with the name '{ref}' could not be found")


def _overlay_worktree(source: Path, dest: Path) -> int:
    """Lay the source's uncommitted changes (modified, untracked, deleted) over ``dest``."""
    out = subprocess.run(["git", "ls-files", "-z", "-m", "-o", "-d", "--exclude-standard"],
                         cwd=source, capture_output=True, check=True).stdout
    changed = sorted({p.decode() for p in out.split(b"\0") if p})
    for rel in changed:
        src, dst = source / rel, dest / rel
        if src.exists() or src.is_symlink():
            copy_any(src, dst)
        elif dst.exists() or dst.is_symlink():
            dst.unlink()
    return len(changed)


def checkout() -> None:
    ws = workspace()
    repository = inp("repository") or os.environ.get("GITHUB_REPOSITORY", "")
    path = inp("path")
    dest = resolve(path, ws).resolve() if path else ws
    if dest != ws and ws not in dest.parents:
        fail(f"Repository path '{dest}' is not under '{ws}'")
    for name in ("ssh-key", "sparse-checkout", "filter"):
        if inp(name):
            fail(f"stand-in checkout: input '{name}' is not supported")
    for name in ("lfs",):
        if boolean(name, False):
            fail(f"stand-in checkout: input '{name}' is not supported")
    if inp("submodules", "false") not in ("false", "False", "FALSE"):
        fail("stand-in checkout: input 'submodules' is not supported")
    try:
        depth = int(inp("fetch-depth", "1"))
    except ValueError:
        fail(f"The fetch-depth input must be a number, got '{inp('fetch-depth')}'")
    ref = inp("ref")
    fetch_tags = boolean("fetch-tags", False)
    persist = boolean("persist-credentials", True)
    boolean("clean", True)  # validated; the destination is always emptied (same end state)
    source = _checkout_source(repository)
    info(f"Syncing repository: {repository} (stand-in: from {source})")

    empty_dir(dest)
    is_git = (source / ".git").exists() or git("rev-parse", "--git-dir", cwd=source,
                                                   check=False) == "."
    if not is_git:
        if ref:
            fail(f"stand-in checkout: '{source}' is not a git repository, cannot check out {ref}")
        shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True)
        set_output("ref", "")
        set_output("commit", "")
        return

    own = repository.lower() == os.environ.get("GITHUB_REPOSITORY", "").lower()
    branch: str | None = None
    if ref:
        sha, branch = _resolve_commit(source, ref)
    elif own and os.environ.get("GITHUB_SHA"):
        sha = git("rev-parse", "--verify", f"{os.environ['GITHUB_SHA']}^{{commit}}", cwd=source)
        github_ref = os.environ.get("GITHUB_REF", "")
        branch = github_ref[len("refs/heads/"):] if github_ref.startswith("refs/heads/") else None
        ref = github_ref
    else:
        sha, branch = _resolve_commit(source, "HEAD")
        head = git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=source, check=False)
        branch = head or None
        ref = f"refs/heads/{head}" if head else sha

    git("-c", "init.defaultBranch=main", "init", "-q", str(dest))
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
    git("remote", "add", "origin", f"{server}/{repository}", cwd=dest)
    url = source.resolve().as_uri()
    depth_args = [f"--depth={depth}"] if depth > 0 else []
    tag_args = ["--tags"] if fetch_tags or depth == 0 else ["--no-tags"]
    if depth == 0:
        git("fetch", "-q", *tag_args, url, "+refs/heads/*:refs/remotes/origin/*", cwd=dest)
    git("fetch", "-q", *depth_args, *tag_args, url, sha, cwd=dest)
    if branch:
        git("update-ref", f"refs/remotes/origin/{branch}", sha, cwd=dest)
        git("checkout", "-q", "--force", "-B", branch, sha, cwd=dest)
    else:
        git("checkout", "-q", "--force", "--detach", sha, cwd=dest)
    if own and not inp("ref") and os.environ.get("STANDIN_CHECKOUT_OVERLAY", "1") != "0":
        head = git("rev-parse", "HEAD", cwd=source, check=False)
        if head == sha:
            count = _overlay_worktree(source, dest)
            if count:
                notice(f"stand-in checkout: {count} uncommitted change(s) of {source} laid "
                       "over the commit")
    token = inp("token")
    if persist and token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        git("config", "--local", f"http.{server}/.extraheader", f"AUTHORIZATION: basic {basic}",
            cwd=dest)
    set_output("ref", ref)
    set_output("commit", sha)
    info(f"HEAD is now at {sha[:7]}")


# --------------------------------------------------------------------------------------------
# actions/setup-python

_PROBE = "import json, sys; print(json.dumps([list(sys.version_info[:3]), sys.executable]))"
_PIP_PROBE = ("import os\n"
              "try:\n"
              "    import pip\n"
              "    print(os.path.dirname(pip.__path__[0]))\n"
              "except ImportError:\n"
              "    pass\n")


@dataclasses.dataclass(frozen=True)
class Interpreter:
    version: tuple[int, int, int]
    exe: str

    @property
    def text(self) -> str:
        return ".".join(str(v) for v in self.version)


def _candidates() -> list[Interpreter]:
    raw = os.environ.get("STANDIN_PYTHON_CANDIDATES") or os.environ.get("STANDIN_HOST_PYTHON", "")
    found: list[Interpreter] = []
    for exe in (p for p in raw.split(os.pathsep) if p):
        try:
            proc = subprocess.run([exe, "-I", "-c", _PROBE], capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode != 0:
            continue
        version, real_exe = json.loads(proc.stdout)
        major, minor, micro = (int(v) for v in version)
        interp = Interpreter((major, minor, micro), str(real_exe))
        if all(i.exe != interp.exe for i in found):
            found.append(interp)
    return found


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def version_matches(spec: str, version: tuple[int, int, int]) -> bool:
    """A ``python-version`` spec (``3.11``, ``3.11.7``, ``3.x``, ``>=3.10 <3.13``) against a version."""
    spec = spec.strip()
    if re.search(r"[<>=~^]", spec):
        for clause in spec.replace(",", " ").split():
            m = re.fullmatch(r"(>=|<=|==|=|>|<|~=|\^)?(\d+(?:\.\d+)*)", clause)
            if not m:
                return False
            op, want = m.group(1) or "==", _version_tuple(m.group(2))
            have = version[: len(want)]
            if op in ("==", "=") and have != want:
                return False
            if op == ">=" and version < want:
                return False
            if op == "<=" and have > want:
                return False
            if op == ">" and have <= want:
                return False
            if op == "<" and version >= want:
                return False
            if op in ("~=", "^") and not (version >= want and version[0] == want[0]):
                return False
        return True
    parts = spec.split(".")
    if not parts or not all(p.isdigit() or p in ("x", "*") for p in parts):
        return False
    return all(p in ("x", "*") or int(p) == have
               for p, have in zip(parts, version, strict=False)) and len(parts) <= 3


def _requested_version() -> str:
    versions = lines(inp("python-version"))
    if not versions and inp("python-version-file"):
        file = resolve(inp("python-version-file"))
        if not file.is_file():
            fail(f"The specified python version file at: {file} doesn't exist.")
        text = file.read_text()
        if file.name == ".tool-versions":
            versions = [ln.split()[1] for ln in text.splitlines() if ln.startswith("python ")]
        elif file.name == "pyproject.toml":
            m = re.search(r'^\s*requires-python\s*=\s*"([^"]+)"', text, re.M)
            versions = [m.group(1)] if m else []
        else:
            versions = [ln.strip() for ln in text.splitlines()
                        if ln.strip() and not ln.startswith("#")]
    if len(versions) > 1:
        warning(f"stand-in setup-python: only the last of {versions} is set up")
    return versions[-1] if versions else ""


def setup_python() -> None:
    spec = _requested_version()
    arch = inp("architecture")
    if arch and arch not in ("x64", "amd64", "x86_64"):
        fail(f"stand-in setup-python: architecture '{arch}' is not available")
    if boolean("freethreaded", False):
        fail("stand-in setup-python: free-threaded builds are not available")
    candidates = _candidates()
    if not candidates:
        fail("stand-in setup-python: no interpreter in STANDIN_PYTHON_CANDIDATES runs")
    if spec:
        if spec.startswith(("pypy", "graalpy")):
            fail(f"stand-in setup-python: '{spec}' is not available")
        matching = [c for c in candidates if version_matches(spec, c.version)]
        if not matching:
            available = ", ".join(c.text for c in candidates)
            fail(f"The version '{spec}' with architecture 'x64' was not found for this "
                 f"operating system. (stand-in: available {available})")
        chosen = max(matching, key=lambda c: c.version)
    else:
        warning("Neither 'python-version' nor 'python-version-file' inputs were supplied. "
                "The stand-in uses the first interpreter it was given.")
        chosen = candidates[0]
    version = chosen.text
    runner_temp = env_path("RUNNER_TEMP")
    venv = runner_temp / "_standin_python" / version / "x64"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([chosen.exe, "-m", "venv", "--without-pip", str(venv)],
                       check=True)
        site = Path(subprocess.run([str(python), "-c", "import sysconfig;"
                                    "print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        pip_dir = subprocess.run([chosen.exe, "-I", "-c", _PIP_PROBE], capture_output=True,
                                 text=True, check=False).stdout.strip()
        pip_home = Path(pip_dir) if pip_dir else None
        if pip_home and (pip_home / "pip").is_dir():
            shutil.copytree(pip_home / "pip", site / "pip", symlinks=True)
            for dist in pip_home.glob("pip-*.dist-info"):
                shutil.copytree(dist, site / dist.name, symlinks=True)
        else:
            subprocess.run([str(python), "-m", "ensurepip", "--default-pip"], check=True,
                           capture_output=True)
        major_minor = ".".join(version.split(".")[:2])
        for name in ("pip", "pip3", f"pip{major_minor}"):
            script = venv / "bin" / name
            if not script.exists():
                script.write_text('#!/bin/sh\nexec "$(dirname -- "$0")/python" -m pip "$@"\n')
                script.chmod(0o755)
    if boolean("update-environment", True):
        set_env("pythonLocation", str(venv))
        set_env("PKG_CONFIG_PATH", str(venv / "lib" / "pkgconfig"))
        for name in ("Python_ROOT_DIR", "Python2_ROOT_DIR", "Python3_ROOT_DIR"):
            set_env(name, str(venv))
        add_path(venv / "bin")
    if inp("cache"):
        notice(f"stand-in setup-python: '{inp('cache')}' dependency caching is not emulated")
    set_output("python-version", version)
    set_output("python-path", str(python))
    set_output("cache-hit", "false")
    info(f"Successfully set up CPython ({version}) (stand-in: venv of {chosen.exe})")


# --------------------------------------------------------------------------------------------
# actions/cache


def _cache_version(paths: list[str]) -> str:
    """As the cache service's version: the ``path`` input as written, so the per-run directories
    of act (workspace, runner.temp) are put back to the constant names they have on GitHub."""
    cross_os = boolean("enableCrossOsArchive", False)
    normal = []
    for p in paths:
        for var in ("GITHUB_WORKSPACE", "RUNNER_TEMP"):
            value = os.environ.get(var)
            if value:
                p = p.replace(value, "${" + var + "}")
        normal.append(p)
    material = "|".join([*normal, "zstd-without-long", *(["cross-os"] if cross_os else [])])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _check_key(key: str) -> None:
    if len(key) > 512:
        fail(f"Key Validation Error: {key} cannot be larger than 512 characters.")
    if "," in key:
        fail(f"Key Validation Error: {key} cannot contain commas.")


def _entries(store: Path) -> list[tuple[int, str, Path]]:
    found: list[tuple[int, str, Path]] = []
    if store.is_dir():
        for meta in store.glob("*/meta.json"):
            data = json.loads(meta.read_text())
            found.append((int(data["created"]), str(data["key"]), meta.parent))
    return sorted(found, reverse=True)


def _find_entry(store: Path, key: str, restore_keys: list[str]) -> tuple[str, Path] | None:
    entries = _entries(store)
    for _, k, path in entries:
        if k == key:
            return k, path
    for prefix in [key, *restore_keys]:
        for _, k, path in entries:  # newest first
            if k.startswith(prefix):
                return k, path
    return None


def _match_paths(patterns: list[str]) -> list[Path]:
    """Files and directories matched by ``path`` patterns (globs, ``!`` exclusions)."""
    includes = [p for p in patterns if not p.startswith("!")]
    excludes = [str(resolve(p[1:])) for p in patterns if p.startswith("!")]
    matched: list[Path] = []
    for pattern in includes:
        full = str(resolve(pattern))
        hits = glob.glob(full, recursive=True) if glob.has_magic(full) else [full]
        for hit in sorted(hits):
            path = Path(hit)
            if (path.exists() or path.is_symlink()) and not any(
                    fnmatch.fnmatch(hit, ex) for ex in excludes) and path not in matched:
                matched.append(path)
    return matched


def _cache_roots() -> list[tuple[str, Path]]:
    """Where cached files are restored: per-run directories by role, the rest by absolute path."""
    roots = [("ws", workspace())]
    if os.environ.get("RUNNER_TEMP"):
        roots.append(("temp", Path(os.environ["RUNNER_TEMP"]).resolve()))
    return [*roots, ("abs", Path("/"))]


def _store_name(path: Path) -> str:
    for name, root in _cache_roots():
        if path == root or root in path.parents:
            return f"{name}/{path.relative_to(root)}"
    raise AssertionError(path)


def cache_restore(action: str) -> None:
    """``action`` is ``cache`` (restore now, save in the post step) or ``restore``."""
    key = required("key")
    paths = lines(required("path"))
    restore_keys = lines(inp("restore-keys"))
    for k in [key, *restore_keys]:
        _check_key(k)
    store = env_path("STANDIN_CACHE_DIR") / _cache_version(paths)
    if action == "restore":
        set_output("cache-primary-key", key)
    else:
        save_state("CACHE_KEY", key)
    found = _find_entry(store, key, restore_keys)
    if found is None:
        if boolean("fail-on-cache-miss", False):
            fail("Failed to restore cache entry. Exiting as fail-on-cache-miss is set. "
                 f"Input key: {key}")
        info(f"Cache not found for input keys: {', '.join([key, *restore_keys])}")
        return
    matched, entry = found
    if action == "cache":
        save_state("CACHE_RESULT", matched)
    if boolean("lookup-only", False):
        info(f"Cache found and can be restored from key: {matched}")
    else:
        for kind, base in _cache_roots():
            root = entry / "files" / kind
            if root.is_dir():
                for child in sorted(root.iterdir()):
                    copy_any(child, base / child.name)
        info(f"Cache restored from key: {matched}")
    if action == "restore":
        set_output("cache-matched-key", matched)
    set_output("cache-hit", "true" if matched == key else "false")


def cache_save(action: str) -> None:
    """``action`` is ``post`` (the post step of actions/cache) or ``save``."""
    if action == "post":
        key = os.environ.get("STATE_CACHE_KEY", "")
        if not key:
            info("Key is not specified, not saving cache.")
            return
        if os.environ.get("STATE_CACHE_RESULT") == key:
            info(f"Cache hit occurred on the primary key {key}, not saving cache.")
            return
        if boolean("lookup-only", False):
            return
    else:
        key = required("key")
    _check_key(key)
    paths = lines(required("path"))
    store = env_path("STANDIN_CACHE_DIR") / _cache_version(paths)
    matched = _match_paths(paths)
    if not matched:
        warning("Path Validation Error: Path(s) specified in the action for caching do(es) not "
                "exist, hence no cache is being saved.")
        return
    store.mkdir(parents=True, exist_ok=True)
    with _locked(store / ".lock"):
        if any(k == key for _, k, _ in _entries(store)):
            warning(f"Failed to save: Unable to reserve cache with key {key}, another job may "
                    "be creating this cache.")
            return
        entry = store / hashlib.sha256(key.encode()).hexdigest()[:32]
        tmp = store / f".tmp-{uuid.uuid4().hex}"
        for path in matched:
            copy_any(path, tmp / "files" / _store_name(path.resolve()))
        (tmp / "meta.json").write_text(json.dumps({"key": key, "created": time.time_ns(),
                                                   "paths": paths}))
        tmp.rename(entry)
    info(f"Cache saved with key: {key}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# actions/upload-artifact and actions/download-artifact

_BAD_NAME_CHARS = '"<>|*?\r\n\\/:'


def _search_root(pattern: Path) -> Path:
    """The part of a pattern before its first glob segment."""
    root = Path(pattern.anchor)
    for part in pattern.parts[1:]:
        if glob.has_magic(part):
            break
        root = root / part
    return root


def _is_hidden(path: Path, root: Path) -> bool:
    rel = path.relative_to(root).parts if path != root else ()
    return path.name.startswith(".") or any(p.startswith(".") for p in rel)


def upload_artifact() -> None:
    name = inp("name", "artifact")
    if any(ch in name for ch in _BAD_NAME_CHARS):
        fail(f'The artifact name is not valid: {name}. Contains the following character: '
             f'{next(ch for ch in _BAD_NAME_CHARS if ch in name)!r}')
    patterns = lines(required("path"))
    if_none = inp("if-no-files-found", "warn")
    if if_none not in ("warn", "error", "ignore"):
        fail(f"Unrecognized if-no-files-found input. Provided: {if_none}. "
             "Available options: warn,error,ignore")
    level = inp("compression-level", "6")
    if not level.isdigit() or not 0 <= int(level) <= 9:
        fail("Invalid compression-level: must be a number between 0 and 9")
    retention = inp("retention-days")
    if retention and not retention.isdigit():
        fail(f"Invalid retention-days: {retention}")
    overwrite = boolean("overwrite", False)
    hidden = boolean("include-hidden-files", False)

    cwd = Path.cwd()
    includes = [resolve(p, cwd) for p in patterns if not p.startswith("!")]
    excludes = [str(resolve(p[1:], cwd)) for p in patterns if p.startswith("!")]
    roots = [_search_root(p) for p in includes]
    files: dict[Path, Path] = {}  # absolute file -> search root
    for pattern, root in zip(includes, roots, strict=True):
        hits = glob.glob(str(pattern), recursive=True) if glob.has_magic(str(pattern)) \
            else [str(pattern)]
        for hit in hits:
            path = Path(hit)
            candidates = sorted(p for p in path.rglob("*") if p.is_file()) \
                if path.is_dir() else ([path] if path.is_file() else [])
            for f in candidates:
                if any(fnmatch.fnmatch(str(f), ex) for ex in excludes):
                    continue
                if not hidden and _is_hidden(f, root if root.is_dir() else root.parent):
                    continue
                files.setdefault(f, root)
    if not files:
        message = (f"No files were found with the provided path: {chr(10).join(patterns)}. "
                   "No artifacts will be uploaded.")
        if if_none == "error":
            fail(message)
        if if_none == "warn":
            warning(message)
        else:
            info(message)
        return
    if len(roots) == 1:
        base = roots[0] if roots[0].is_dir() else roots[0].parent
    else:
        base = Path(os.path.commonpath([str(r) for r in roots]))
        base = base if base.is_dir() else base.parent

    store = env_path("STANDIN_ARTIFACT_DIR")
    dest = store / "files" / name
    (store / "meta").mkdir(parents=True, exist_ok=True)
    with _locked(store / ".lock"):
        if dest.exists():
            if not overwrite:
                fail("Failed to CreateArtifact: Received non-retryable error: Failed request: "
                     "(409) Conflict: an artifact with this name already exists on the workflow "
                     "run")
            shutil.rmtree(dest)
            (store / "meta" / f"{name}.json").unlink(missing_ok=True)
        counter = store / "counter"
        artifact_id = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(artifact_id))
        digest = hashlib.sha256()
        for f in sorted(files):
            rel = f.relative_to(base)
            copy_any(f.resolve(), dest / rel)
            digest.update(str(rel).encode() + b"\0" + f.read_bytes())
        (store / "meta" / f"{name}.json").write_text(json.dumps(
            {"id": artifact_id, "name": name, "files": len(files), "digest": digest.hexdigest(),
             "retention-days": retention}))
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
    url = (f"{server}/{os.environ.get('GITHUB_REPOSITORY', '')}/actions/runs/"
           f"{os.environ.get('GITHUB_RUN_ID', '')}/artifacts/{artifact_id}")
    info(f"With the provided path, there will be {len(files)} file(s) uploaded")
    info(f"Artifact {name} has been successfully uploaded! Final size is ... (stand-in)")
    set_output("artifact-id", str(artifact_id))
    set_output("artifact-url", url)
    set_output("artifact-digest", digest.hexdigest())


def download_artifact() -> None:
    name = inp("name")
    target = resolve(inp("path")) if inp("path") else workspace()
    pattern = inp("pattern")
    merge = boolean("merge-multiple", False)
    run_id = inp("run-id")
    if run_id and run_id != os.environ.get("GITHUB_RUN_ID"):
        fail("stand-in download-artifact: artifacts of other runs are not available")
    ids = {i.strip() for i in inp("artifact-ids").split(",") if i.strip()}
    store = env_path("STANDIN_ARTIFACT_DIR")
    metas: dict[str, dict[str, object]] = {}
    if (store / "meta").is_dir():
        for meta in (store / "meta").glob("*.json"):
            data = json.loads(meta.read_text())
            metas[str(data["name"])] = data
    if name:
        if name not in metas:
            fail(f"Unable to download artifact(s): Artifact not found for name: {name}\n"
                 "        Please ensure that your artifact is not expired and the artifact was "
                 "uploaded using a compatible version of toolkit/upload-artifact.\n"
                 "        For more information, visit the GitHub Artifacts FAQ: "
                 "https://github.com/actions/toolkit/blob/main/packages/artifact/docs/faq.md")
        selected = [name]
    else:
        selected = sorted(n for n, m in metas.items()
                          if (not pattern or fnmatch.fnmatchcase(n, pattern))
                          and (not ids or str(m["id"]) in ids))
        if ids and len(selected) < len(ids):
            fail(f"Unable to download artifact(s): artifacts not found for ids: {sorted(ids)}")
    target.mkdir(parents=True, exist_ok=True)
    for artifact in selected:
        dest = target if (name or merge) else target / artifact
        shutil.copytree(store / "files" / artifact, dest, symlinks=True, dirs_exist_ok=True)
        info(f"Artifact download completed successfully: {artifact}")
    info(f"Total of {len(selected)} artifact(s) downloaded")
    set_output("download-path", str(target))


COMMANDS = {
    "checkout": checkout,
    "setup-python": setup_python,
    "cache-main": lambda: cache_restore("cache"),
    "cache-post": lambda: cache_save("post"),
    "cache-restore": lambda: cache_restore("restore"),
    "cache-save": lambda: cache_save("save"),
    "upload-artifact": upload_artifact,
    "download-artifact": download_artifact,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(f"usage: standins.py {{{','.join(COMMANDS)}}}", file=sys.stderr)
        return 2
    COMMANDS[argv[0]]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
