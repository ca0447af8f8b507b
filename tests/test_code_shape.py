"""The code's shape, checked: no function in src/ longer than 60 lines (a hard rule of the project: a function
that long does several things, and each deserves a name)."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

LIMIT = 60


def long_functions(root: Path = REPO / "src", limit: int = LIMIT) -> list[str]:
    """`path:line name (n lines)` of every function or method under `root` over `limit` lines, decorators and
    docstring included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_src_is_over_60_lines():
    too_long = long_functions()
    assert not too_long, f"functions over {LIMIT} lines (split them into named steps):\n" + "\n".join(too_long)


def test_the_check_finds_a_long_function_and_a_method_and_passes_a_60_line_one(tmp_path):
    body, indented = ("\n".join(f"{pad}x{i} = {i}" for i in range(58)) for pad in (" " * 4, " " * 8))
    (tmp_path / "src").mkdir()
    (tmp_path / "src/m.py").write_text(f"def long():\n{body}\n    x = 0\n    return x\n\n\n"
                                       f"def short():\n{body}\n    return 0\n\n\n"
                                       f"class C:\n    @staticmethod\n    def method():\n{indented}\n        return 0\n")
    # the method's 61 lines: its decorator, its def, 58 assignments and its return
    assert long_functions(tmp_path / "src") == ["src/m.py:1 long (61 lines)", "src/m.py:128 method (61 lines)"]
