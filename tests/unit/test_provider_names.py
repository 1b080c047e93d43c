"""No provider's name outside its package and the simulator: the rest asks capabilities.

The test walks the syntax tree of every module under `daemon/` except the provider packages
(`daemon/providers/`) and `daemon/simulator/`, and looks at string literals (not docstrings or
comments) and names (variables, attributes, functions, classes, arguments, imports).
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

from daemon.registry import BUILTIN

DAEMON = Path(__file__).resolve().parents[2] / "daemon"
_ALTERNATIVES = "|".join(spec.name for spec in BUILTIN)
# In a name, anywhere (`need_seeweb`); in text, as a word of its own: `k8sgpu_cluster`, the
# rule-file key, is not a provider's name in a message.
IN_NAME = re.compile(_ALTERNATIVES, re.I)
IN_TEXT = re.compile(rf"(?<![a-z0-9_])({_ALTERNATIVES})(?![a-z0-9_])", re.I)
# Each exception says why the name is not a provider's business to change.
ALLOWED = {
    ("rules/schema.py", "k8sgpu_cluster"): "the budget scope key users write in rule files",
    ("rules/kinds.py", "k8sgpu_cluster"): "reads that rule-file key",
    ("observability/metrics.py", "cloudpilot_k8sgpu_pods"): "a series dashboards already use",
}
# Files whose every literal may name providers, and why.
ALLOWED_FILES: dict[str, str] = {}


def _docstrings(tree: ast.AST) -> set[int]:
    """Return the ids of the docstring nodes in a module, attribute docstrings included."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or not body:
            continue
        first = body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            found.add(id(first.value))
        for before, after in itertools.pairwise(body):
            if (
                isinstance(before, ast.Assign | ast.AnnAssign)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
            ):
                found.add(id(after.value))
    return found


def _words(tree: ast.AST) -> Iterator[tuple[int, str, re.Pattern[str]]]:
    """Yield (line, text, pattern) for every literal and name in a module, docstrings aside."""
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        line: int = getattr(node, "lineno", 0)
        text: str | None = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in skip:
                yield line, node.value, IN_TEXT
            continue
        if isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            text = node.name
        elif isinstance(node, ast.arg | ast.keyword):
            text = node.arg
        elif isinstance(node, ast.alias):
            text = node.asname or node.name
        elif isinstance(node, ast.ImportFrom):
            text = node.module
        if text:
            yield line, text, IN_NAME


def provider_names(root: Path, path: Path) -> list[str]:
    """Return `file:line: text` for every provider name in a module's code."""
    relative = path.relative_to(root).as_posix()
    if relative in ALLOWED_FILES:
        return []
    return [
        f"{relative}:{line}: {text!r}"
        for line, text, pattern in _words(ast.parse(path.read_text(encoding="utf-8")))
        if (relative, text) not in ALLOWED and pattern.search(text)
    ]


def _outside_the_packages() -> Iterator[Path]:
    apart = [DAEMON / "simulator", DAEMON / "providers"]
    for path in sorted(DAEMON.rglob("*.py")):
        if not any(path.is_relative_to(folder) for folder in apart):
            yield path


def test_no_provider_name_outside_its_package_and_the_simulator() -> None:
    found = [hit for path in _outside_the_packages() for hit in provider_names(DAEMON, path)]
    assert found == []


def test_the_walk_finds_names_in_code_and_not_in_docstrings(tmp_path: Path) -> None:
    module = tmp_path / "policy.py"
    module.write_text(
        '"""Docstrings may say Seeweb."""\n'
        'SOURCE_OF = {"glesys": "x"}\n'
        '"""Nor may an attribute docstring: seeweb."""\n'
        "def use(client):\n"
        "    return client.need_seeweb()\n"
    )
    assert provider_names(tmp_path, module) == [
        "policy.py:2: 'glesys'",
        "policy.py:5: 'need_seeweb'",
    ]


def test_every_exception_is_still_needed() -> None:
    for file, text in ALLOWED:
        words = {word for _, word, _ in _words(ast.parse((DAEMON / file).read_text()))}
        assert text in words, f"{file} no longer writes {text!r}: drop it from ALLOWED"
    for file in ALLOWED_FILES:
        assert IN_TEXT.search((DAEMON / file).read_text()), f"drop {file} from ALLOWED_FILES"
