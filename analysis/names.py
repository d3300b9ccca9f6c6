"""Answering unknown names with "did you mean" (shared by the metric registry and the queries).

:func:`did_you_mean` is the project's one helper (``sage_core.errors.did_you_mean``) written
again here, because ``analysis`` never imports ``sage_core`` (see that module's docstring); a
test runs both on the same cases, so the two cannot drift apart.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from analysis.errors import UnknownNameError

__all__ = ["did_you_mean", "unknown_name"]


def did_you_mean(name: object, known: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``known`` to ``name`` (up to ``n``), else ``""``."""
    close = difflib.get_close_matches(str(name), list(known), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def unknown_name(*, kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build (not raise) the error for an unknown ``name`` among ``known``."""
    known = sorted(set(known))
    listing = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
    return UnknownNameError(f"unknown {kind} {name!r}{did_you_mean(name, known, n=3, cutoff=0.5)}; known: {listing}")
