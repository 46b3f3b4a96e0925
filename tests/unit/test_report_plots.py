"""The report's charts: PNG bytes, the same bytes for the same data, no pyplot, and the
missing-extra error without matplotlib."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

from gha_mlops.errors import MissingExtraError
from gha_mlops.reporting import plots
from gha_mlops.reporting.compare import RunFiles, compare

PNG = b"\x89PNG\r\n\x1a\n"
CSV = "epoch,loss,accuracy,note\n1,0.9,0.5,a\n2,0.5,0.7,b\n3,0.3,nan,c\n"


def test_metric_bars_are_deterministic_pngs() -> None:
    data = [("m.json:acc", 0.9, 0.95), ("latency_ms $x$ <b>", 10.0, math.nan),
            ("gone", 1.0, None), ("new 日本", None, math.inf)]
    first = plots.metric_bars(data)
    assert first[:8] == PNG
    assert plots.metric_bars(data) == first
    assert plots.metric_bars(data[:1]) != first
    with pytest.raises(ValueError):
        plots.metric_bars([])


def test_curves() -> None:
    table = plots.parse_curves(CSV)
    assert table is not None
    assert table.x_name == "epoch" and table.x == (1.0, 2.0, 3.0)
    assert list(table.series) == ["loss", "accuracy"]  # `note` is not numeric
    assert math.isnan(table.series["accuracy"][2])
    assert plots.parse_curves("") is None
    assert plots.parse_curves("only\n1\n2\n") is None
    headless = plots.parse_curves("1\t2\n2\t3\n")
    assert headless is not None and headless.x_name == "column 1"
    png = plots.training_curves("plots/history.csv", table, None)
    assert png[:8] == PNG
    other = plots.parse_curves("epoch,loss\n1,0.8\n2,0.4\n")
    assert plots.training_curves("h", table, other) == plots.training_curves("h", table, other)


def test_confusion_matrices() -> None:
    png = plots.confusion_matrices("cm", [[9, 1], [2, 8]], None)
    assert png[:8] == PNG
    assert plots.confusion_matrices("cm", [[9, 1], [2, 8]], [[math.nan, 0], [1, 9]])[:8] == PNG
    with pytest.raises(ValueError):
        plots.confusion_matrices("cm", None, None)


def test_report_plots_of_a_comparison() -> None:
    record = {"id": "r", "stages": [], "metrics": {}}
    base = RunFiles(documents={"m.json": {"acc": 0.9, "cm": [[1, 2], [3, 4]]}},
                    curves={"plots/h.csv": CSV})
    head = RunFiles(documents={"m.json": {"acc": 0.8, "cm": [[2, 1], [3, 4]]}},
                    curves={"plots/h.csv": CSV})
    charts = plots.report_plots(compare(record, record, base_files=base, head_files=head))
    assert list(charts) == ["metrics.png", "curve-plots-h-csv.png", "matrix-m-json-cm.png"]
    assert all(png[:8] == PNG for _, png in charts.values())


def test_label_escapes_mathtext() -> None:
    assert plots.label("cost $5 and $6") == r"cost \$5 and \$6"
    assert plots.label("a\nb") == "a b"
    assert len(plots.label("x" * 100, 20)) == 20


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, check=False)


def test_rendering_never_imports_pyplot_and_is_the_same_across_processes() -> None:
    code = """
        import hashlib, sys
        from gha_mlops.reporting import plots
        png = plots.metric_bars([("acc", 0.9, 0.95)])
        png += plots.confusion_matrices("cm", [[1, 2], [3, 4]], [[2, 1], [3, 4]])
        assert "matplotlib.pyplot" not in sys.modules
        print(hashlib.sha256(png).hexdigest())
    """
    first, second = _python(code), _python(code)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout


def test_without_matplotlib_the_error_names_the_extra() -> None:
    proc = _python("""
        import sys
        sys.modules["matplotlib"] = None  # as if not installed
        from gha_mlops.errors import MissingExtraError
        from gha_mlops.reporting import plots
        try:
            plots.metric_bars([("acc", 0.9, 0.95)])
        except MissingExtraError as err:
            print(err.hint, err.exit_code)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "pip install 'gha-mlops[report]' 3"
    assert MissingExtraError.exit_code == 3
