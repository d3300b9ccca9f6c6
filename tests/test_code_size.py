"""Size limits of the project's own Python: no module over 400 lines, no function (methods and
nested functions included) over 60, in the packages, the benchmarks, the tools and the tests."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("sage_core", "sweeps", "analysis", "bench", "tools", "tests")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(root: Path = ROOT, folders: tuple[str, ...] = FOLDERS) -> list[str]:
    """One line per module over the module limit and per function over the function limit."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            where = path.relative_to(root).as_posix()
            if (n := len(text.splitlines())) > MAX_MODULE_LINES:
                found.append(f"{where}: {n} lines (module)")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        found.append(f"{where}:{node.lineno} {node.name}: {n} lines (function)")
    return found


def test_no_module_over_400_lines_and_no_function_over_60():
    assert oversized() == []


def test_the_size_check_sees_long_modules_methods_and_nested_functions(tmp_path):
    """The check above can fail: a 401-line module, a 61-line method and a 61-line nested function (and
    its 63-line parent) are named; a 400-line module and a 60-line function are not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "        y = 1\n" * 60
    (pkg / "long.py").write_text("x = 1\n" * 401)
    (pkg / "method.py").write_text(f"class C:\n    def m(self):\n{body}")
    (pkg / "nested.py").write_text(f"def outer():\n    def inner():\n{body}    return inner\n")
    (pkg / "fits.py").write_text("def f():\n" + "    a = 1\n" * 59 + "x = 1\n" * 340)
    assert sorted(oversized(root=tmp_path, folders=("pkg",))) == [
        "pkg/long.py: 401 lines (module)", "pkg/method.py:2 m: 61 lines (function)",
        "pkg/nested.py:1 outer: 63 lines (function)", "pkg/nested.py:2 inner: 61 lines (function)"]
