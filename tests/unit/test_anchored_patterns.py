"""No `$`-anchored pattern is used with ``.match``: `$` also matches before a final newline, so
``re.match(r"^[a-z]+$", "prod\\n")`` passes, and a name, an id or a tag read from a file, a
remote or a pull request would carry its newline into paths, logs and API calls. Patterns that
must match a whole value are used with ``fullmatch``.

The check is static: module-level ``X = re.compile("...$")`` (or a dict of such, or a plain
string constant given to ``re.match``), then every ``.match(`` on ``X``, ``mod.X``, ``X[k]`` or
``re.match(X, ...)`` in the package, the name looked up in its own module first, then in any.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "gha_mlops"

Patterns = dict[str, set[str]]


def _text(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _compiled(node: ast.expr) -> str | None:
    """The pattern of ``re.compile("...")``, or the string of a string constant."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "compile" and node.args:
        return _text(node.args[0])
    return _text(node)


def constants(tree: ast.Module) -> Patterns:
    """Module-level names bound to a pattern or a string (a dict: all its values)."""
    found: Patterns = defaultdict(set)
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        values = value.values if isinstance(value, ast.Dict) else [value]
        texts = {t for v in values if v is not None and (t := _compiled(v)) is not None}
        for target in targets:
            if isinstance(target, ast.Name) and texts:
                found[target.id] |= texts
    return found


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _ends_in_dollar(pattern: str) -> bool:
    return pattern.endswith("$") and not pattern.endswith("\\$")


def dollar_matches(tree: ast.Module, local: Patterns, everywhere: Patterns) -> list[int]:
    """Lines of ``.match(`` calls on a pattern that ends in `$`."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "match"):
            continue
        target = node.func.value
        if isinstance(target, ast.Name) and target.id == "re":
            if not node.args:
                continue
            text = _text(node.args[0])
            arg_name = _name(node.args[0])
            candidates = {text} if text is not None else \
                local.get(arg_name or "", everywhere.get(arg_name or "", set()))
        else:
            name = _name(target) or ""
            candidates = local.get(name, everywhere.get(name, set()))
        if any(_ends_in_dollar(p) for p in candidates):
            lines.append(node.lineno)
    return lines


def _offenders(sources: dict[str, str]) -> list[str]:
    trees = {rel: ast.parse(text) for rel, text in sources.items()}
    per_module = {rel: constants(tree) for rel, tree in trees.items()}
    everywhere: Patterns = defaultdict(set)
    for found in per_module.values():
        for name, texts in found.items():
            everywhere[name] |= texts
    return [f"{rel}:{line}" for rel, tree in trees.items()
            for line in dollar_matches(tree, per_module[rel], everywhere)]


def test_no_dollar_anchored_pattern_is_used_with_match() -> None:
    sources = {str(p.relative_to(SRC)): p.read_text() for p in sorted(SRC.rglob("*.py"))}
    bad = _offenders(sources)
    assert not bad, "use fullmatch (a `$` lets a trailing newline through): " + ", ".join(bad)


def test_the_checker_sees_each_form() -> None:
    names = (
        'import re\nNAME = re.compile(r"^[a-z]+$")\nIDS = {"a": re.compile(r"^a-[0-9]+$")}\n'
        'PLAIN = "^[a-z]+$"\n')
    use = (
        "import re\nfrom names import NAME\nimport names\n"
        "NAME.match(x)\n"                       # 4: imported name
        "names.NAME.match(x)\n"                 # 5: attribute
        'names.IDS["a"].match(x)\n'             # 6: dict of patterns
        're.match(r"^[0-9]+$", x)\n'            # 7: literal
        "re.match(names.PLAIN, x)\n"            # 8: string constant
        "NAME.fullmatch(x)\n"                   # fine
        're.match(r"^[0-9]+", x)\n'             # fine: a prefix on purpose
        're.match(r"^[0-9]+\\$", x)\n')         # fine: a literal dollar sign
    assert _offenders({"names.py": names, "use.py": use}) == [
        "use.py:4", "use.py:5", "use.py:6", "use.py:7", "use.py:8"]
