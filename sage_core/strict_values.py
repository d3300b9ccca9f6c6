"""Scalar checks pydantic's lax mode lets through, shared by ``TrainConfig`` and ``SweepSpec``.

- A boolean is not a number: YAML ``epochs: true`` would otherwise become ``1``, and
  ``lr: yes`` ``1.0``.
- An empty string is not a path: ``encoder=`` would otherwise mean the current folder.

(NaN and infinities are refused by ``allow_inf_nan=False`` on the models themselves.)
"""

from __future__ import annotations

import typing
from typing import Any

__all__ = ["is_numeric_annotation", "check_value"]


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


