"""Transfer progress in the CLI: bars on a terminal, plain lines in logs."""

from __future__ import annotations

import pytest

from gha_mlops.cli._progress import TransferLines, dataset_line, human, interactive
from gha_mlops.data.pointer import Dataset
from gha_mlops.data.transfer import TransferStats

DS = Dataset(name="images", path="data/images", pointer="data/images.lock.yaml",
             version="a" * 64 + ".dir", files=3, size=3000)


class _Tty:
    def isatty(self) -> bool:
        return True


def test_ci_and_pipes_are_not_interactive() -> None:
    assert interactive({}, _Tty())
    assert not interactive({"CI": "true"}, _Tty())
    assert not interactive({"GITHUB_ACTIONS": "true"}, _Tty())


def test_lines_in_a_log() -> None:
    seen: list[str] = []
    with TransferLines("fetched", bars=False, echo=seen.append) as lines:
        assert lines.started(DS, 3, 3000) is None  # no callback: nothing to redraw
        lines.finished(DS, TransferStats(3, 3000, 2, 0.5, 0), "from nas")
        lines.finished(DS, TransferStats(), "cache")
    assert seen == ["images: fetched 3 objects (3.0 KB) from nas in 0.50 s (6.0 KB/s), "
                    "2 requests", "images: already in the cache"]


def test_bars_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with TransferLines("pushed", bars=True) as lines:
        progress = lines.started(DS, None, None)
        assert progress is not None
        progress(1, 1000)
        progress(3, 3000)
        lines.finished(DS, TransferStats(3, 3000, 4, 1.0, 1), "to nas")
    err = capsys.readouterr().err
    assert "images: pushed 3 objects (3.0 KB) in 1 packs to nas in 1.00 s" in err


def test_units() -> None:
    assert [human(n) for n in (999, 57523, 5.9e6, 2e12)] == [
        "999 B", "57.5 KB", "5.9 MB", "2.0 TB"]
    assert dataset_line("pushed", DS, TransferStats(0, 0, 1, 0.1), "to nas") == (
        "images: the remote has it already")
