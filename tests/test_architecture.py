"""The size limits of ARCHITECTURE.md: no class over 600 lines, no function over 80 (docstrings
not counted). The import layers and the no-cycle rule are checked by lint-imports (scripts/test),
private access across modules by ruff's SLF001."""

import ast
from pathlib import Path
from typing import List

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vuer_sync"
MAX_CLASS, MAX_FUNCTION = 600, 80


def _docstring_lines(node: ast.AST) -> int:
    body = getattr(node, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0].end_lineno - body[0].lineno + 1
    return 0


def _length(node: ast.AST) -> int:
    docs = sum(_docstring_lines(n) for n in ast.walk(node)
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))
    return node.end_lineno - node.lineno + 1 - docs


def _too_long() -> List[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_FUNCTION
            else:
                continue
            n = _length(node)
            if n > limit:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} "
                             f"{node.name}: {n} lines (limit {limit})")
    return found


def test_no_class_over_600_lines_and_no_function_over_80():
    too_long = _too_long()
    if too_long:
        pytest.fail("split these (docstrings are not counted):\n" + "\n".join(too_long))
