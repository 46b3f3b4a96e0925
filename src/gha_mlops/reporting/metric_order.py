"""Which metrics a short list shows first: the headline rule.

A run often has dozens of metrics (``per_class.3.f1`` for every class), and a chart or a
terminal summary shows only a few: :func:`headline_order` decides which, the same way
everywhere (``gha-mlops run``, ``runs show``, the report's metric chart):

1. the metrics the ``gates:`` of mlops.yaml name, in the gates' order (a gate names a
   ``KEY`` or ``FILE:KEY``): what a team gates on is what it cares about;
2. then top-level keys (``test_accuracy``) before nested ones (``per_class.3.f1``), fewer
   dots first;
3. among keys of the same depth, the metrics files take turns: the first key of each file,
   then the second of each, and so on (files and keys in the order given: the record's,
   which a stored record has sorted by name), so that a training stage's many metrics
   cannot hide the evaluation's.

Pure: names in, an order out.
"""

from __future__ import annotations

from collections.abc import Sequence


def headline_order(metrics: Sequence[tuple[str, str]], first: Sequence[str] = ()) -> list[int]:
    """The indices of ``metrics`` (``(file, key)`` pairs) in headline order (see the module
    documentation); ``first`` holds the gated metric names, ``KEY`` or ``FILE:KEY``."""
    order: list[int] = []
    taken: set[int] = set()
    for name in first:
        exact = [i for i, (f, k) in enumerate(metrics) if f"{f}:{k}" == name]
        for i in exact or [i for i, (_, k) in enumerate(metrics) if k == name]:
            if i not in taken:
                order.append(i)
                taken.add(i)
    files: dict[str, int] = {}
    seen: dict[tuple[str, int], int] = {}  # (file, depth) -> keys of it placed so far
    keyed: list[tuple[int, int, int, int]] = []
    for i, (file, key) in enumerate(metrics):
        if i in taken:
            continue
        depth = key.count(".")
        turn = seen.get((file, depth), 0)
        seen[(file, depth)] = turn + 1
        keyed.append((depth, turn, files.setdefault(file, len(files)), i))
    return order + [i for *_, i in sorted(keyed)]
