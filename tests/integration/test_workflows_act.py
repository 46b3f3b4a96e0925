"""The real workflow files run end to end by act on this host: the self-test workflow (the
actions and every reusable workflow on examples/tiny) and a consumer repository calling
pipeline.yml the way the docs show. Third-party actions are the stand-ins of tests/standins;
gha-mlops is installed by its own setup action, from a snapshot of this checkout."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import git
from tests.integration._act import (
    SELF_REF,
    SELF_REPOSITORY,
    Act,
    ActResult,
    commit_snapshot,
    self_snapshot,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SELF = SELF_REPOSITORY
REF = SELF_REF


_commit = commit_snapshot


@pytest.fixture(scope="module")
def gha_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as a repository of its own, `$/` resolved as the runner resolves it."""
    return self_snapshot(REPO, tmp_path_factory.mktemp("gha"))


@pytest.fixture(scope="module")
def self_test(gha_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> ActResult:
    act = Act(tmp_path_factory.mktemp("act"), gha_repo, repository=SELF)
    result = act.run(gha_repo / ".github/workflows/self-test.yml", "workflow_dispatch",
                     payload={"inputs": {}}, timeout=840)
    if not result.ok:
        print(result.log[-20000:])
    return result


def test_every_self_test_job_succeeds(self_test: ActResult) -> None:
    jobs = self_test.job_results()
    assert self_test.ok, jobs
    for name in ("actions", "pipeline-outputs", "sweep-outputs"):
        assert any(name in job and state == "success" for job, state in jobs.items()), jobs


def test_the_run_action_uploads_record_and_outputs(self_test: ActResult) -> None:
    art = self_test.artifact("self-test-run")
    records = [p for p in art.rglob("*.json") if p.parent.name == "runs"]
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["status"] == "succeeded"
    assert record["datasets"]["points"]["remote"]["name"] == "local"
    names = {p.name for p in art.rglob("*") if p.is_file()}
    assert {"line.json", "eval.json", "train.json", "loss.csv", "features.json"} <= names


def test_the_sweep_runs_one_leg_per_grid_point_and_records_overrides(
        self_test: ActResult) -> None:
    legs = [n for n in self_test.artifact_names() if n.startswith("run-")]
    assert len(legs) == 4
    overrides = []
    for leg in legs:
        [record] = [p for p in self_test.artifact(leg).rglob("*.json")
                    if p.parent.name == "runs"]
        overrides.append(json.loads(record.read_text())["params"]["overrides"])
    assert sorted((o["train.lr"], o["train.epochs"]) for o in overrides) == [
        (0.01, 10), (0.01, 40), (0.05, 10), (0.05, 40)]


def test_the_retrain_run_records_its_reason(self_test: ActResult) -> None:
    art = self_test.artifact("gha-mlops-retrain")
    [record] = [p for p in art.rglob("*.json") if p.parent.name == "runs"]
    doc = json.loads(record.read_text())
    assert doc["env"]["variables"]["GHA_MLOPS_REASON"] == "self-test of the retrain workflow"
    assert {s["status"] for s in doc["stages"]} == {"ran"}  # a retrain is forced


def test_the_retrain_outputs_are_checked_through_its_record(self_test: ActResult) -> None:
    """retrain.yml's outputs, checked without a job that reads them.

    act (0.2.89) silently skips a job that ``needs:`` a job whose reusable workflow itself
    calls a reusable workflow (retrain.yml -> pipeline.yml): its outputs never reach a
    ``retrain-outputs`` job, and act still exits 0. So the chain is checked link by link:
    the nested pipeline job ran and succeeded here; the values ``gha-mlops run`` turns into
    the outputs ``run-id``, ``metrics`` and ``model-sha256`` are the record's ``id``,
    ``metrics`` and ``model.sha256``, and the record uploaded as ``gha-mlops-retrain`` holds
    them, consistent with the files uploaded beside it (the upload-artifact stand-in copies
    them to ``STANDIN_ARTIFACT_DIR/files/<name>/``, read by ``self_test.artifact``);
    pipeline.yml hands its job's outputs on (``pipeline-outputs`` reads them live); and
    retrain.yml hands on pipeline.yml's outputs by the same names
    (:func:`test_every_reusable_workflow_output_comes_from_a_declared_job_output`).
    """
    jobs = self_test.job_results()
    nested = {job: state for job, state in jobs.items() if job.startswith("retrain/")}
    assert nested and set(nested.values()) == {"success"}, jobs
    art = self_test.artifact("gha-mlops-retrain")
    [record] = [p for p in art.rglob("*.json") if p.parent.name == "runs"]
    doc = json.loads(record.read_text())
    assert record.stem == doc["id"]
    workspace = record.parents[2]  # <workspace>/.gha-mlops/runs/<id>.json
    assert doc["metrics"]["metrics/eval.json"]["r2"] > 0.9
    for name, values in doc["metrics"].items():
        assert json.loads((workspace / name).read_text()) == values
    model = workspace / doc["model"]["path"]
    assert hashlib.sha256(model.read_bytes()).hexdigest() == doc["model"]["sha256"]


def _output_sources(workflow: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """A reusable workflow's outputs: name -> (job id, job output) its value reads."""
    found = {}
    for name, spec in workflow[True]["workflow_call"].get("outputs", {}).items():
        m = re.fullmatch(r"\$\{\{\s*jobs\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}", spec["value"])
        assert m, f"output {name}: {spec['value']!r} is not one job output"
        found[name] = (m[1], m[2])
    return found


def test_every_reusable_workflow_output_comes_from_a_declared_job_output() -> None:
    """What act cannot observe (the outputs of retrain.yml, see above) and actionlint does not
    check (it types neither a workflow_call output's value nor a `$/` reference): each output
    reads an output its job declares, and a job that calls one of our reusable workflows reads
    an output that workflow declares."""
    checked = 0
    for path in sorted(REPO.glob(".github/workflows/*.yml")):
        doc = yaml.safe_load(path.read_text())
        if "workflow_call" not in (doc.get(True) or {}):
            continue
        for name, (job_id, output) in _output_sources(doc).items():
            job = doc["jobs"].get(job_id)
            assert job is not None, f"{path.name}: output {name} reads unknown job {job_id}"
            called = re.fullmatch(r"\$/(\.github/workflows/[\w.-]+\.yml)", job.get("uses", ""))
            declared = (_output_sources(yaml.safe_load((REPO / called[1]).read_text()))
                        if called else job.get("outputs", {}))
            assert output in declared, (
                f"{path.name}: output {name} reads {job_id}.outputs.{output}, which "
                f"{called[1] if called else 'the job'} does not declare")
            checked += 1
    assert checked >= 10


CALLER = """\
name: train
on:
  pull_request:
permissions: {}
jobs:
  train:
    permissions:
      contents: read
    uses: gha-mlops/gha-mlops/.github/workflows/pipeline.yml@%s
    with:
      set: train.epochs=%s
  check:
    needs: train
    runs-on: ubuntu-latest
    permissions: {}
    steps:
      - env:
          METRICS: ${{ needs.train.outputs.metrics }}
          RUN_ID: ${{ needs.train.outputs.run-id }}
        run: |
          echo "$METRICS" > "$ACT_HARNESS_OUT/metrics.json"
          echo "$RUN_ID" > "$ACT_HARNESS_OUT/run-id"
"""


def _consumer(tmp: Path, epochs: str) -> Path:
    repo = tmp / "consumer"
    shutil.copytree(REPO / "examples/tiny", repo, ignore=shutil.ignore_patterns(".gha-mlops"))
    (repo / ".github/workflows").mkdir(parents=True)
    (repo / ".github/workflows/train.yml").write_text(CALLER % (REF, epochs))
    _commit(repo)
    return repo


def test_a_consumer_repository_calls_the_pipeline(gha_repo: Path, tmp_path: Path) -> None:
    consumer = _consumer(tmp_path, "30")
    act = Act(tmp_path / "act", consumer, repository="octo-org/model",
              repos={SELF: gha_repo})
    result = act.run(consumer / ".github/workflows/train.yml", "pull_request",
                     payload={"pull_request": {"number": 7, "head": {"ref": "feature"},
                                               "base": {"ref": "main"}}}, timeout=600)
    assert result.ok, result.log[-8000:]
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert 0.5 < metrics["metrics/eval.json"]["r2"] <= 1
    assert (result.out_dir / "run-id").read_text().strip()
    assert "gha-mlops-run" in result.artifact_names()


def test_a_bad_mlops_yaml_fails_with_an_annotation_on_the_file(gha_repo: Path,
                                                             tmp_path: Path) -> None:
    consumer = _consumer(tmp_path, "30")
    config = consumer / "mlops.yaml"
    config.write_text(config.read_text().replace("    cmd: python src/train.py\n",
                                                 "    cmd: python src/train.py\n    outz: [x]\n"))
    git(consumer, "commit", "-qam", "typo")
    act = Act(tmp_path / "act", consumer, repository="octo-org/model", repos={SELF: gha_repo})
    result = act.run(consumer / ".github/workflows/train.yml", "pull_request",
                     payload={"pull_request": {"number": 8}}, timeout=600)
    assert not result.ok
    log = result.log
    assert "::error file=mlops.yaml,line=" in log or "error file=mlops.yaml" in log, log[-6000:]
    assert "outz" in log
    assert "Traceback" not in log


def test_act_runs_our_files_with_only_self_references_resolved(gha_repo: Path) -> None:
    for rel in (".github/workflows/pipeline.yml", ".github/workflows/sweep.yml",
                "action.yml", "actions/run/action.yml"):
        ours = (REPO / rel).read_text().splitlines()
        theirs = (gha_repo / rel).read_text().splitlines()
        assert len(ours) == len(theirs)
        for mine, run in zip(ours, theirs, strict=True):
            if mine != run:
                head, _, path = mine.partition("uses: $/")
                assert path and run == f"{head}uses: {SELF}/{path}@{REF}", (mine, run)


DEMO_CALLER = """\
name: train
on:
  push:
  workflow_dispatch:
permissions: {}
jobs:
  train:
    permissions:
      contents: read
    uses: gha-mlops/gha-mlops/.github/workflows/pipeline.yml@%(ref)s
    with:
      requirements: requirements.lock   # torch==2.13.0 and friends, pinned by the demo
  sweep:
    permissions:
      contents: read
    uses: gha-mlops/gha-mlops/.github/workflows/sweep.yml@%(ref)s
    with:
      grid: '{"train.epochs": [2, 4]}'
      metric: test_accuracy
      direction: max
      requirements: requirements.lock
  check:
    needs: [train, sweep]
    runs-on: ubuntu-latest
    permissions: {}
    steps:
      - env:
          RUN_ID: ${{ needs.train.outputs.run-id }}
          METRICS: ${{ needs.train.outputs.metrics }}
          MODEL: ${{ needs.train.outputs.model-sha256 }}
          BEST_LEG: ${{ needs.sweep.outputs.best-leg }}
          BEST_VALUE: ${{ needs.sweep.outputs.best-value }}
          RANKING: ${{ needs.sweep.outputs.ranking }}
        run: |
          printf '%%s' "$RUN_ID" > "$ACT_HARNESS_OUT/run-id"
          printf '%%s' "$METRICS" > "$ACT_HARNESS_OUT/metrics.json"
          printf '%%s' "$MODEL" > "$ACT_HARNESS_OUT/model"
          printf '%%s' "$BEST_LEG" > "$ACT_HARNESS_OUT/best-leg"
          printf '%%s' "$BEST_VALUE" > "$ACT_HARNESS_OUT/best-value"
          printf '%%s' "$RANKING" > "$ACT_HARNESS_OUT/ranking.json"
"""


def _demo_consumer(tmp: Path) -> Path:
    """The embedded demo as a consumer repository, its dataset remote committed with it."""
    import subprocess
    import sys

    repo = tmp / "demo"
    subprocess.run([sys.executable, "-m", "gha_mlops", "demo", "--no-run", str(repo)],
                   check=True, capture_output=True)
    shutil.rmtree(repo / ".git")
    ignore = repo / ".gitignore"
    ignore.write_text(ignore.read_text().replace("/demo-remote/\n", ""))
    (repo / ".github/workflows").mkdir(parents=True)
    (repo / ".github/workflows/train.yml").write_text(DEMO_CALLER % {"ref": REF})
    _commit(repo)
    return repo


@pytest.fixture(scope="module")
def demo_runs(gha_repo: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[ActResult, ActResult]:
    tmp = tmp_path_factory.mktemp("demo-consumer")
    consumer = _demo_consumer(tmp)
    act = Act(tmp / "act", consumer, repository="octo-org/digits", repos={SELF: gha_repo})
    workflow = consumer / ".github/workflows/train.yml"
    first = act.run(workflow, "push", payload={"ref": "refs/heads/main"}, timeout=840)
    second = act.run(workflow, "workflow_dispatch", payload={"inputs": {}}, timeout=840)
    return first, second


def test_the_demo_trains_through_pipeline_yml_for_push_and_dispatch(
        demo_runs: tuple[ActResult, ActResult]) -> None:
    for result in demo_runs:
        assert result.ok, result.log[-8000:]
        metrics = json.loads((result.out_dir / "metrics.json").read_text())
        assert metrics["metrics/eval.json"]["test_accuracy"] >= 0.97
        model = (result.out_dir / "model").read_text()
        [record] = [p for p in result.artifact("gha-mlops-run").rglob("*.json")
                    if p.parent.name == "runs"]
        doc = json.loads(record.read_text())
        assert doc["id"] == (result.out_dir / "run-id").read_text()
        assert doc["model"]["sha256"] == model and len(model) == 64
        assert doc["datasets"]["digits"]["version"].startswith("09f66e6d")
    # The same commit, the same data, the same pinned environment: the same model bytes.
    assert (demo_runs[0].out_dir / "model").read_text() == (
        demo_runs[1].out_dir / "model").read_text()


def test_the_sweep_picks_the_leg_with_the_best_metric(
        demo_runs: tuple[ActResult, ActResult]) -> None:
    result = demo_runs[0]
    values = {}
    for name in result.artifact_names():
        if name.startswith("run-"):
            [record] = [p for p in result.artifact(name).rglob("*.json")
                        if p.parent.name == "runs"]
            doc = json.loads(record.read_text())
            values[name[4:]] = doc["metrics"]["metrics/eval.json"]["test_accuracy"]
    assert len(values) == 2
    best = max(values, key=lambda leg: values[leg])
    assert (result.out_dir / "best-leg").read_text() == best
    assert float((result.out_dir / "best-value").read_text()) == values[best]


def test_a_second_run_restores_the_data_from_the_cache(
        demo_runs: tuple[ActResult, ActResult]) -> None:
    first, second = demo_runs
    assert "fetched dataset digits" in first.log or "digits: fetched 1 object" in first.log
    # data-fetch's cache step hits on the second run: nothing comes from the remote.
    assert "digits: already in the cache" in second.log
    assert "digits: fetched 1 object" not in second.log


REVIEW_CALLER = """\
name: review
on: pull_request
permissions: {}
jobs:
  review:
    uses: gha-mlops/gha-mlops/.github/workflows/pr-review.yml@%s
    permissions:
      contents: write
      pull-requests: write
      checks: write
      actions: read
"""


def _champion_zip(consumer: Path, tmp: Path) -> bytes:
    """What actions/run uploads from a successful run of the base branch: the record with
    the outputs, rooted at the workspace."""
    import io
    import subprocess
    import sys
    import zipfile

    work = tmp / "champion"
    shutil.copytree(consumer, work, ignore=shutil.ignore_patterns(".git"))
    subprocess.run([sys.executable, "-m", "gha_mlops", "run", "-q", "--set", "train.epochs=60"],
                   cwd=work, check=True, capture_output=True)
    files = subprocess.run([sys.executable, "-m", "gha_mlops", "runs", "files"], cwd=work,
                           check=True, capture_output=True, text=True).stdout.split()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in files:
            path = Path(name)
            if path.is_dir():
                for sub in sorted(p for p in path.rglob("*") if p.is_file()):
                    zf.write(sub, sub.relative_to(work).as_posix())
            else:
                zf.write(path, path.relative_to(work).as_posix())
    return buf.getvalue()


def test_pr_review_posts_one_sticky_comment_and_a_check(gha_repo: Path,
                                                       tmp_path: Path) -> None:
    from gha_mlops.testing.github_emulator import GitHubEmulator

    consumer = tmp_path / "consumer"
    shutil.copytree(REPO / "examples/tiny", consumer, ignore=shutil.ignore_patterns(".gha-mlops"))
    (consumer / ".github/workflows").mkdir(parents=True)
    (consumer / ".github/workflows/review.yml").write_text(REVIEW_CALLER % REF)
    _commit(consumer)
    champion = _champion_zip(consumer, tmp_path)
    examples = json.loads((REPO / ".ci/npm/node_modules/@octokit/webhooks-examples/"
                           "api.github.com/index.json").read_text())
    payload = next(e for h in examples if h["name"] == "pull_request"
                   for e in h["examples"] if e["action"] == "opened")
    with GitHubEmulator() as gh:
        repo = gh.create_repo("octo/model")
        repo.commit({"README.md": "x"})
        run_id = repo.add_workflow_run(head_branch="main", event="push", status="completed",
                                       conclusion="success")
        repo.add_artifact(run_id, "gha-mlops-run", champion)
        sha = repo.commit({"src/train.py": "changed"}, branch="feature")
        number = repo.create_pull(head="feature")
        payload["number"] = number
        payload["pull_request"]["number"] = number
        payload["pull_request"]["head"]["sha"] = sha
        payload["pull_request"]["base"]["ref"] = "main"
        payload["repository"]["full_name"] = "octo/model"
        act = Act(tmp_path / "act", consumer, repository="octo/model", repos={SELF: gha_repo})
        result = act.run(consumer / ".github/workflows/review.yml", "pull_request",
                         payload=payload, secrets={"GITHUB_TOKEN": gh.token},
                         env={"GITHUB_API_URL": gh.url, "GITHUB_SERVER_URL": gh.root_url},
                         timeout=600)
        comments = gh.issue_comments("octo/model", number)
        checks = gh.check_runs("octo/model")
        violations = gh.take_violations()
    assert result.ok, result.log[-8000:]
    assert violations == []
    [comment] = comments
    assert comment.body.startswith("<!-- gha-mlops-report:pr-review -->")
    assert "## ✅ Model comparison: the gate passes" in comment.body
    assert "r2" in comment.body and "/raw/" in comment.body  # the metric and the plots
    assert [(c.conclusion, c.head_sha) for c in checks] == [("success", sha)]
