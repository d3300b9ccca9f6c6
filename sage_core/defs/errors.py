"""One exception family, one "did you mean" helper and one validation-error formatter.

The CLI turns any :class:`SageError` into a one-line message and a non-zero exit; messages
name the field, the bad value and what is allowed, and say what to do next.

Every package raises these: ``sage_core``, ``sweeps`` and ``analysis`` (which may import
:mod:`sage_core.defs` and nothing else of ``sage_core``). ``analysis``'s errors are the
:class:`AnalysisError` branch; a store, cache or checkpoint that cannot be read or written is a
:class:`StorageError` wherever it happens.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["SageError", "ConfigError", "DataError", "ModelError", "StorageError", "TrialError",
           "NonFiniteLossError", "AnalysisError", "QueryError", "UnknownNameError", "FieldProblem", "did_you_mean",
           "unknown_name", "format_validation_error"]


class SageError(Exception):
    """Root of every error sage-sweeps raises on purpose."""


class ConfigError(SageError, ValueError):
    """A configuration value is missing, unknown, out of range or inconsistent."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class DataError(SageError, ValueError):
    """A prompt file or data set cannot be used (missing, wrong columns, empty)."""


class ModelError(SageError):
    """A model folder is missing or does not hold what it should."""


class StorageError(SageError):
    """A result store, cache or checkpoint location cannot be read or written (a bad row, a corrupt
    file, a bad root)."""


class TrialError(SageError):
    """A training run failed for a reason worth reporting (as opposed to a bug)."""


class NonFiniteLossError(TrialError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class AnalysisError(SageError):
    """Raised on purpose by :mod:`analysis` about a query (see :class:`QueryError`)."""


class QueryError(AnalysisError):
    """A query is malformed or refused (unknown column, non-read-only SQL, no data)."""


class UnknownNameError(QueryError):
    """A metric, column or parameter name is not known; the message lists close matches."""


class FieldProblem(ValueError):
    """Raised by a validator about the value it checks, without naming it: the formatter writes
    ``field=value: message``. (A plain ``ValueError`` from a validator is shown as written, so it
    names the field itself.)"""


def did_you_mean(name: object, known: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``known`` to ``name`` (up to ``n``), else ``""``."""
    close = difflib.get_close_matches(str(name), list(known), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def unknown_name(*, kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build (not raise) the error for an unknown ``name`` among ``known``."""
    known = sorted(set(known))
    listing = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
    return UnknownNameError(f"unknown {kind} {name!r}{did_you_mean(name, known, n=3, cutoff=0.5)}; known: {listing}")


# A model with at most this many fields lists them after an unknown key; a longer list is noise
# (its fields are documented, e.g. `sage train --show-config`).
_LIST_FIELDS_UP_TO = 20


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """``ImageStage | None`` / ``list[Objective]`` -> the model inside, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _owner(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, Any]:
    """The model that holds the last part of ``loc``, and that part's FieldInfo there (or None)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is not None:
            model = _submodel(field.annotation)
    if model is None or not loc:
        return model, None
    return model, model.model_fields.get(str(loc[-1]))


def _where(loc: tuple[Any, ...]) -> str:
    """``("objectives", 0, "metric")`` -> ``objectives[0].metric``; a dict key's own check
    (``[key]``) and a union tag repeating the field (``uniform.uniform``) are not shown twice."""
    out = ""
    for part in loc:
        if part == "[key]" or (out and out.rsplit(".", 1)[-1] == str(part)):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown_key(loc: tuple[Any, ...], *, model: type[BaseModel] | None, known: Iterable[str] | None,
                 what: str) -> str:
    owner, _ = _owner(model, loc)
    fields = list(owner.model_fields) if owner is not None else list(known or ())
    key = str(loc[-1])
    hint = did_you_mean(key, fields)
    # a model may say where an unknown key probably belongs (class attribute ``unknown_key_hint``)
    owner_hint = getattr(owner, "unknown_key_hint", None)
    if not hint and owner_hint:
        hint = f" ({owner_hint.format(key=key)})"
    line = f"unknown {what} '{_where(loc)}'{hint}"
    return f"{line}; allowed: {', '.join(fields)}" if 0 < len(fields) <= _LIST_FIELDS_UP_TO else line


def format_validation_error(exc: ValidationError, *, model: type[BaseModel] | None = None,
                            known: Iterable[str] | None = None, what: str = "key", where: str = "") -> list[str]:
    """One readable line per problem, each naming the field, the bad value and what is allowed.

    ``model``: the validated model, walked for the fields of nested ones (unknown keys get "did
    you mean" among their siblings; a missing field shows its ``examples``); ``known``: the valid
    names of a flat model instead. A plain ``ValueError`` of a validator is shown as written
    (" | " separates several); anything else as ``field=value: message``. ``where``: the path of
    the model in a larger file (``fidelity.robust``), put in front of every field named.
    """
    lines = _lines(exc, model=model, known=known, what=what)
    if not where:
        return lines
    unknown = f"unknown {what} '"
    return [f"{unknown}{where}.{line[len(unknown):]}" if line.startswith(unknown) else f"{where}.{line}"
            for line in lines]


def _lines(exc: ValidationError, *, model: type[BaseModel] | None, known: Iterable[str] | None,
           what: str) -> list[str]:
    lines: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _where(loc)
        msg = err["msg"].removeprefix("Value error, ")
        error = (err.get("ctx") or {}).get("error")
        if err["type"] == "extra_forbidden":
            lines.append(_unknown_key(loc, model=model, known=known, what=what))
        elif err["type"] == "missing":
            _, field = _owner(model, loc)
            example = f", e.g. {field.examples[0]}" if field is not None and field.examples else ""
            lines.append(f"{where}: required{example}")
        elif err["type"] == "value_error" and not isinstance(error, FieldProblem):
            lines.extend(part.strip() for part in msg.split(" | "))
        elif "[key]" in loc or not where:
            lines.extend(f"{where}: {part.strip()}" if where else part.strip() for part in msg.split(" | "))
        else:
            lines.append(f"{where}={err.get('input')!r}: {msg}")
    return lines
