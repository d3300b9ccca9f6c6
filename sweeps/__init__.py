"""sage-sweeps orchestration: sweep specs, search, the Pareto scheduler, the trial, the CLI.

Python API first: ``sweeps.run(spec)``, ``sweeps.resume(dir)``, ``sweeps.sweep_status(dir)``,
``sweeps.request_stop(dir)``, ``sweeps.load_spec(name_or_path)``. Ray is imported only when a sweep runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run", "resume", "sweep_status", "request_stop", "load_spec", "validate_spec"]


def __getattr__(name: str) -> Any:
    if name in ("run", "resume"):
        from . import runner  # lazy: ray (~0.8 s): `import sweeps` stays light until sweeps.run/resume

        return getattr(runner, name)
    if name in ("sweep_status", "request_stop"):
        from . import status as _status  # lazy: pyarrow (~0.2 s): `import sweeps` stays light until sweep_status

        return getattr(_status, name)
    if name in ("load_spec", "validate_spec"):
        from . import spec  # lazy: pydantic + yaml (~0.1 s): `import sweeps` stays light until load_spec

        return getattr(spec, name)
    raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
