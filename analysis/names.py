"""Answering unknown names with "did you mean" (shared by the metric registry and the queries)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from analysis.errors import UnknownNameError

__all__ = ["unknown_name"]


def unknown_name(*, kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build (not raise) the error for an unknown ``name`` among ``known``."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
    return UnknownNameError(f"unknown {kind} {name!r}{hint} (known: {listing})")
