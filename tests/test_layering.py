"""`sage_core` is a library: importable and usable with ray, optuna, duckdb and our orchestration blocked."""

import subprocess
import sys
import textwrap

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
