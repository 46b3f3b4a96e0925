"""``monitor:`` of mlops.yaml: the checks that span keys or sections, pydantic's errors worded
for this section, and the typed value (docs/monitor-config.md).

The values here end up as a place the prediction log is read from, the bounds of a drift
alarm, a GitHub workflow dispatched with inputs and the labels of an issue, so each is checked
for its form at load, with the file, the line and what to write instead: a ``k`` above ``n``
or a workflow path GitHub cannot dispatch would otherwise surface only on the scheduled run
that finds a drift.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gha_mlops.config._deploy import section_lines
from gha_mlops.config._schema_errors import (
    duration_seconds,
    key_form,
    section_schema_problems,
)
from gha_mlops.config._state import STATE_DIR
from gha_mlops.config._yaml import Loc, Problems, display
from gha_mlops.config.model import MonitorAlarm, MonitorConfig, MonitorModel, MonitorRetrain

if TYPE_CHECKING:
    from pydantic import BaseModel

# Patterns used only while validating are strings, compiled (and cached by re) on first use:
# a load from the validated-config cache imports this module but never matches them.
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DAY_S = 86400.0
WINDOW_S = (60.0, 366 * DAY_S)  # a window: a minute to a (leap) year
COOLDOWN_S = (0.0, 366 * DAY_S)  # gha_mlops.monitor.hysteresis.HysteresisConfig's bounds
# The log's tensor names (gha_mlops.monitor.predlog_writer.TENSOR_NAME: config sits below
# monitor and cannot import it; a test holds the two equal) and the feature columns made of
# them (gha_mlops.monitor.features: ``x``, or ``x[i]`` for a tensor of several values, at
# most MAX_COLUMNS = 10,000 of them).
TENSOR_NAME = r"[A-Za-z0-9_][A-Za-z0-9._/:-]{0,127}"
_COLUMN = rf"^{TENSOR_NAME}(\[(0|[1-9][0-9]{{0,3}})\])?$"
# gha_mlops.data.pointer.NAME: the dataset ``monitor collect`` appends to.
_DATASET = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
# A workflow file of .github/workflows, by its name only (what the dispatch API takes).
_WORKFLOW = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,250}\.ya?ml$"
# GitHub's rule for an input id: a letter or '_', then letters, digits, '-' and '_'.
_INPUT_NAME = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$"
MAX_INPUTS = 25  # GitHub's cap on workflow_dispatch inputs (10 until 2025-12-04)
MAX_INPUT_CHARS = 1024  # 25 of them stay well inside GitHub's 65,535 characters of inputs
MAX_LABEL_CHARS = 50  # GitHub's longest label name
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"  # S3's bucket naming rules
_SCHEME = r"^([A-Za-z][A-Za-z0-9+.-]*):"
_LOG_FORMS = ("a directory (relative to the workspace, or absolute) or `s3://bucket/prefix`, "
              "e.g. `log: logs/predictions` or `log: s3://ml-logs/digits`")
_FORMS = {
    "monitor": "a mapping with `models:`, e.g. `monitor: {models: {digits: {log: "
               "logs/predictions}}}`",
    "models": "a mapping from `registry.models` names to what is monitored, e.g. "
              "`models: {digits: {log: logs/predictions}}`",
    "log": _LOG_FORMS,
    "sample": "the share of served instances the model logs, a number more than 0 and at "
              "most 1, e.g. `sample: 0.1`",
    "stage": "the registry stage whose version is judged, e.g. `stage: prod`",
    "window": "a duration such as `90m`, `24h` or `7d`, or seconds, from 1 minute to "
              "366 days",
    "share": "the share of drifted features at which the dataset drifts, a number more "
             "than 0 and at most 1, e.g. `share: 0.5`",
    "features": "a list of feature columns of the log, each once, e.g. `features: "
                "['x[0]', 'x[1]', age]` (quote names with brackets inside `[...]`)",
    "label": "the output tensor holding the predicted class, e.g. `label: label`",
    "alarm": "a mapping, e.g. `alarm: {high: 0.5, low: 0.3, k: 2, n: 3}`",
    "high": "the drift score (share of drifted features) over which a window drifts, a "
            "number from 0 to 1, e.g. `high: 0.5`",
    "low": "the drift score under which a tripped alarm clears, a number from 0 to 1 below "
           "`high`, e.g. `low: 0.3`",
    "k": "how many of the last `n` windows must drift to trip the alarm, a whole number from "
         "1 to `n`, e.g. `k: 2`",
    "n": "how many windows the alarm looks back over, a whole number from 1 to 100, e.g. "
         "`n: 3`",
    "m": "how many windows in a row under `low` clear the alarm, a whole number from 1 to "
         "`n`, e.g. `m: 1`",
    "cooldown": "a duration such as `12h` or `7d`, or seconds, from 0 to 366 days",
    "min_samples": "the fewest rows a window needs for a verdict, a whole number >= 1, e.g. "
                   "`min_samples: 1000`",
    "retrain": "a mapping with `workflow:`, e.g. `retrain: {workflow: retrain.yml, ref: main}`",
    "workflow": "the file name of a workflow in .github/workflows, e.g. "
                "`workflow: retrain.yml`",
    "ref": "the branch or tag the workflow runs on, e.g. `ref: main` (default: the "
           "repository's default branch)",
    "inputs": "a mapping of workflow_dispatch inputs to string values, e.g. "
              "`inputs: {epochs: '3'}`",
    "reason_input": "the name of the workflow's input that receives the reason, e.g. "
                    "`reason_input: reason` (null: the reason is not passed)",
    "issue_labels": "a list of 1 to 10 GitHub labels, e.g. `issue_labels: [drift]` (the "
                    "first one finds the model's open drift issue)",
    "collect_into": "the name of the dataset feedback is collected into, e.g. "
                    "`collect_into: feedback`",
}


def parse_duration(value: Any) -> float:
    """Seconds from a number (not a boolean) or a duration with the unit ``s``, ``m``, ``h`` or ``d``;
    ValueError naming the forms otherwise. Bounds are the caller's."""
    return duration_seconds(value, _UNIT_S, "'90m', '24h' or '7d'")


def _form(loc: Loc) -> str | None:
    """``"`key` takes <form>"`` for the key at ``loc`` under ``monitor:``."""
    if len(loc) == 3 and loc[1] == "models":
        return ("a monitored model takes a mapping with at least `log`, e.g. "
                "`digits: {log: logs/predictions}`")
    if len(loc) == 6 and loc[4] == "inputs":
        return ("workflow_dispatch inputs are strings: quote the value, e.g. "
                f"`{loc[5]}: '3'`")
    return key_form(loc, _FORMS)


def _allowed(parent: Loc) -> Sequence[str]:
    """The keys of the mapping at ``parent`` (``monitor`` first)."""
    from gha_mlops.config.schema import (
        MonitorAlarmSchema,
        MonitorModelSchema,
        MonitorRetrainSchema,
        MonitorSchema,
    )

    shape = [str(p) for p in parent[1:]]
    if len(shape) >= 2:
        shape[1] = "*"
    models: dict[tuple[str, ...], type[BaseModel]] = {
        (): MonitorSchema, ("models", "*"): MonitorModelSchema,
        ("models", "*", "alarm"): MonitorAlarmSchema,
        ("models", "*", "retrain"): MonitorRetrainSchema}
    model = models.get(tuple(shape))
    return list(model.model_fields) if model is not None else []


def monitor_schema_problems(problems: Problems, errors: Sequence[Mapping[str, Any]]) -> None:
    """pydantic's errors under ``monitor:`` worded for someone editing the file."""
    section_schema_problems(problems, errors, allowed=_allowed, form=_form)


def normalize_monitor(problems: Problems, monitor: Any,
                      registry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``monitor:`` (a validated ``MonitorSchema`` or None) as a plain mapping, after the
    checks the schema cannot make (docs/monitor-config.md): each model a ``registry.models``
    name, its stage one of ``registry.stages``, its log a usable location, its window and
    cooldown within bounds, the alarm's thresholds consistent, the retraining workflow, ref
    and inputs what GitHub dispatches, the issue labels GitHub labels and the feature, label
    and dataset names in their grammars. Each model keeps the line of its key (``line``) for
    :attr:`MonitorModel.source`."""
    if monitor is None:
        return None
    base: Loc = ("monitor",)
    if registry is None:
        problems.add(base, "monitoring needs a `registry:` section",
                     "declare the models under `registry:` (docs/registry.md): a monitored "
                     "model is a registry model, judged against the reference profile "
                     "packaged with its version", key=True)
    if not monitor.models:
        problems.add(base, "there are no models to monitor",
                     "add one under `monitor.models:`, e.g. `digits: {log: logs/predictions}`",
                     key=True)
    lines = section_lines(problems.text, ("monitor", "models"))
    models: dict[str, dict[str, Any]] = {}
    for name, model in monitor.models.items():
        normalized = _model(problems, name, model, registry)
        line = lines.get(name) or problems.where.find((*base, "models", name), key=True)[0]
        if line:
            normalized["line"] = line
        models[name] = normalized
    return {"models": models}


def _model(problems: Problems, name: str, model: Any,
           registry: Mapping[str, Any] | None) -> dict[str, Any]:
    loc: Loc = ("monitor", "models", name)
    if registry is not None:
        known = list(registry["models"])
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            problems.add(loc, f"no model named {name!r} in registry.models",
                         (f"did you mean {close[0]!r}? " if close else "")
                         + ("name one of " + ", ".join(map(repr, known)) if known
                            else "declare it under `registry.models:` first"), key=True)
        if model.stage is not None and model.stage not in registry["stages"]:
            problems.add((*loc, "stage"), f"{model.stage!r} is not one of the registry's "
                         "stages", "name one of registry.stages: "
                         + ", ".join(map(repr, registry["stages"])))
    _within(problems, (*loc, "window"), model.window, WINDOW_S)
    features = None if model.features is None else _features(problems, loc, model.features)
    if model.label is not None and not re.fullmatch(TENSOR_NAME, model.label):
        problems.add((*loc, "label"), f"{model.label!r} is not a tensor name",
                     "name an output tensor of the model's signature: 1 to 128 letters, "
                     "digits and '_', '.', '/', ':', '-', e.g. `label: label`")
    if model.collect_into is not None and not re.fullmatch(_DATASET, model.collect_into):
        problems.add((*loc, "collect_into"), f"{model.collect_into!r} is not a dataset name",
                     "use letters, digits, '_', '.' and '-' (the name in the dataset's "
                     ".lock.yaml), e.g. `collect_into: feedback`")
    return {"log": _log_location(problems, (*loc, "log"), model.log), "sample": model.sample,
            "stage": model.stage,
            "window_s": model.window, "share": model.share, "features": features,
            "label": model.label, "alarm": _alarm(problems, (*loc, "alarm"), model.alarm),
            "retrain": (None if model.retrain is None
                        else _retrain(problems, (*loc, "retrain"), model.retrain)),
            "issue_labels": _issue_labels(problems, (*loc, "issue_labels"),
                                          model.issue_labels),
            "collect_into": model.collect_into}


def _within(problems: Problems, loc: Loc, seconds: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not low <= seconds <= high:
        problems.add(loc, f"{_duration_text(seconds)} is outside {_duration_text(low)}.."
                     f"{_duration_text(high)}", _form(loc))


def _duration_text(seconds: float) -> str:
    """``90 s``, ``2 m``, ``7 d``: the largest whole unit, for messages."""
    for unit, size in (("d", DAY_S), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _features(problems: Problems, loc: Loc, features: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    for i, feature in enumerate(features):
        if not re.fullmatch(_COLUMN, feature):
            problems.add((*loc, "features", i), f"{feature!r} is not a feature column name",
                         "name a column as the log and the profile do: a tensor name (1 to "
                         "128 letters, digits and '_', '.', '/', ':', '-') or one value of a "
                         "tensor, `x[0]` ... `x[9999]`")
        elif feature in seen:
            problems.add((*loc, "features", i), f"{feature!r} is listed twice (as "
                         f"features[{seen[feature]}])", "remove one of them")
        else:
            seen[feature] = i
    return list(features)


def _log_location(problems: Problems, loc: Loc, value: str) -> str:
    """The log's location normalized: ``s3://bucket[/prefix]``, an absolute POSIX path, or
    a workspace-relative one. A relative path may not climb out of the workspace: it would
    name a different directory on each runner (a checkout's parent differs between runners,
    repositories and runs); a directory outside the workspace is written absolute, which says
    plainly that it is a path of the machine."""
    wrong: str | None = None
    hint = f"write {_LOG_FORMS}"
    scheme = re.match(_SCHEME, value)
    if any(not c.isprintable() for c in value) or value != value.strip():
        wrong = "holds control characters or leading or trailing spaces"
    elif scheme is not None and len(scheme.group(1)) == 1:
        wrong, hint = "looks like a Windows drive path", (
            "gha-mlops runs on Linux and macOS: write a POSIX path such as "
            "/var/log/predictions, or an s3:// URL")
    elif scheme is not None and scheme.group(1).lower() == "s3":
        rest = value[scheme.end():]
        if rest.startswith("//"):
            return _s3_location(problems, loc, value)
        wrong = ("is not a valid s3:// URL (a scheme is followed by '//'); taken as a "
                 "directory it would be a folder named 's3:' in the workspace")
        hint = f"did you mean {'s3://' + rest.lstrip('/')!r}?"
    elif scheme is not None:
        wrong = (f"names a {scheme.group(1)}: location, from which the prediction log cannot "
                 "be read")
        hint = (f"write {_LOG_FORMS}; an S3-compatible store is written s3:// with its "
                "endpoint in the AWS environment (AWS_ENDPOINT_URL); a directory whose name "
                f"has a ':' is written ./{value}")
    elif "\\" in value:
        wrong, hint = "uses '\\' as a separator", "write paths with '/'"
    elif value.startswith("~"):
        wrong, hint = "starts with '~', which mlops.yaml does not expand", (
            "write the absolute path, e.g. /home/runner/predictions")
    elif value.startswith("/"):
        norm = "/" + posixpath.normpath(value).lstrip("/")
        if norm != "/":
            return norm
        wrong = "is the file system's root"
        hint = "name the directory the serving writes its log to, e.g. /var/log/predictions"
    else:
        norm = posixpath.normpath(value)
        if norm == ".." or norm.startswith("../"):
            wrong = ("climbs out of the workspace: relative to the checkout, it would be a "
                     "different directory on each runner")
            hint = ("write a directory outside the workspace as an absolute path, e.g. "
                    "/var/log/predictions, or keep the log inside the workspace")
        elif norm == ".":
            wrong = "is the whole workspace, not a directory in it"
            hint = "name a directory inside the workspace, e.g. logs/predictions"
        elif norm == STATE_DIR or norm.startswith(STATE_DIR + "/"):
            wrong = f"is inside {STATE_DIR}/, where gha-mlops keeps its own cache"
            hint = f"use a directory outside {STATE_DIR}/, e.g. logs/predictions"
        else:
            return norm
    problems.add(loc, f"{value!r} {wrong}", hint)
    return value


def _s3_location(problems: Problems, loc: Loc, value: str) -> str:
    from urllib.parse import urlsplit  # only when validating

    parts = urlsplit(value)
    bucket, segments = parts.netloc, parts.path.strip("/").split("/")
    wrong: str | None = None
    if parts.query or parts.fragment:
        wrong = "has a query or fragment ('?' or '#'), which an S3 location does not"
    elif not re.fullmatch(_BUCKET, bucket) or ".." in bucket:
        wrong = (f"names the bucket {bucket!r}, which is not an S3 bucket name (3 to 63 "
                 "lower-case letters, digits, '.' and '-', starting and ending with a letter "
                 "or digit)")
    elif segments != [""] and any(s in ("", ".", "..") for s in segments):
        wrong = "has an empty, '.' or '..' part in its prefix"
    if wrong is not None:
        problems.add(loc, f"{value!r} {wrong}", "write s3://bucket/prefix, e.g. "
                     "`log: s3://ml-logs/digits`")
        return value
    prefix = "/".join(s for s in segments if s)
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def _alarm(problems: Problems, loc: Loc, alarm: Any) -> dict[str, Any]:
    """The alarm's settings, held to ``HysteresisConfig``'s rules here, at their line."""
    if not alarm.low < alarm.high:
        problems.add((*loc, "low"), f"low ({alarm.low:g}) must be below high "
                     f"({alarm.high:g})", "the alarm trips above high and clears below low; "
                     "the gap between them keeps a flapping score from flapping the alarm")
    for key in ("k", "m"):
        if getattr(alarm, key) > alarm.n:
            problems.add((*loc, key), f"{key} ({getattr(alarm, key)}) is more than n "
                         f"({alarm.n})", f"{key} counts windows among the last n: make it at "
                         "most n, or look back over more windows with a larger n")
    _within(problems, (*loc, "cooldown"), alarm.cooldown, COOLDOWN_S)
    return {"high": alarm.high, "low": alarm.low, "k": alarm.k, "n": alarm.n, "m": alarm.m,
            "cooldown_s": alarm.cooldown, "min_samples": alarm.min_samples}


def _retrain(problems: Problems, loc: Loc, retrain: Any) -> dict[str, Any]:
    workflow = retrain.workflow
    if "/" in workflow or "\\" in workflow:
        problems.add((*loc, "workflow"), f"{workflow!r} is a path, not a workflow file name",
                     "write only the file name of the workflow in .github/workflows, e.g. "
                     f"`workflow: {posixpath.basename(workflow.replace(chr(92), '/'))}`")
    elif not re.fullmatch(_WORKFLOW, workflow):
        problems.add((*loc, "workflow"), f"{workflow!r} is not a workflow file name",
                     "name a file of .github/workflows ending .yml or .yaml (letters, digits, "
                     "'_', '.', '-'), e.g. `workflow: retrain.yml`")
    if retrain.ref is not None and (wrong := _ref_problem(retrain.ref)) is not None:
        problems.add((*loc, "ref"), f"{retrain.ref!r} is not a git branch or tag name: "
                     f"{wrong}", "name a branch or tag, e.g. `ref: main`, or leave `ref` "
                     "out for the repository's default branch")
    names: dict[str, str] = {}  # lower-case -> as written
    for name, text in retrain.inputs.items():
        _input_name(problems, (*loc, "inputs", name), name, names, key=True)
        if len(text) > MAX_INPUT_CHARS:
            problems.add((*loc, "inputs", name), f"the value is {len(text)} characters, more "
                         f"than {MAX_INPUT_CHARS}", "pass a short value (a name, a path, a "
                         "number); the workflow can read anything longer from the repository")
    if retrain.reason_input is not None:
        _input_name(problems, (*loc, "reason_input"), retrain.reason_input, names, key=False)
    count = len(retrain.inputs) + (retrain.reason_input is not None)
    if count > MAX_INPUTS:
        problems.add((*loc, "inputs"), f"{count} inputs (with reason_input) are more than the "
                     f"{MAX_INPUTS} GitHub accepts in a workflow_dispatch",
                     "pass fewer inputs; the workflow can read settings from the repository",
                     key=True)
    return {"workflow": workflow, "ref": retrain.ref, "inputs": dict(retrain.inputs),
            "reason_input": retrain.reason_input}


def _input_name(problems: Problems, loc: Loc, name: str, seen: dict[str, str], *,
                key: bool) -> None:
    if not re.fullmatch(_INPUT_NAME, name):
        problems.add(loc, f"{name!r} is not a workflow input name",
                     "GitHub's input names start with a letter or '_' and hold letters, "
                     "digits, '-' and '_' (at most 100 here), e.g. `epochs`", key=key)
    elif name.lower() in seen:
        what = "the reason would overwrite" if loc[-1] == "reason_input" else "it is the same as"
        problems.add(loc, f"the input {name!r}: {what} the input {seen[name.lower()]!r}",
                     "GitHub's expressions read input names without regard to case: give "
                     "each input its own name" + ("" if key else ", or set `reason_input: "
                                                  "null` to pass no reason"), key=key)
    else:
        seen[name.lower()] = name


def _ref_problem(ref: str) -> str | None:
    """What makes ``ref`` no branch or tag name (git check-ref-format's rules), or None."""
    if len(ref) > 255:
        return "more than 255 characters"
    if any(ord(c) < 0x21 or ord(c) == 0x7F or c in "~^:?*[\\" for c in ref):
        return "it holds a space, a control character or one of ~ ^ : ? * [ \\"
    if ".." in ref or "@{" in ref or ref == "@":
        return "it holds '..' or '@{', or is '@'"
    if ref.startswith(("/", "-")) or ref.endswith(("/", ".")) or "//" in ref:
        return "it starts with '/' or '-', ends with '/' or '.', or holds '//'"
    if any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/")):
        return "a part starts with '.' or ends with '.lock'"
    return None


def _issue_labels(problems: Problems, loc: Loc, labels: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        wrong: str | None = None
        if len(label) > MAX_LABEL_CHARS:
            wrong = f"is {len(label)} characters, more than GitHub's {MAX_LABEL_CHARS}"
        elif label != label.strip() or any(not c.isprintable() for c in label):
            wrong = "has leading or trailing spaces or control characters"
        elif "," in label:
            wrong = "holds a ',', which separates labels when issues are searched by label"
        elif label.lower() in seen:
            wrong = f"is listed twice (as issue_labels[{seen[label.lower()]}]; GitHub " \
                    "compares labels without regard to case)"
        if wrong is not None:
            problems.add((*loc, i), f"the label {label!r} {wrong}", _form(loc))
        else:
            seen[label.lower()] = i
    return list(labels)


def build_monitor(normalized: Mapping[str, Any] | None,
                  config_path: Path) -> MonitorConfig | None:
    """The typed ``monitor:`` from its normalized (cached) form."""
    if normalized is None:
        return None
    models = {}
    for name, m in normalized["models"].items():
        line = m.get("line")
        retrain = m["retrain"]
        models[name] = MonitorModel(
            name=name, log=m["log"], sample=m["sample"], stage=m["stage"],
            window_s=m["window_s"],
            share=m["share"],
            features=tuple(m["features"]) if m["features"] is not None else None,
            label=m["label"], alarm=MonitorAlarm(**m["alarm"]),
            retrain=(MonitorRetrain(workflow=retrain["workflow"], ref=retrain["ref"],
                                    inputs=dict(retrain["inputs"]),
                                    reason_input=retrain["reason_input"])
                     if retrain is not None else None),
            issue_labels=tuple(m["issue_labels"]), collect_into=m["collect_into"],
            source=f"{display(config_path)}:{line}" if line else display(config_path))
    return MonitorConfig(models=models)
