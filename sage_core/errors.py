"""One exception family for everything a user can get wrong or a run can hit.

The CLI turns any :class:`SageError` into a one-line message and a non-zero exit; messages
name the field, the bad value and what is allowed, and say what to do next.
"""

from __future__ import annotations

__all__ = ["SageError", "ConfigError", "DataError", "ModelError", "StorageError", "TrialError",
           "NonFiniteLossError"]


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
    """A result store, cache or checkpoint location cannot be read or written."""


class TrialError(SageError):
    """A training run failed for a reason worth reporting (as opposed to a bug)."""


class NonFiniteLossError(TrialError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
