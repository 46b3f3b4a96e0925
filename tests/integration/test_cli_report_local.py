"""`gha-mlops report` as docs/report.md shows it locally: the baseline and the head run in one
workspace, the head writing its files over the baseline's. The baseline's metrics, curves
and images come from the content cache; report.json and report.md state one verdict."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_cli_report import _cli, _ok, image_plot_workspace


def _workspace(tmp_path: Path) -> Path:
    root = image_plot_workspace(tmp_path / "local")
    _ok(_cli(root, "run"))  # the baseline
    _ok(_cli(root, "run", "--set", "train.acc=0.96"))  # the head, over the same files
    return root


def test_the_local_example_shows_the_baselines_own_files(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    out = tmp_path / "report"
    _ok(_cli(root, "report", "--baseline", "latest~1", "--output", str(out)))
    markdown = (out / "report.md").read_text()
    assert "Files not used" not in markdown
    assert (out / "declared-plots-fig-baseline.png").read_bytes().endswith(b"0.95")
    assert (out / "declared-plots-fig-head.png").read_bytes().endswith(b"0.96")
    stored = json.loads((out / "report.json").read_text())
    assert stored["headline"] == "no gates declared"
    assert "## 📊 Model comparison: no gates declared" in markdown

    # Without the baseline's cached copies, the report says which files it could not use.
    record = json.loads(_ok(_cli(root, "runs", "show", "latest~1", "--json")).stdout)
    digest = record["outputs"]["metrics/eval.json"]["sha256"]
    (root / ".gha-mlops/cache/objects" / digest[:2] / digest[2:]).unlink()
    _ok(_cli(root, "report", "--baseline", "latest~1", "--output", str(out)))
    markdown = (out / "report.md").read_text()
    assert "Files not used" in markdown
    assert "baseline: metrics/eval.json here is not the run" in markdown
    assert "the cache does not hold the run" in markdown
