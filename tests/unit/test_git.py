"""gha_mlops.git against real repositories in tmp_path: each query and command, hostile
names (a leading ``-``, a newline, bytes that are not UTF-8), and a machine without git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gha_mlops import git
from gha_mlops.data.pointer import find_datasets
from gha_mlops.errors import ConfigError, ReproductionError
from gha_mlops.pipeline.environment import git_info
from gha_mlops.pipeline.reproduce import _git_worktree, _listed_files

# A name no shell or line-based parser survives: an option-like start, a space, a newline,
# a quote and a byte that is not UTF-8.
HOSTILE = b"-n odd\n\"name\xff.lock.yaml"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit: ``a.txt``, and ``.gitignore`` ignoring ``ignored/``."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("a\n")
    (root / ".gitignore").write_text("ignored/\n")
    (root / "ignored").mkdir()
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "one")
    return root


def _head(root: Path) -> str:
    return _git(root, "rev-parse", "HEAD").strip()


def test_status_names_commit_branch_and_changes(repo: Path) -> None:
    clean = git.status(repo)
    assert clean == git.Status(commit=_head(repo), branch="main", changed=())
    (repo / "a.txt").write_text("b\n")
    (repo / "with space.txt").write_text("x\n")
    (repo / "ignored" / "x.txt").write_text("x\n")
    _git(repo, "mv", "a.txt", "renamed a.txt")
    changed = git.status(repo / "ignored")
    assert changed is not None and changed.commit == _head(repo)
    # A rename lists its new name only; a name with a space is whole; ignored files are not
    # changes.
    assert sorted(changed.changed) == ["renamed a.txt", "with space.txt"]
    _git(repo, "checkout", "-q", "--detach")
    detached = git.status(repo)
    assert detached is not None and detached.branch is None


def test_status_before_the_first_commit_and_outside_git(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", "-b", "main", "fresh")
    assert git.status(tmp_path / "fresh") == git.Status(commit=None, branch="main", changed=())
    (tmp_path / "plain").mkdir()
    assert git.status(tmp_path / "plain") is None
    assert git.ls_files(tmp_path / "plain") is None
    assert git.is_inside_work_tree(tmp_path / "plain") is False
    assert git.is_ignored(tmp_path / "plain") is False
    assert git.toplevel(tmp_path / "plain") is None


def test_hostile_names_come_back_whole(repo: Path) -> None:
    name = os.fsdecode(HOSTILE)
    (repo / name).write_text("x\n")
    listed = git.ls_files(repo, ["*.lock.yaml"])
    assert listed == [name] and (repo / listed[0]).is_file()  # names the very file
    assert name in (git.ls_files(repo) or [])
    # A pattern that looks like an option is a pattern, never an option.
    assert git.ls_files(repo, ["--others", "-z"]) == []
    status = git.status(repo)
    assert status is not None
    assert status.changed == ("-n odd\n\"name\\xff.lock.yaml",)  # odd bytes shown, no error
    # The run record of such a tree is written, not a crash.
    info = git_info(repo)
    assert info is not None and info["dirty"] is True
    assert info["changed"] == ["-n odd\n\"name\\xff.lock.yaml"]


def test_a_pointer_under_a_name_that_is_not_utf8_is_a_config_error(repo: Path) -> None:
    # git names it (no UnicodeDecodeError), and the pointer's checks refuse the odd path.
    odd = repo / os.fsdecode(b"odd\xff")
    odd.mkdir()
    (odd / "x.lock.yaml").write_text(f"name: x\npath: x\nversion: {'a' * 64}\nfiles: 1\n"
                                     "size: 1\n")
    with pytest.raises(ConfigError, match="cannot hold a dataset") as caught:
        find_datasets(repo)
    assert caught.value.file == f"{odd.name}/x.lock.yaml"


def test_ignored_directories(repo: Path) -> None:
    odd = repo / "ignored" / "-q\nx"
    odd.mkdir()
    assert git.is_ignored(repo / "ignored") is True
    assert git.is_ignored(odd) is True
    assert git.is_ignored(repo) is False
    assert git.is_inside_work_tree(odd) is True
    # A repository that ignores the workspace gives no commit to name.
    assert git_info(repo / "ignored") is None
    assert git_info(repo) is not None


def test_toplevel_finds_the_repository_and_its_worktrees(repo: Path, tmp_path: Path) -> None:
    (repo / "sub" / "deeper").mkdir(parents=True)
    assert git.toplevel(repo / "sub" / "deeper") == repo.resolve()
    dest = tmp_path / "-wt"
    git.worktree_add(repo, dest, _head(repo))
    assert (dest / "a.txt").read_text() == "a\n"
    assert git.toplevel(dest) == dest.resolve()  # a worktree's .git is a file
    assert git.worktree_remove(repo, dest) is True and not dest.exists()
    assert git.worktree_remove(repo, dest) is False  # gone: reported, not raised


def test_worktree_add_takes_only_a_full_commit_id(repo: Path, tmp_path: Path) -> None:
    # Option-like and symbolic revisions never reach git (a recorded commit of
    # "--no-checkout" once gave an empty checkout); an unknown id gets git's own words.
    for bad in ("--no-checkout", "HEAD", "main", _head(repo)[:12]):
        with pytest.raises(git.GitError, match="not a full commit id"):
            git.worktree_add(repo, tmp_path / "wt", bad)
    with pytest.raises(ReproductionError, match="not a full commit id"):
        _git_worktree(repo, "--no-checkout", tmp_path / "wt", ".")
    with pytest.raises(git.GitError) as caught:
        git.worktree_add(repo, tmp_path / "wt", "0" * 40)
    assert caught.value.stderr and not (tmp_path / "wt").exists()


def test_init_and_commit_signs_only_without_an_identity(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no global identity
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    project = tmp_path / "project"
    project.mkdir()
    (project / "f.txt").write_text("f\n")
    assert git.has_config(project, "user.email") is False
    assert git.init_and_commit(project, "first", name="Demo", email="demo@x.invalid")
    assert _git(project, "log", "--format=%an <%ae> %s").strip() == "Demo <demo@x.invalid> first"
    assert git.ls_files(project) == ["f.txt"]
    assert git.is_inside_work_tree(project) is True


def test_without_git_queries_say_no_and_commands_say_install_it(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert git.available() is False
    assert git.status(repo) is None and git_info(repo) is None
    assert git.ls_files(repo) is None
    # Callers with another way walk the tree instead.
    assert find_datasets(repo) == {}
    assert sorted(_listed_files(repo)) == [".gitignore", "a.txt"]
    assert git.is_ignored(repo / "ignored") is False
    assert git.is_inside_work_tree(repo) is False
    assert git.init_and_commit(tmp_path, "m", name="n", email="e") is False
    assert git.worktree_remove(repo, tmp_path / "wt") is False
    with pytest.raises(git.GitNotInstalledError, match="git is not installed") as caught:
        git.worktree_add(repo, tmp_path / "wt", "0" * 40)
    assert caught.value.hint and "install git" in caught.value.hint


def test_a_git_that_hangs_is_stopped(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "slow-bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text("#!/bin/sh\nexec sleep 30\n")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(git, "QUERY_TIMEOUT", 0.3)
    with pytest.raises(git.GitError, match="did not finish within"):
        git.ls_files(repo)
    assert git_info(repo) is None  # a record without git facts, as before
