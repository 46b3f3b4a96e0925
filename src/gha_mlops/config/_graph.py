"""The stage graph: which stage produces what a stage depends on, outputs that collide,
cycles, and a stable topological order."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any

from gha_mlops.config._yaml import Loc, Problems, keypath


def overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


class _Node:
    __slots__ = ("children", "first", "here")

    def __init__(self, first: int) -> None:
        self.children: dict[str, _Node] = {}
        self.here: list[int] = []  # the outputs at exactly this path
        self.first = first  # the smallest output number at or under this path


class OutputIndex:
    """Output paths numbered in the order added, in a trie of their '/'-separated parts, so
    that the outputs overlapping a path (see :func:`overlaps`) are found in time proportional
    to the depth of the path and the number found, not to the number of outputs.

    ``a`` overlaps ``b`` exactly when the parts of one are a prefix of the parts of the
    other, which is what the trie walks: outputs on the way down contain the path, outputs
    at or below its end are the path or inside it.
    """

    def __init__(self) -> None:
        self._root = _Node(-1)
        self._count = 0

    def add(self, path: str) -> int:
        """Add an output at ``path``; returns its number (0, 1, ... in the order added)."""
        number = self._count
        self._count += 1
        node = self._root
        for part in path.split("/"):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node(number)
            node = child
        node.here.append(number)
        return number

    def first(self, path: str) -> int | None:
        """The smallest number of an output that overlaps ``path``, or None."""
        best: int | None = None
        node = self._root
        for part in path.split("/"):
            child = node.children.get(part)
            if child is None:
                return best
            node = child
            if node.here and (best is None or node.here[0] < best):
                best = node.here[0]
        if node.first >= 0 and (best is None or node.first < best):
            best = node.first
        return best

    def all(self, path: str) -> list[int]:
        """The numbers of every output that overlaps ``path``, smallest first."""
        found: list[int] = []
        node = self._root
        for part in path.split("/"):
            child = node.children.get(part)
            if child is None:
                return sorted(found)
            node = child
            found.extend(node.here)
        todo = list(node.children.values())
        while todo:
            below = todo.pop()
            found.extend(below.here)
            todo.extend(below.children.values())
        return sorted(found)


def _output_of(path: str, out: str, whose: str) -> str:
    """``'a/b' is inside 'a', an output of <whose>`` for a ``path`` that overlaps ``out``."""
    if path == out:
        return f"{path!r} is an output of {whose}"
    relation = "is inside" if path.startswith(out + "/") else "contains"
    return f"{path!r} {relation} {out!r}, an output of {whose}"


def link_stages(problems: Problems, stages: list[dict[str, Any]]) -> None:
    """Find producers, reject duplicate/overlapping outputs and cycles, sort topologically.

    Time near-linear in the number of stages, outputs and deps (plus the producer links
    found): outputs are matched through an :class:`OutputIndex`, never pairwise.
    """
    owners: list[tuple[str, dict[str, str]]] = []
    index = OutputIndex()
    for st in stages:
        for out in st["outs"]:
            first = index.first(out["path"])
            if first is not None:  # the first-declared output it overlaps
                other_name, other = owners[first]
                other_ref = f"stages.{other_name}.{other['field']}[{other['index']}]"
                whose = ("this stage" if other_name == st["name"]
                         else f"stage {other_name!r}")
                problems.add(
                    ("stages", st["name"], out["field"], int(out["index"])),
                    _output_of(out["path"], other["path"], whose).replace(
                        " is an output", " is also an output", 1) + f" ({other_ref})",
                    "each path may be written by one output of one stage only: give each "
                    "output its own path, outside the others")
            index.add(out["path"])
            owners.append((st["name"], out))
    edges = _link_deps(problems, stages, owners, index)
    _sort(problems, stages, edges)


def _link_deps(problems: Problems, stages: list[dict[str, Any]],
               owners: Sequence[tuple[str, Mapping[str, str]]],
               index: OutputIndex) -> dict[tuple[str, str], tuple[Loc, str, str]]:
    """Set each stage's ``upstream`` (the stages whose outputs overlap its deps) and return
    (stage, upstream stage) -> (where the dep is, the dep, the upstream output it overlaps),
    for the first such dep. A dep on the stage's own output is a problem."""
    edges: dict[tuple[str, str], tuple[Loc, str, str]] = {}
    for st in stages:
        upstream: list[str] = []
        for i, dep in enumerate(st["deps"]):
            loc: Loc = ("stages", st["name"], "deps", i)
            for number in index.all(dep):
                owner, out = owners[number]
                if owner == st["name"]:
                    problems.add(
                        loc, _output_of(dep, out["path"], "this same stage")
                        + f" (stages.{owner}.{out['field']}[{out['index']}])",
                        "a stage cannot depend on what it writes; if it updates a file in "
                        "place, write the result to a new path")
                elif (st["name"], owner) not in edges:
                    upstream.append(owner)
                    edges[(st["name"], owner)] = (loc, dep, out["path"])
        st["upstream"] = sorted(upstream)
    return edges


def _sort(problems: Problems, stages: list[dict[str, Any]],
          edges: Mapping[tuple[str, str], tuple[Loc, str, str]]) -> None:
    """Sort ``stages`` topologically, or report a cycle."""
    by_name = {st["name"]: st for st in stages}
    # Kahn's algorithm, always taking the first-declared stage that is ready: stages declared
    # in a runnable order keep that order, and the order never depends on anything else.
    position = {n: i for i, n in enumerate(by_name)}
    indeg = {n: len(by_name[n]["upstream"]) for n in by_name}
    dependents: dict[str, list[str]] = {n: [] for n in by_name}
    for n, st in by_name.items():
        for u in st["upstream"]:
            dependents[u].append(n)
    order: list[str] = []
    ready = [position[n] for n in by_name if indeg[n] == 0]
    names = list(by_name)
    while ready:
        n = names[heapq.heappop(ready)]
        order.append(n)
        for m in dependents[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                heapq.heappush(ready, position[m])
    if len(order) < len(by_name):
        ordered = set(order)
        cycle = _find_cycle({n: by_name[n]["upstream"] for n in by_name if n not in ordered})
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
    at = {start: 0}  # node -> its place in path, so a long walk stays linear
    node = start
    while True:
        nxt = next(u for u in graph[node] if u in graph)
        if nxt in at:
            return path[at[nxt]:]
        at[nxt] = len(path)
        path.append(nxt)
        node = nxt
