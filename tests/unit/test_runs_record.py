"""The typed run record, the run store and the one resolver of RUN references."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gha_mlops.errors import UsageError
from gha_mlops.runs.record import RECORD_SCHEMA, ModelRef, RecordError, RunRecord
from gha_mlops.runs.refs import resolve
from gha_mlops.runs.store import RunStore, runs_dir

from ..conftest import Workspace

DIGEST = "ab" * 32


def _record(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": RECORD_SCHEMA, "id": "20261205-120000-abcdef", "kind": "run",
        "status": "succeeded", "started_at": "2026-12-05T12:00:00.000Z", "seed": 3,
        "deps": {"data/a.txt": DIGEST}, "stages": [{"name": "train", "status": "ran"}],
        "outputs": {"models": {"sha256": "cd" * 32 + ".dir", "kind": "out",
                               "files": {"model.bin": "ef" * 32}}},
        "metrics": {"metrics.json": {"acc": 0.9}},
        "model": {"path": "models/model.bin", "sha256": "ef" * 32},
        "git": {"commit": "1" * 40, "dirty": False, "changed": []},
    }
    doc.update(fields)
    return doc


def test_a_record_reads_into_typed_fields_and_round_trips() -> None:
    doc = _record()
    rec = RunRecord.from_json(doc)
    assert rec.id == doc["id"] and rec.seed == 3 and rec.stages[0].name == "train"
    assert rec.outputs["models"].is_tree and rec.outputs["models"].files == {"model.bin": "ef" * 32}
    assert rec.model is not None and rec.model.sha256 == "ef" * 32
    assert rec.git is not None and rec.git.commit == "1" * 40
    assert rec.flat_metrics() == {"acc": 0.9}
    assert sorted(rec.object_digests()) == sorted([DIGEST, "cd" * 32 + ".dir"])
    assert rec.to_json() == doc


def test_a_record_written_before_the_schema_field_still_loads() -> None:
    doc = _record()
    del doc["schema"]
    assert RunRecord.from_json(doc).id == doc["id"]


@pytest.mark.parametrize(("change", "named"), [
    ({"schema": "gha-mlops/run-record@9"}, "schema"),
    ({"deps": {"x": "../../etc/passwd"}}, "deps"),
    ({"outputs": {"m": {"sha256": 7}}}, "outputs"),
    ({"stages": {"not": "a list"}}, "stages"),
    ({"model": {"path": "m", "sha256": "x"}}, "model.sha256"),
    ({"seed": "3"}, "seed"),
    ({"metrics": {"m.json": [1]}}, "metrics"),
])
def test_a_malformed_record_names_the_field(change: dict[str, Any], named: str) -> None:
    with pytest.raises(RecordError, match=named.replace(".", r"\.")):
        RunRecord.from_json(_record(**change))


def test_the_store_resolves_latest_prefixes_and_files(tmp_path: Path) -> None:
    store = RunStore.of(tmp_path)
    first = _record(id="20261205-120000-aaaaaa", started_at="2026-12-05T12:00:00.000Z")
    second = _record(id="20261205-120100-bbbbbb", started_at="2026-12-05T12:01:00.000Z")
    for doc in (first, second):
        store.write(doc)
    assert store.resolve("latest") == second["id"] and store.resolve("latest~1") == first["id"]
    assert resolve("20261205-1200", tmp_path).record.id == first["id"]
    located = resolve(str(runs_dir(tmp_path) / f"{first['id']}.json"), tmp_path)
    assert located.record.id == first["id"] and located.files_root == tmp_path.absolute()
    with pytest.raises(UsageError, match="ambiguous"):
        store.resolve("20261205")
    (store.index_path).write_text("{damaged")
    assert [e["id"] for e in store.list()] == [first["id"], second["id"]]  # rebuilt


def test_a_url_is_downloaded_and_an_archive_that_escapes_is_refused(tmp_path: Path) -> None:
    doc = _record()
    located = resolve("https://example.invalid/r.json", tmp_path,
                      download=lambda url: json.dumps(doc).encode(), scratch=tmp_path / "s")
    assert located.record.id == doc["id"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.json", json.dumps(doc))
    with pytest.raises(UsageError, match="unsafe path"):
        resolve("https://example.invalid/a.zip", tmp_path, download=lambda url: buf.getvalue(),
                scratch=tmp_path / "z")
    assert not (tmp_path / "evil.json").exists()
    with pytest.raises(UsageError, match="can download"):
        resolve("https://example.invalid/r.json", tmp_path)


def test_a_record_the_engine_wrote_reads_back_typed(workspace: Workspace) -> None:
    result = workspace.run()
    rec = RunStore.of(workspace.root).record("latest")
    assert rec.to_json() == json.loads(RunStore.of(workspace.root).path(rec.id).read_bytes())
    assert [s.name for s in rec.stages] == [s["name"] for s in result.record["stages"]]
    assert rec.summary()["stages_ran"] == 3


def test_a_lenient_reading_shows_what_fits_and_never_raises() -> None:
    # compare, the run summary and the CPU pre-check also take plain dicts, and show what they
    # hold: a wrong type reads as absent, an entry that is not an object is left out, a digest
    # keeps any string; the strict reading of the same document is refused.
    doc = _record(schema="gha-mlops/run-record@9", id=None, seed="3", git="main", datasets=[],
                  stages=["x", {"name": "s"}], metrics={"m.json": [1], "n.json": {"a": 1}},
                  outputs={"odd": 7, "plots": {"sha256": "tree", "kind": "plot",
                                               "files": {"a.csv": DIGEST}}},
                  model={"path": "m", "sha256": "not a digest"})
    rec = RunRecord.from_json(doc, lenient=True)
    assert (rec.id, rec.seed, rec.git, rec.datasets) == ("?", None, None, {})
    assert [(s.name, s.status) for s in rec.stages] == [("s", "?")]
    assert list(rec.outputs) == ["plots"] and rec.outputs["plots"].sha256 == "tree"
    assert rec.model == ModelRef("m", "not a digest") and rec.metrics == {"n.json": {"a": 1}}
    with pytest.raises(RecordError, match="schema"):
        RunRecord.from_json(doc)
    with pytest.raises(RecordError, match="model"):  # leniency ends with its reading
        RunRecord.from_json(_record(model={"path": "m", "sha256": "x"}))


def test_output_sizes_stage_runtime_and_coerce() -> None:
    doc = _record(
        outputs={"m.bin": {"sha256": DIGEST, "size": 5},
                 "models": {"sha256": "cd" * 32 + ".dir", "files": {"a": DIGEST},
                            "sizes": {"a": 3, "b": "x"}}},
        stages=[{"name": "t", "status": "ran", "runtime": {"cpu_dispatch": {"portable": True}}},
                {"name": "u", "status": "ran", "runtime": "odd"}])
    rec = RunRecord.coerce(doc)
    assert rec.outputs["m.bin"].size == 5 and rec.outputs["models"].sizes == {"a": 3}
    assert rec.outputs["models"].size is None
    assert [s.runtime for s in rec.stages] == [{"cpu_dispatch": {"portable": True}}, {}]
    assert RunRecord.coerce(rec) is rec


def test_the_python_example_of_run_records_md_runs(workspace: Workspace,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "run-records.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", doc, re.S)
    workspace.run()
    monkeypatch.chdir(workspace.root)
    exec(compile(snippet, "run-records.md", "exec"), {})
    out = capsys.readouterr().out
    assert "succeeded" in out and "train ran" in out
