"""The code of one pytest test, as far as it can be read statically: its function, the module
helpers, constants and fixtures it uses, transitively, including those imported from the tests
package (conftest.py, tests/support) and fixtures of the conftest.py files above it. Used by
tests/test_docs_commands.py to check that a test named by a `not run` marker runs the command."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPLIT = re.compile(r"[\s/=:,;'\"()\[\]{}|]+")


@cache
def _module(path: Path) -> tuple[dict[str, ast.AST], dict[str, tuple[Path, str]]]:
    """Module-level definitions by name, and names imported from the tests package."""
    tree = ast.parse(path.read_text())
    defs: dict[str, ast.AST] = {}
    imports: dict[str, tuple[Path, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defs[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        defs[name.id] = node
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(path, node.module or "", node.level)
            if base is not None:
                for alias in node.names:
                    imports[alias.asname or alias.name] = (base, alias.name)
    return defs, imports


def _resolve(path: Path, module: str, level: int) -> Path | None:
    """The file of a relative import (or `tests.x`) inside this repository, if it is one."""
    if level:
        base = path.parent
        for _ in range(level - 1):
            base = base.parent
    elif module.startswith("tests."):
        base = ROOT
    else:
        return None
    target = base.joinpath(*module.split(".")) if module else base
    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _conftests(path: Path) -> list[Path]:
    found = []
    for parent in path.parents:
        if (parent / "conftest.py").is_file():
            found.append(parent / "conftest.py")
        if parent == ROOT:
            break
    return found


def find_test(path: Path, name: str) -> ast.FunctionDef | None:
    node = _module(path)[0].get(name)
    return node if isinstance(node, ast.FunctionDef) else None


def code_words(path: Path, name: str) -> set[str]:
    """Every word of every string literal in the test's code (see the module docstring)."""
    return _read(path, name)[0]


def code_names(path: Path, name: str) -> set[str]:
    """Every name the test's code uses (functions, constants, fixtures), transitively."""
    return _read(path, name)[1]


@cache
def _read(path: Path, name: str) -> tuple[set[str], set[str]]:
    words: set[str] = set()
    names: set[str] = set()
    seen: set[tuple[Path, str]] = set()
    todo = [(path, name)]
    while todo:
        where, what = todo.pop()
        if (where, what) in seen:
            continue
        seen.add((where, what))
        names.add(what)
        defs, imports = _module(where)
        if what in imports:
            todo.append(imports[what])
            continue
        node = defs.get(what)
        if node is None:  # a fixture of a conftest.py above
            todo += [(c, what) for c in _conftests(where) if what in _module(c)[0]]
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                words.add(sub.value.strip())
                words.update(w for w in SPLIT.split(sub.value) if w)
            elif isinstance(sub, ast.Attribute) and sub.attr == "executable":
                words.add("sys.executable")  # the interpreter: `python` in the docs
            elif isinstance(sub, ast.Name):
                todo.append((where, sub.id))
            elif isinstance(sub, ast.arg):  # fixtures by parameter name
                todo.append((where, sub.arg))
    return words, names
