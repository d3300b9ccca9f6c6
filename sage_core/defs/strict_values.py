"""What every settings model refuses, in one place.

- :data:`STRICT_MODEL` is the pydantic configuration of every settings model (``TrainConfig``,
  ``EvalConfig``, ``ProximalConfig``, ``RobustConfig``, ``ImageRobustConfig``, the sweep spec and
  its search-space dimensions): unknown keys are errors, models are frozen, and NaN and the
  infinities are refused wherever a number is accepted (float fields, and floats inside lists,
  tuples and mappings; ``--set probe_l2=inf`` as much as YAML ``.inf``). An infinite setting has
  no meaning anywhere: it silently degrades what it feeds (an infinite L2 weight fits a zero probe,
  whose AUC of 0.5 reads as "fully erased"). A test checks every model of the packages uses it.
- :data:`MAX_SEED`: seeds end up in ``torch.Generator.manual_seed`` and NumPy, which take 64-bit
  and 32-bit seeds; a larger one would fail only after the models have loaded.
- :func:`check_value`, for the scalars pydantic's lax mode lets through (``TrainConfig`` and
  ``SweepSpec``): a boolean is not a number (YAML ``epochs: true`` would otherwise become ``1``,
  and ``lr: yes`` ``1.0``); an empty string is not a path (``encoder=`` would otherwise mean the
  current folder).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import ConfigDict

__all__ = ["STRICT_MODEL", "MAX_SEED", "is_numeric_annotation", "check_value"]

STRICT_MODEL = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
MAX_SEED = 2**32 - 1


def is_numeric_annotation(annotation: Any) -> bool:
    """True for int/float fields and containers of them (``int | None``, ``tuple[float, float]``),
    False when the field also accepts booleans or is not numeric."""
    if annotation in (int, float):
        return True
    if annotation is bool or typing.get_origin(annotation) is typing.Literal:
        return False
    args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
    if not args or bool in args:
        return False
    origin = typing.get_origin(annotation)
    if origin in (dict, typing.Mapping) or (isinstance(origin, type) and issubclass(origin, dict)):
        args = args[1:]  # the values, not the keys
    return any(is_numeric_annotation(a) for a in args if a is not type(None))


def _bools(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, bool) for v in value)
    if isinstance(value, dict):
        return any(isinstance(v, bool) for v in value.values())
    return False


def check_value(name: str, value: Any, *, annotation: Any, path: bool = False, named: bool = True) -> Any:
    """``value`` unchanged, or ``ValueError`` (named ``name=value: ...`` when ``named``)."""
    prefix = f"{name}={value!r}: " if named else ""
    if is_numeric_annotation(annotation) and _bools(value):
        raise ValueError(f"{prefix}a boolean (true/false) is not a number; write a number")
    if path and isinstance(value, str) and not value.strip():
        raise ValueError(f"{prefix}an empty string is not a path; give a file, a folder or a built-in name")
    return value


