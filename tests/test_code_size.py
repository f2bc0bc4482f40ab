"""Size limits of issue 22: no file in pkdn_edge/, train/ or export/ over 600 lines, no function over
100 lines.

Parsed with ``ast`` (nothing is imported). A function's length is its span in the file, from its
``def`` line (decorators not counted) to its last line, docstring and comments included; nested
functions and methods are measured on their own as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("pkdn_edge", "train", "export")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 100


def python_files() -> list[Path]:
    """Every ``.py`` under the three folders, sorted."""
    return sorted(f for d in FOLDERS for f in (ROOT / d).rglob("*.py"))


def file_lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length) of each function in ``path`` longer than ``limit``."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}."
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = child.end_lineno - child.lineno + 1
                if length > limit:
                    out.append((name[:-1], child.lineno, length))
            visit(child, name)

    visit(tree, "")
    return out


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_checks_see_the_project():
    files = python_files()
    assert len(files) > 50
    assert ROOT / "pkdn_edge" / "webcam.py" in files


def test_long_function_is_measured(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(101))
    src = tmp_path / "m.py"
    src.write_text(f"class A:\n    def f(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n\n"
                   "def short():\n    return 1\n")
    assert long_functions(src) == [("A.f", 2, 102)]


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_file_over_600_lines(folder):
    over = [f"{_rel(f)}: {n} lines" for f in python_files()
            if f.relative_to(ROOT).parts[0] == folder and (n := file_lines(f)) > MAX_FILE_LINES]
    assert not over, "files over 600 lines:\n" + "\n".join(over)


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_function_over_100_lines(folder):
    over = [f"{_rel(f)}:{line} {name}: {n} lines" for f in python_files()
            if f.relative_to(ROOT).parts[0] == folder for name, line, n in long_functions(f)]
    assert not over, "functions over 100 lines:\n" + "\n".join(over)
