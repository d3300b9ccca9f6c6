"""Text-level proxies against image-level truth on the same checkpoints (Spearman rank correlation).

A proxy is useful for early stopping when it ranks trials as the image-level metric does; the
sign expected is +1 for every pair below (both members point the same way).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from .metrics import spearman

__all__ = ["CALIBRATION_PAIRS", "METRIC_DIRECTIONS", "calibration_report"]

#: (text-level proxy, image-level metric) compared by :func:`calibration_report`.
CALIBRATION_PAIRS: tuple[tuple[str, str], ...] = (
    ("asr_text", "asr"), ("util_text", "tifa"), ("spread_ratio", "tifa"), ("jaccard", "tifa"),
    ("util_text", "clipscore"),
)

#: Declared direction of each metric family ("max" = higher is better).
METRIC_DIRECTIONS: dict[str, str] = {
    "asr": "min", "asr_text": "min", "tifa": "max", "util_text": "max", "clipscore": "max", "fid": "min",
    "spread_ratio": "max", "jaccard": "max", "distortion_abs": "min", "distortion_rel": "min",
}


def calibration_report(rows: Sequence[Mapping[str, float]], *,
                       pairs: Sequence[tuple[str, str]] | None = None) -> list[dict[str, object]]:
    """One entry per (text, image) pair present in the rows: ``{text, image, spearman, n}``.

    Per-set pairs ``asr_text_<s>`` / ``asr_<s>`` and per-category ``util_text_<c>`` / ``tifa_<c>``
    are added automatically when both columns exist.
    """
    keys = set().union(*(r.keys() for r in rows)) if rows else set()
    todo = list(pairs or CALIBRATION_PAIRS)
    for k in sorted(keys):
        if k.startswith("asr_text_") and f"asr_{k[9:]}" in keys:
            todo.append((k, f"asr_{k[9:]}"))
        if k.startswith("util_text_") and f"tifa_{k[10:]}" in keys:
            todo.append((k, f"tifa_{k[10:]}"))
    out = []
    for text, image in todo:
        if text not in keys or image not in keys:
            continue
        xs = [r.get(text) for r in rows]
        ys = [r.get(image) for r in rows]
        n = sum(x is not None and y is not None for x, y in zip(xs, ys))
        out.append({"text": text, "image": image, "spearman": spearman(xs, ys), "n": n})
    return out
