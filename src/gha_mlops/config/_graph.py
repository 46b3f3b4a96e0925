"""The stage graph: which stage produces what a stage depends on, outputs that collide,
cycles, and a stable topological order."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any

from gha_mlops.config._yaml import Loc, Problems, keypath


def overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _output_of(path: str, out: str, whose: str) -> str:
    """``'a/b' is inside 'a', an output of <whose>`` for a ``path`` that overlaps ``out``."""
    if path == out:
        return f"{path!r} is an output of {whose}"
    relation = "is inside" if path.startswith(out + "/") else "contains"
    return f"{path!r} {relation} {out!r}, an output of {whose}"


def link_stages(problems: Problems, stages: list[dict[str, Any]]) -> None:
    """Find producers, reject duplicate/overlapping outputs and cycles, sort topologically."""
    owners: list[tuple[str, dict[str, str]]] = []
    for st in stages:
        for out in st["outs"]:
            for other_name, other in owners:
                if overlaps(out["path"], other["path"]):
                    other_ref = f"stages.{other_name}.{other['field']}[{other['index']}]"
                    whose = ("this stage" if other_name == st["name"]
                             else f"stage {other_name!r}")
                    problems.add(
                        ("stages", st["name"], out["field"], int(out["index"])),
                        _output_of(out["path"], other["path"], whose).replace(
                            " is an output", " is also an output", 1) + f" ({other_ref})",
                        "each path may be written by one output of one stage only: give each "
                        "output its own path, outside the others")
                    break
            owners.append((st["name"], out))
    by_name = {st["name"]: st for st in stages}
    # (stage, upstream stage) -> (where the dep is, the dep, the upstream output it overlaps)
    edges: dict[tuple[str, str], tuple[Loc, str, str]] = {}
    for st in stages:
        upstream: list[str] = []
        for i, dep in enumerate(st["deps"]):
            loc: Loc = ("stages", st["name"], "deps", i)
            for owner, out in owners:
                if not overlaps(dep, out["path"]):
                    continue
                if owner == st["name"]:
                    problems.add(
                        loc, _output_of(dep, out["path"], "this same stage")
                        + f" (stages.{owner}.{out['field']}[{out['index']}])",
                        "a stage cannot depend on what it writes; if it updates a file in "
                        "place, write the result to a new path")
                elif owner not in upstream:
                    upstream.append(owner)
                    edges[(st["name"], owner)] = (loc, dep, out["path"])
        st["upstream"] = sorted(upstream)
    # Kahn's algorithm, always taking the first-declared stage that is ready: stages declared
    # in a runnable order keep that order, and the order never depends on anything else.
    position = {n: i for i, n in enumerate(by_name)}
    indeg = {n: len(by_name[n]["upstream"]) for n in by_name}
    order: list[str] = []
    ready = [position[n] for n in by_name if indeg[n] == 0]
    names = list(by_name)
    while ready:
        n = names[heapq.heappop(ready)]
        order.append(n)
        for m in by_name:
            if n in by_name[m]["upstream"]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    heapq.heappush(ready, position[m])
    if len(order) < len(by_name):
        cycle = _find_cycle({n: by_name[n]["upstream"] for n in by_name if n not in order})
        links = list(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
        notes = []
        for a, b in links:
            loc, dep, out = edges[(a, b)]
            notes.append(f"{problems.at(loc)}: {keypath(loc)}: "
                         + _output_of(dep, out, f"stage {b!r}"))
        problems.add(
            edges[links[0]][0],
            "stages depend on each other in a cycle: " + " -> ".join([*cycle, cycle[0]]),
            "a stage can only depend on outputs of stages that run before it: remove one of "
            "the deps listed, or have the stages read and write different paths",
            notes=notes)
        return
    for st in stages:
        for out in st["outs"]:
            for k in ("field", "index"):
                out.pop(k, None)
    rank = {n: i for i, n in enumerate(order)}
    stages.sort(key=lambda s: rank[s["name"]])


def _find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle in ``graph`` (node -> the nodes it needs), as a list of nodes.

    Every node in ``graph`` needs at least one other node in it (they are what a topological
    sort left over), so walking from any node must come back to a node already seen.
    """
    start = next(iter(graph))
    path = [start]
    node = start
    while True:
        nxt = next(u for u in graph[node] if u in graph)
        if nxt in path:
            return path[path.index(nxt):]
        path.append(nxt)
        node = nxt
