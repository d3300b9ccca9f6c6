"""The layering: `sage_core` is a library, importable and usable with ray, optuna, duckdb and our
orchestration blocked; its shared definitions (`sage_core.defs`) import neither torch nor Ray and are
all `analysis` takes from it; and no import cycle, not even through an import inside a function."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx  # a dependency of torch

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {blocked!r}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {{name}}")
            return None
    sys.meta_path.insert(0, Block())
""")


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    out = {}
    for pkg in packages:
        for path in (root / pkg).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(node: ast.AST, *, name: str, is_pkg: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return [mod] + [f"{mod}.{a.name}" for a in node.names]  # `from pkg import mod` imports pkg.mod


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = ("sage_core", "sweeps", "analysis")) -> nx.DiGraph:
    """module -> the project modules it imports anywhere in its source (the deepest module a
    dotted name names; `import a.b` is an edge to a.b, not to the package a)."""
    modules = _modules(root, packages)
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in skip:
                continue
            targets = _imported(node, name=name, is_pkg=path.name == "__init__.py")
            for target in targets if isinstance(node, ast.Import) else targets[1:]:
                parts = target.split(".")
                while parts and ".".join(parts) not in modules:
                    parts.pop()
                if parts and ".".join(parts) != name:
                    graph.add_edge(name, ".".join(parts))
    return graph


def run_blocked(blocked: set[str], body: str) -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=sorted(blocked)) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_sage_core_never_needs_ray_optuna_duckdb_or_the_orchestrator():
    res = run_blocked({"ray", "optuna", "duckdb", "analysis", "sweeps"}, """
        import pkgutil, importlib, sage_core, torch
        for mod in pkgutil.walk_packages(sage_core.__path__, "sage_core."):
            importlib.import_module(mod.name)
        from sage_core.losses import spread
        print("ok", float(spread(torch.eye(3))))
    """)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().startswith("ok")


def test_shared_definitions_import_neither_torch_nor_ray_nor_the_rest_of_sage_core():
    res = run_blocked({"torch", "ray", "transformers", "diffusers", "deepspeed", "optuna", "duckdb", "analysis",
                       "sweeps"}, """
        import pkgutil, importlib, sys, sage_core.defs
        for mod in pkgutil.walk_packages(sage_core.defs.__path__, "sage_core.defs."):
            importlib.import_module(mod.name)
        from sage_core.defs.config import TrainConfig, field_defaults
        from sage_core.defs.metrics import direction
        assert TrainConfig().lambda_esp == field_defaults()["lambda_esp"] and direction("util_sib") == "maximize"
        print(sorted(m for m in sys.modules if m.split(".")[0] == "sage_core"))
    """)
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = eval(res.stdout.strip())  # a printed list of module names
    assert "sage_core.defs.config" in loaded
    assert [m for m in loaded if m != "sage_core" and not m.startswith("sage_core.defs")] == []


def test_analysis_imports_of_sage_core_only_the_shared_definitions():
    res = run_blocked({"torch", "ray", "sweeps", "transformers", "diffusers", "deepspeed"}, """
        import pkgutil, importlib, sys, analysis
        for mod in pkgutil.walk_packages(analysis.__path__, "analysis."):
            importlib.import_module(mod.name)
        print(sorted(m for m in sys.modules if m.split(".")[0] == "sage_core"))
    """)
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = eval(res.stdout.strip())
    assert "sage_core.defs.metrics" in loaded
    assert [m for m in loaded if m != "sage_core" and not m.startswith("sage_core.defs")] == []
    # the same for imports inside functions, which an import does not run
    graph = import_graph()
    outside = sorted((a, b) for a, b in graph.edges if a.split(".")[0] == "analysis" and b.split(".")[0] != "analysis"
                     and not b.startswith("sage_core.defs"))
    assert outside == []


# None left (the last two went into sweeps/cli/common.py and analysis/report_parts.py).
REMAINING_CYCLES: tuple[set[str], ...] = ()


def test_the_import_graph_has_no_cycle():
    """Module-level and in-function imports alike (``if TYPE_CHECKING:`` blocks excepted: they never run)."""
    graph = import_graph()
    assert graph.number_of_nodes() > 100 and graph.has_edge("sage_core.trainer", "sage_core.losses")
    assert graph.has_edge("sweeps.evaluate", "sage_core.encoders")  # an in-function import counts
    new = [c for c in nx.simple_cycles(graph) if set(c) not in REMAINING_CYCLES]
    assert new == []


def test_the_cycle_check_sees_a_lazy_cycle(tmp_path):
    """The check above can fail: a cycle closed by an in-function import is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    graph = import_graph(root=tmp_path, packages=("pkg",))
    assert [sorted(c) for c in nx.simple_cycles(graph)] == [["pkg.a", "pkg.b"]]  # not pkg.c: TYPE_CHECKING
