"""The exception family of :mod:`analysis`; the ``sage`` CLI prints any of them as one line.

``analysis`` is a library that works without ``sage_core`` (and the other way round), so it has
its own root; the orchestrator names both roots once (``sweeps.cli.user_errors()``). See
``sage_core.errors`` for why the project keeps two roots and one "did you mean".
"""

from __future__ import annotations

__all__ = ["AnalysisError", "StoreError", "QueryError", "UnknownNameError"]


class AnalysisError(Exception):
    """Root of every error raised on purpose by :mod:`analysis`."""


class StoreError(AnalysisError):
    """The results store cannot be written or read (bad row, corrupt file, bad root)."""


class QueryError(AnalysisError):
    """A query is malformed or refused (unknown column, non-read-only SQL, no data)."""


class UnknownNameError(QueryError):
    """A metric, column or parameter name is not known; the message lists close matches."""
