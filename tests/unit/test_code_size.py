"""No function in ``eo_fusion/`` is longer than about a screen (issue 10, "habits").

ruff's C901/PLR0912/PLR0915 (pyproject.toml) bound complexity and statements; this bounds the
plain length, docstring and comments included, which those rules do not see. A function that
trips it is split into named steps, not exempted.
"""

from __future__ import annotations

import ast
from pathlib import Path

#: Lines from ``def`` to the function's last line (decorators not counted).
MAX_FUNCTION_LINES = 60


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, length)`` of every function in ``source`` over ``limit``.

    Nested functions and methods are measured on their own, named ``outer.inner``.
    """
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    length = (child.end_lineno or child.lineno) - child.lineno + 1
                    if length > limit:
                        found.append((name, child.lineno, length))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _function(name: str, lines: int, indent: str = "") -> str:
    """Source of a function ``lines`` long (``def`` line included)."""
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 1))
    return f"{indent}def {name}():\n{body}"


def test_the_measure_counts_def_to_last_line_and_names_nested_functions() -> None:
    src = (
        _function("short", 60)  # exactly the limit: allowed
        + "class K:\n"
        + _function("long", 61, indent="    ")
        + "def outer():\n"
        + _function("inner", 61, indent="    ")
        + "    return inner\n"
    )
    found = {(name, line, length) for name, line, length in long_functions(src)}
    assert found == {("K.long", 62, 61), ("outer.inner", 124, 61), ("outer", 123, 63)}


def test_no_function_in_the_package_is_longer_than_60_lines(repo_root: Path) -> None:
    package = repo_root / "eo_fusion"
    offenders = [
        f"{path.relative_to(repo_root)}:{line} {name} ({length} lines)"
        for path in sorted(package.rglob("*.py"))
        for name, line, length in long_functions(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, (
        f"functions longer than {MAX_FUNCTION_LINES} lines (split them into named steps):\n  "
        + "\n  ".join(offenders)
    )
