"""Gate metric names checked against what the workspace can tell at load time.

A gate names a metric (``KEY`` or ``FILE:KEY``) that only exists once a stage has written its
metrics file, so a wrong name used to surface only in ``gha-mlops report``, after training,
without a line number. At load:

- :func:`gate_lines` finds the line of each gate (for every later message), at the cost of
  composing the ``gates:`` section alone, once per validation;
- :func:`check_gate_metrics` reads the declared metrics files present in the workspace (small
  JSON files, only when gates are declared) and prints a warning, once per process, naming
  the file and line, for a gate whose metric none of them has (with a did-you-mean), or whose
  metrics file does not exist yet. A warning, not an error: the file may be from an earlier
  run, before the stage learnt to write the new metric, and ``run`` must still run it.
  ``report`` checks the head run's metrics and fails there, naming the line.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from gha_mlops.config._yaml import display
from gha_mlops.config.model import Pipeline

_MAX_METRICS_BYTES = 16 * 1024 * 1024  # as reporting reads them; larger ones are not metrics
_GATES_KEY = re.compile(rb"^gates[ \t]*:", re.M)
_TOP_LEVEL = re.compile(rb"^[^\s#]", re.M)
_warned: set[tuple[str, str]] = set()  # (config file, message) printed by this process


def gate_lines(config_bytes: bytes) -> dict[str, int]:
    """Gate name -> line of its key in the config, for a block-style top-level ``gates:``
    (the form the docs use); empty when the section cannot be found that way. Composes only
    the section, so a large pipeline is not parsed twice."""
    import yaml

    from gha_mlops.config._yaml import safe_loader

    found = _GATES_KEY.search(config_bytes)
    if found is None:
        return {}
    following = _TOP_LEVEL.search(config_bytes, found.end())
    section = config_bytes[found.start(): following.start() if following else None]
    offset = config_bytes.count(b"\n", 0, found.start())
    try:
        root = yaml.compose(section, Loader=safe_loader())
    except yaml.YAMLError:
        return {}
    if not isinstance(root, yaml.MappingNode) or len(root.value) != 1:
        return {}
    gates = root.value[0][1]
    if not isinstance(gates, yaml.MappingNode):
        return {}
    return {str(k.value): offset + k.start_mark.line + 1 for k, _ in gates.value
            if isinstance(k, yaml.ScalarNode)}


def check_gate_metrics(pipeline: Pipeline, *,
                       warn: Callable[[str], None] | None = None) -> list[str]:
    """The warnings for gates whose metric the workspace's metrics files do not show (see the
    module documentation), each printed once per process to stderr (or given to ``warn``).
    Returns them all, printed before or not. Costs nothing without gates."""
    if not pipeline.gates:
        return []
    files = [o.path for s in pipeline.stages.values() for o in s.outs if o.kind == "metric"]
    keys: dict[str, set[str] | None] = {f: _metric_keys(pipeline.root, f) for f in files}
    messages: list[str] = []
    unknown: dict[tuple[str, ...], list[str]] = {}  # files not there yet -> gates waiting
    for name, gate in pipeline.gates.items():
        file, sep, key = name.partition(":")
        qualified = bool(sep) and file in keys
        targets = [file] if qualified else files
        wanted = key if qualified else name
        known = [f for f in targets if keys[f] is not None]
        where = gate.source or display(pipeline.config_file)
        if not known:
            unknown.setdefault(tuple(targets), []).append(where)
            continue
        if any(wanted in (keys[f] or ()) for f in known):
            continue
        # Keys are compared without their file: a shared 'metrics.json:' is no likeness.
        present = sorted({k for f in known for k in keys[f] or ()})
        close = difflib.get_close_matches(wanted, present, n=1) or [
            k for k in present if k.rpartition(".")[2] == wanted][:1]  # nested: a.b.loss
        guess = f"{file}:{close[0]}" if close and qualified else close[0] if close else None
        messages.append(
            f"warning: {where}: gates.{name}: no metric {wanted!r} in {_join(known)}"
            + (f"; did you mean {guess!r}?" if guess else "")
            + "\nhint: fix the name under `gates:`; if the stage writes this metric only "
            "from its next run on, this goes away after `gha-mlops run`")
    for missing, places in unknown.items():
        # One line for one fact: before the first run no metrics file exists, for any gate.
        gates = "a gate" if len(places) == 1 else f"{len(places)} gates"
        messages.append(
            f"warning: {places[0]}: gates: cannot check the metric of {gates} yet: "
            f"{_join(list(missing))} {'does' if len(missing) == 1 else 'do'} not exist yet\n"
            "hint: `gha-mlops report` checks them once a run has written the metrics")
    for text in messages:
        _emit(display(pipeline.config_file), text, warn)
    return messages


def _join(files: list[str]) -> str:
    return ", ".join(files) if files else "no metrics file"


def _emit(config: str, text: str, warn: Callable[[str], None] | None) -> None:
    if warn is not None:
        warn(text)
        return
    if (config, text) in _warned:
        return
    _warned.add((config, text))
    from gha_mlops.gha.safe import log_block

    # The metric names come from a pull request: no line of them may read as a workflow
    # command in the job log.
    sys.stderr.write(log_block(text) + "\n")
    sys.stderr.flush()


def _metric_keys(root: Path, rel: str) -> set[str] | None:
    """The flattened keys (``a.b`` for nested objects) of the JSON metrics file ``rel`` of
    the workspace ``root``, or None when it does not exist, is not a readable JSON object of
    at most 16 MiB, or is a link out of the workspace (a pull request could plant one to make
    a warning's did-you-mean quote another file's keys)."""
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, rel))
    if not path.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > _MAX_METRICS_BYTES:
            return None
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
        return set(_flatten(data)) if isinstance(data, Mapping) else None
    except (OSError, ValueError, RecursionError):  # RecursionError: nested beyond reason
        return None


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        else:
            yield name
