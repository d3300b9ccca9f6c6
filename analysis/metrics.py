"""Metric directions: every metric the store can hold says whether lower or higher is better.

Exact names win over prefix rules, and the longest matching prefix wins among the rules, so
``tifa_drop`` minimises while ``tifa_color`` maximises and ``asr_text_sneaky`` minimises.
Multi-objective code turns every objective into minimisation with :func:`sign`:
``a = sign(name) * value`` (``+1`` for "minimize", ``-1`` for "maximize").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from analysis.names import unknown_name

__all__ = ["Direction", "EXACT", "PREFIXES", "direction", "sign", "is_metric", "metric_columns"]

Direction = Literal["minimize", "maximize"]

EXACT: dict[str, Direction] = {
    "asr": "minimize",  # image-level attack success rate, mean of the attack sets
    "asr_text": "minimize",  # text-level proxy
    "tifa": "maximize",
    "tifa_drop": "minimize",  # (base - x) / base
    "util_text": "maximize",
    "clipscore": "maximize",
    "fid": "minimize",
    "geneval": "maximize",
    "spread_ratio": "maximize",  # R_s; the base model is 1
    "jaccard": "maximize",
    "distortion_abs": "minimize",
    "distortion_rel": "minimize",
    "distortion_pearson": "maximize",
    "distortion_spearman": "maximize",
    "loss": "minimize",
}

# (prefix, direction): asr_<set>, asr_text_<set>, tifa_<category>, util_text_<category>, ...
PREFIXES: tuple[tuple[str, Direction], ...] = (
    ("asr_text_", "minimize"),
    ("asr_", "minimize"),
    ("tifa_", "maximize"),
    ("util_text_", "maximize"),
    ("jaccard_", "maximize"),
    ("clipscore_", "maximize"),
    ("fid_", "minimize"),
    ("loss_", "minimize"),
)


def _lookup(name: str) -> Direction | None:
    if name in EXACT:
        return EXACT[name]
    best: tuple[int, Direction] | None = None
    for prefix, d in PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            if best is None or len(prefix) > best[0]:
                best = (len(prefix), d)
    return best[1] if best else None


def is_metric(name: str) -> bool:
    """True when ``name`` has a declared direction (exactly or by a prefix rule)."""
    return _lookup(name) is not None


def direction(name: str) -> Direction:
    """The declared direction of metric ``name``; unknown names raise with "did you mean"."""
    d = _lookup(name)
    if d is None:
        raise unknown_name(kind="metric", name=name, known=[*EXACT, *(p + "*" for p, _ in PREFIXES)])
    return d


def sign(name: str) -> int:
    """``+1`` for a minimised metric, ``-1`` for a maximised one (objective = sign * value)."""
    return 1 if direction(name) == "minimize" else -1


def metric_columns(columns: Iterable[str]) -> list[str]:
    """The columns among ``columns`` that are metrics, in their given order."""
    return [c for c in columns if is_metric(c)]
