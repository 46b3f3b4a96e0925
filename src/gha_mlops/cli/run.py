"""``gha-mlops run``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gha_mlops import bootstrap
from gha_mlops.cli._render import TerminalReporter, run_summary
from gha_mlops.config import DEFAULT_CONFIG, parse_overrides
from gha_mlops.errors import StageFailedError
from gha_mlops.gha import Actions, log_text
from gha_mlops.pipeline.engine import Reporter, RunOptions, RunResult, run_pipeline
from gha_mlops.pipeline.loading import load

if TYPE_CHECKING:
    from gha_mlops.runs.record import RunRecord


@click.command()
@click.option("--config", "-c", "config", default=DEFAULT_CONFIG, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The pipeline file.")
@click.option("--force", "-f", is_flag=True, help="Run every selected stage, ignoring the cache.")
@click.option("--stage", "-s", "stages", multiple=True, metavar="NAME",
              help="Run only this stage and what it depends on (repeatable).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Use VALUE (YAML: 0.01, true, [1, 2], adam) for the params key KEY "
              "(dotted, e.g. train.lr) in this run, without editing the params file "
              "(repeatable).")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Run up to N independent stages in parallel.")
@click.option("--wait", default=0.0, type=click.FloatRange(0), metavar="SECONDS",
              help="If another run holds the workspace, wait up to this long for it.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary.")
def run(config: Path, force: bool, stages: tuple[str, ...], overrides: tuple[str, ...],
        jobs: int, wait: float, quiet: bool) -> None:
    """Run the pipeline in mlops.yaml.

    A stage runs only when its signature changed: its command, the content of its deps, the
    params it reads, the environment lock or the seed. Outputs of earlier signatures are
    restored from the cache instead of re-running. Every run writes a run record.

    In GitHub Actions the step gets the outputs run-id, status, metrics, model-sha256 and
    record, and each stage's output is a collapsible log group (with -j 1).
    """
    pipeline = load(config, overrides=parse_overrides(overrides))
    actions = Actions(os.environ)
    reporter: Reporter = TerminalReporter(quiet=quiet)
    if actions.active and jobs == 1:
        reporter = _LogGroups(reporter, actions)
    try:
        result = run_pipeline(
            pipeline,
            RunOptions(environ=dict(os.environ), force=force, targets=stages, jobs=jobs,
                       wait=wait, open_store=bootstrap.object_stores()),
            reporter,
            recorded=lambda res: _set_outputs(actions, res),
        )
    except StageFailedError as err:
        failed = getattr(err, "result", None)
        if failed is not None:
            click.echo(run_summary(failed.record, first=tuple(pipeline.gates)), err=True)
        raise
    click.echo(run_summary(result.record, first=tuple(pipeline.gates)))


def step_outputs(record: RunRecord | Mapping[str, Any], record_path: Path,
                 base: Path) -> dict[str, str]:
    """The step outputs of a run: ``run-id``, ``status`` (the record's: succeeded, failed or
    interrupted), ``metrics`` (the record's metrics as compact JSON), ``model-sha256`` (empty
    without a model) and ``record`` (the record's path relative to ``base``, POSIX, or
    absolute when outside it). A JSON document is validated first (``RecordError``)."""
    # Imported here, not with the command: the no-op run outside Actions never reads its
    # record back, and the record's classes cost ~3.5 ms.
    from gha_mlops.runs.record import RunRecord

    rec = RunRecord.coerce(record)
    rel = str(record_path.absolute())
    for path, root in ((record_path.absolute(), base.absolute()),
                       (record_path.resolve(), base.resolve())):  # through symlinks too
        try:
            rel = path.relative_to(root).as_posix()
            break
        except ValueError:
            continue
    return {
        "run-id": rec.id,
        "status": rec.status,
        "metrics": json.dumps(dict(rec.metrics), separators=(",", ":"), sort_keys=True,
                              ensure_ascii=False),
        "model-sha256": rec.model.sha256 if rec.model is not None else "",
        "record": rel,
    }


def _set_outputs(actions: Actions, result: RunResult) -> None:
    if not actions.takes_outputs:
        return  # no step to give outputs to (a run outside Actions): the record is not read
    # Relative to the checkout, where later steps (upload-artifact, ...) resolve paths.
    base = Path(actions.environ.get("GITHUB_WORKSPACE") or os.getcwd())
    for name, value in step_outputs(result.record, result.record_path, base).items():
        actions.set_output(name, value)


class _LogGroups:
    """A reporter that wraps the output of each stage that runs in a log group (serial runs
    in Actions: the stage's output is not interleaved with another's)."""

    def __init__(self, inner: Reporter, actions: Actions) -> None:
        self.inner = inner
        self.actions = actions

    def stage_started(self, stage: str, cmd: str) -> None:
        # The group title stands in for the inner reporter's "▶ stage cmd" line.
        self.actions.start_group(f"▶ {log_text(stage)}  {log_text(cmd)}")

    def stage_finished(self, stage: str, status: str, seconds: float, detail: str | None) -> None:
        self.actions.end_group()  # the verdict line stays visible outside the group
        self.inner.stage_finished(stage, status, seconds, detail)

    def stage_line(self, stage: str, line: str) -> None:
        self.inner.stage_line(stage, line)

    def note(self, line: str) -> None:
        self.inner.note(line)
