"""The engine against real shell stages: what runs, what is cached, restored or rolled back."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gha_mlops.errors import StageFailedError, UsageError
from gha_mlops.store.hashing import sha256_file
from gha_mlops.store.objects import ContentCache
from tests.conftest import Workspace


def test_first_run_runs_every_stage_then_everything_is_cached(workspace: Workspace) -> None:
    first = workspace.run()
    assert workspace.statuses(first) == {"prepare": "ran", "train": "ran", "report": "ran"}
    assert first.record["status"] == "succeeded"
    second = workspace.run()
    assert workspace.statuses(second) == {"prepare": "cached", "train": "cached",
                                          "report": "cached"}
    assert [workspace.count(s) for s in ("prepare", "train", "report")] == [1, 1, 1]


def test_param_change_reruns_only_the_stages_that_read_it(workspace: Workspace) -> None:
    workspace.run()
    workspace.write("params.yaml", "prepare:\n  scale: 1\ntrain:\n  lr: 0.2\n  epochs: 3\n")
    result = workspace.run()
    # report depends on the model, whose bytes did not change: it stays cached.
    assert workspace.statuses(result) == {"prepare": "cached", "train": "ran",
                                          "report": "cached"}
    assert result.record["params"]["values"]["train.lr"] == 0.2


def test_param_the_stage_does_not_read_changes_nothing(workspace: Workspace) -> None:
    workspace.run()
    workspace.write("params.yaml", "prepare:\n  scale: 1\ntrain:\n  lr: 0.1\n  epochs: 99\n")
    assert set(workspace.statuses(workspace.run()).values()) == {"cached"}


def test_data_change_reruns_downstream(workspace: Workspace) -> None:
    workspace.run()
    workspace.write("data/c.txt", "gamma\n")
    result = workspace.run()
    assert workspace.statuses(result) == {"prepare": "ran", "train": "ran", "report": "ran"}


def test_deleted_output_is_restored_without_running(workspace: Workspace) -> None:
    workspace.run()
    model = workspace.root / "models/model.bin"
    before = sha256_file(model)
    model.unlink()
    (workspace.root / "prepared/all.txt").write_text("tampered\n")
    result = workspace.run()
    assert workspace.statuses(result) == {"prepare": "restored", "train": "restored",
                                          "report": "cached"}
    assert sha256_file(model) == before
    assert workspace.read("prepared/all.txt") == "alpha\nbeta\n"
    assert workspace.count("train") == 1


def test_returning_to_an_earlier_signature_restores_instead_of_running(
        workspace: Workspace) -> None:
    workspace.run()
    original = workspace.read("models/model.bin")
    workspace.write("data/a.txt", "ALPHA, longer\n")
    workspace.run()
    assert workspace.read("models/model.bin") != original
    workspace.write("data/a.txt", "alpha\n")
    result = workspace.run()
    assert workspace.statuses(result) == {"prepare": "restored", "train": "restored",
                                          "report": "restored"}
    assert workspace.read("models/model.bin") == original
    assert workspace.count("train") == 2


def test_force_runs_everything(workspace: Workspace) -> None:
    workspace.run()
    result = workspace.run(force=True)
    assert set(workspace.statuses(result).values()) == {"ran"}


def test_stage_target_runs_only_it_and_its_upstream(workspace: Workspace) -> None:
    result = workspace.run(targets=("train",))
    assert workspace.statuses(result) == {"prepare": "ran", "train": "ran"}
    assert not (workspace.root / "report.txt").exists()
    with pytest.raises(UsageError, match="no stage named 'trian'"):
        workspace.run(targets=("trian",))


def test_failing_stage_stops_dependants_and_rolls_back_its_outputs(
        workspace: Workspace) -> None:
    workspace.run()
    good_model = workspace.read("models/model.bin")
    # train now writes half a model, then fails.
    config = workspace.read("mlops.yaml").replace(
        "cat prepared/all.txt prepared/seed.txt > models/model.bin",
        "echo half > models/model.bin && exit 3")
    workspace.write("mlops.yaml", config)
    with pytest.raises(StageFailedError, match="stage 'train' failed") as info:
        workspace.run()
    record = info.value.result.record
    assert record["status"] == "failed"
    assert {s["name"]: s["status"] for s in record["stages"]} == {
        "prepare": "cached", "train": "failed", "report": "skipped"}
    assert "exit code 3" in record["stages"][1]["error"]
    # No half-written model: the previous one is back, byte for byte.
    assert workspace.read("models/model.bin") == good_model
    assert not list(workspace.root.glob("models/.*tmp"))
    # The cache still verifies: every object's name is the hash of its bytes.
    cache = ContentCache(workspace.root / ".gha-mlops/cache")
    objects = [p for p in cache.objects.rglob("*") if p.is_file()]
    assert objects
    for obj in objects:
        name = obj.parent.name + obj.name
        if not name.endswith(".dir"):
            assert sha256_file(obj) == name


def test_independent_stage_still_runs_when_another_fails(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", """\
        stages:
          broken:
            cmd: exit 1
            outs: [b.txt]
          fine:
            cmd: echo ok > f.txt
            outs: [f.txt]
          after:
            cmd: cat b.txt > c.txt
            deps: [b.txt]
            outs: [c.txt]
        """)
    with pytest.raises(StageFailedError) as info:
        workspace.run()
    statuses = {s["name"]: s["status"] for s in info.value.result.record["stages"]}
    assert statuses == {"broken": "failed", "fine": "ran", "after": "skipped"}


def test_missing_declared_output_fails_the_stage(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", "stages:\n  s:\n    cmd: 'true'\n    outs: [never.txt]\n")
    with pytest.raises(StageFailedError, match=r"did not write the declared out 'never\.txt'"):
        workspace.run()


def test_invalid_metrics_file_fails_the_stage(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", "stages:\n  s:\n    cmd: echo nope > m.json\n"
                    "    metrics: [m.json]\n")
    with pytest.raises(StageFailedError, match="not valid JSON"):
        workspace.run()
    assert not (workspace.root / "m.json").exists()


def test_parallel_jobs_run_independent_stages_at_the_same_time(workspace: Workspace) -> None:
    # Each stage waits (up to 20 s) for the other to have started: with one job at a time
    # this cannot finish, with two it finishes at once.
    wait_for = ("touch {me}.started; i=0; while [ ! -e {other}.started ]; do "
                "i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.1; done; echo done > {me}.txt")
    workspace.write("mlops.yaml", f"""\
        stages:
          left:
            cmd: "{wait_for.format(me='left', other='right')}"
            outs: [left.txt]
          right:
            cmd: "{wait_for.format(me='right', other='left')}"
            outs: [right.txt]
        """)
    result = workspace.run(jobs=2)
    assert workspace.statuses(result) == {"left": "ran", "right": "ran"}


def test_stage_environment_carries_seed_params_and_run_id(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", """\
        seed: 1234
        stages:
          env:
            cmd: env | grep -E '^(GHA_MLOPS_|PYTHONHASHSEED)' | sort > env.txt
            outs: [env.txt]
        """)
    result = workspace.run()
    lines = dict(line.split("=", 1) for line in workspace.read("env.txt").splitlines())
    assert lines["GHA_MLOPS_SEED"] == "1234"
    assert lines["PYTHONHASHSEED"] == "1234"
    assert lines["GHA_MLOPS_RUN_ID"] == result.run_id
    assert lines["GHA_MLOPS_PARAMS"] == str(workspace.root / "params.yaml")
    assert lines["GHA_MLOPS_STAGE"] == "env"


def test_runtime_report_written_by_a_stage_reaches_the_record(workspace: Workspace) -> None:
    workspace.write("mlops.yaml", """\
        stages:
          s:
            cmd: >-
              echo '{"torch": "9.9", "determinism": {"use_deterministic_algorithms": true}}'
              > "$GHA_MLOPS_STAGE_REPORT" && echo 1 > o.txt
            outs: [o.txt]
        """)
    record = workspace.run().record
    assert record["stages"][0]["runtime"]["torch"] == "9.9"
    assert record["runtime"]["determinism"] == {"use_deterministic_algorithms": True}
    # A cached stage keeps the runtime facts of the run that produced its outputs.
    again = workspace.run().record
    assert again["stages"][0]["status"] == "cached"
    assert again["runtime"]["torch"] == "9.9"
    assert again["stages"][0]["produced_by_run"] == record["id"]


def test_run_record_contents(git_workspace: Workspace) -> None:
    ws = git_workspace
    record = ws.run().record
    assert record["schema"] == "gha-mlops/run-record@1"
    assert record["status"] == "succeeded"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws.root, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert record["git"]["commit"] == head and record["git"]["dirty"] is False
    assert record["seed"] == 7
    assert record["params"]["values"] == {"prepare.scale": 1, "train.lr": 0.1}
    assert record["params"]["sha256"] == sha256_file(ws.root / "params.yaml")
    assert record["env"]["lock"] == {"path": "requirements.lock",
                                     "sha256": sha256_file(ws.root / "requirements.lock")}
    assert record["env"]["python"]["version"]
    assert record["env"]["os"]["system"] == "Linux"
    assert record["env"]["cpu"]["count"] >= 1
    assert "pydantic" in record["env"]["packages"]
    assert set(record["data"]) == {"data"} and record["data"]["data"].endswith(".dir")
    assert record["deps"]["prepared"].endswith(".dir")
    assert record["model"] == {"path": "models/model.bin",
                               "sha256": sha256_file(ws.root / "models/model.bin")}
    assert record["outputs"]["prepared"]["files"]["all.txt"] == sha256_file(
        ws.root / "prepared/all.txt")
    assert record["metrics"] == {"metrics/train.json": {"accuracy": 0.9, "loss.final": 0.25}}
    assert all(len(s["signature"]) == 64 for s in record["stages"])
    on_disk = json.loads((ws.root / ".gha-mlops/runs" / f"{record['id']}.json").read_text())
    assert on_disk == record
    # A change to a tracked file makes the next run's tree dirty.
    ws.write("data/a.txt", "changed\n")
    assert ws.run().record["git"]["dirty"] is True


def test_secrets_from_the_environment_never_enter_a_record(workspace: Workspace) -> None:
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    password = "correct-horse-battery-staple"
    workspace.write("mlops.yaml", f"""\
        stages:
          s:
            cmd: >-
              echo 'Authorization: token {token}' > /dev/null &&
              echo "$DB_PASSWORD" | wc -c > o.txt
            outs: [o.txt]
        """)
    environ = {"PATH": os.environ["PATH"], "GITHUB_TOKEN": token, "DB_PASSWORD": password,
               "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
               "CI": "true", "GITHUB_RUN_ID": "42"}
    result = workspace.run(environ=environ)
    text = (workspace.root / ".gha-mlops/runs" / f"{result.run_id}.json").read_text()
    for secret in (token, password, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"):
        assert secret not in text
    assert result.record["env"]["variables"] == {"CI": "true", "GITHUB_RUN_ID": "42"}
    assert "***" in text  # the literal token in the command was masked, not dropped


def test_stat_cache_avoids_rereading_unchanged_files(workspace: Workspace) -> None:
    from gha_mlops.store.hashing import Hasher, StatCache

    path = workspace.root / "data/a.txt"
    old = 1_600_000_000
    os.utime(path, (old, old))  # outside the racy window
    db = workspace.root / "stat.db"
    first = Hasher(workspace.root, StatCache(db))
    digest = first.hash_path("data/a.txt")
    first.stat_cache.flush()
    # Same size, same mtime, same inode: a hasher trusting its stat cache does not re-read.
    with open(path, "r+") as fh:
        fh.write("ALPHA")
    os.utime(path, (old, old))
    assert Hasher(workspace.root, StatCache(db)).hash_path("data/a.txt") == digest
    # Any stat change (here the mtime) makes it read the file again.
    os.utime(path, (old + 1, old + 1))
    assert Hasher(workspace.root, StatCache(db)).hash_path("data/a.txt") == sha256_file(path)
    assert sha256_file(path) != digest


def test_recently_modified_files_are_not_trusted_to_the_stat_cache(
        workspace: Workspace) -> None:
    from gha_mlops.store.hashing import Hasher, StatCache

    db = workspace.root / "stat.db"
    hasher = Hasher(workspace.root, StatCache(db))
    hasher.hash_path("data/a.txt")  # mtime is "now": racy, not kept
    hasher.stat_cache.flush()
    assert not db.exists() or StatCache(db).get(
        "data/a.txt", (workspace.root / "data/a.txt").stat()) is None


def test_damaged_index_is_rebuilt_from_the_records(workspace: Workspace) -> None:
    first = workspace.run()
    (workspace.root / ".gha-mlops/runs/index.json").write_text("{not json")
    second = workspace.run()
    from gha_mlops.pipeline.records import RunStore

    ids = [e["id"] for e in RunStore(workspace.root / ".gha-mlops/runs").list()]
    assert ids == [first.run_id, second.run_id]


def test_damaged_stat_cache_only_costs_a_rehash(workspace: Workspace) -> None:
    workspace.run()
    (workspace.root / ".gha-mlops/tmp/stat.db").write_bytes(b"garbage" * 100)
    assert set(workspace.statuses(workspace.run()).values()) == {"cached"}


def test_state_dir_is_git_ignored(workspace: Workspace) -> None:
    workspace.run()
    assert (workspace.root / ".gha-mlops/.gitignore").read_text().strip().endswith("*")


def test_record_file_is_never_half_written(workspace: Workspace, tmp_path: Path) -> None:
    result = workspace.run()
    runs = workspace.root / ".gha-mlops/runs"
    assert not [p for p in runs.iterdir() if p.name.endswith(".tmp")]
    assert json.loads(result.record_path.read_text())["id"] == result.run_id
