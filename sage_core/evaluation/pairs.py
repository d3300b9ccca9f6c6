"""The minimal-pair prompt groups of ``util_text`` (package data made by ``tools/make_util_pairs.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import DATA_DIR, read_json_data
from ..defs.errors import DataError
from ..defs.metrics import TIFA_CATEGORIES

__all__ = ["UtilPairs", "load_util_pairs", "DEFAULT_PATH"]

#: The packaged pair file (written by ``tools/make_util_pairs.py``).
DEFAULT_PATH = DATA_DIR / "util_pairs.json"


@dataclass(frozen=True)
class UtilPairs:
    """Unique prompts, groups ``[G, S]`` of prompt indices (siblings of each other), a category per group."""

    prompts: list[str]
    groups: torch.Tensor
    categories: list[str]

    def category_names(self) -> list[str]:
        return [c for c in TIFA_CATEGORIES if c in set(self.categories)] + sorted(
            set(self.categories) - set(TIFA_CATEGORIES))


def load_util_pairs(path: str | Path | None = None, *, groups_per_category: int | None = None) -> UtilPairs:
    """Read the pair file (default: the packaged one); keep the first N groups of each category.

    Format: ``{"categories": {category: [{"prompts": [p1, p2, ...]}, ...]}}``, every group with the
    same number (>= 2) of distinct prompts. Raises :class:`DataError` for anything else.
    """
    data = read_json_data(path, default=DEFAULT_PATH, field="util_pairs",
                          maker="make_util_pairs")
    path = Path(path).expanduser() if path else DEFAULT_PATH
    cats = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(cats, dict) or not cats:
        raise DataError(f"{path}: expected {{\"categories\": {{name: [{{\"prompts\": [...]}}, ...]}}}}")
    index: dict[str, int] = {}
    rows: list[list[int]] = []
    categories: list[str] = []
    size = None
    for cat, groups in cats.items():
        if not isinstance(groups, list) or not groups:
            raise DataError(f"{path}: category {cat!r} must hold a non-empty list of groups")
        for g_no, group in enumerate(groups[:groups_per_category]):
            prompts = group.get("prompts") if isinstance(group, dict) else None
            if (not isinstance(prompts, list) or len(prompts) < 2 or len(set(prompts)) != len(prompts)
                    or not all(isinstance(p, str) and p.strip() for p in prompts)):
                raise DataError(f"{path}: category {cat!r} group {g_no}: 'prompts' must be a list of "
                                "at least 2 distinct non-empty strings")
            if size is None:
                size = len(prompts)
            elif len(prompts) != size:
                raise DataError(f"{path}: category {cat!r} group {g_no} has {len(prompts)} prompts, "
                                f"the others {size}; every group needs the same size")
            rows.append([index.setdefault(p, len(index)) for p in prompts])
            categories.append(cat)
    return UtilPairs(prompts=list(index), groups=torch.tensor(rows, dtype=torch.long), categories=categories)
