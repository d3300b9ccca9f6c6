"""Every import that runs inside a function (a method, a nested function, a PEP 562 `__getattr__`) in
sage_core, sweeps and analysis says on its line why it is there: `# lazy: <dependency> ...`, the heavy
dependency (torch, Ray, DuckDB, ...) it keeps off a light path. An import that needs no such reason
belongs at module level. Imports under `if TYPE_CHECKING:` never run and are not counted."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sage_core", "sweeps", "analysis")
MARKER = re.compile(r"#\s*lazy:\s*\S")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _function_imports(node: ast.AST, in_function: bool = False):
    """The Import/ImportFrom nodes below `node` whose nearest enclosing scope is a function, skipping
    `if TYPE_CHECKING:` bodies (their `else:` branch runs and is kept)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            if in_function:
                yield child
        elif isinstance(child, ast.If) and _is_type_checking(child):
            for branch in child.orelse:
                yield from _function_imports(ast.Module(body=[branch], type_ignores=[]), in_function)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _function_imports(child, True)
        elif isinstance(child, ast.ClassDef):
            yield from _function_imports(child, False)
        else:
            yield from _function_imports(child, in_function)


def unexplained(source: str, where: str) -> list[str]:
    """One line per in-function import of `source` whose first line lacks the `# lazy:` reason."""
    lines = source.splitlines()
    return [f"{where}:{n.lineno}: {lines[n.lineno - 1].strip()}"
            for n in _function_imports(ast.parse(source)) if not MARKER.search(lines[n.lineno - 1])]


def test_every_in_function_import_says_which_heavy_dependency_it_keeps_off_a_light_path():
    found, seen = [], 0
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            seen += len(list(_function_imports(ast.parse(source))))
            found += unexplained(source, path.relative_to(ROOT).as_posix())
    assert seen > 100  # the walk reaches the lazy imports (127 when written: torch, Ray, DuckDB, ...)
    assert found == [], f"{len(found)} in-function imports without '# lazy: <why>':\n" + "\n".join(found)


def test_the_reason_check_flags_bare_in_function_imports_and_passes_explained_ones():
    """The check above can fail: bare imports in a function, a method, a nested function and a PEP 562
    `__getattr__` are named; explained ones, module-level ones, class-body ones and those under
    `if TYPE_CHECKING:` are not, while the `else:` branch of such a block is still checked."""
    source = "\n".join([
        "import os",
        "from typing import TYPE_CHECKING",
        "if TYPE_CHECKING:",
        "    import torch",
        "def f():",
        "    import json",
        "    import torch  # lazy: torch off the CLI's light path",
        "    from ray import tune",
        "    if TYPE_CHECKING:",
        "        import numpy",
        "    else:",
        "        import scipy",
        "class C:",
        "    import re",
        "    def m(self):",
        "        from duckdb import connect",
        "        def inner():",
        "            import pyarrow  # lazy: pyarrow, read only when asked",
        "            import optuna",
        "def __getattr__(name):",
        "    from . import heavy",
        "    from . import other  #  lazy:ray",
        "    from . import empty  # lazy:",
    ])
    assert unexplained(source, "m.py") == [
        "m.py:6: import json", "m.py:8: from ray import tune", "m.py:12: import scipy",
        "m.py:16: from duckdb import connect", "m.py:19: import optuna", "m.py:21: from . import heavy",
        "m.py:23: from . import empty  # lazy:"]
