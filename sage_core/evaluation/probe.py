"""The concept probe: a second concept detector, fitted in base space on prompts of its own.

The bank (``sage_core/data/concept_probe.json``, made by ``make_concept_probe``) gives positives
(written minimal contrasts + half of each packaged attack set) and negatives (their clothed
twins, style-matched benign prompts, other harms such as violence, 1,000 COCO captions). The
evaluator never scores a prompt the probe was fitted on, and checks the probe's specificity on
hand-written violence prompts it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import BUILTIN_PROMPT_SETS, load_prompts, read_json_data
from ..errors import DataError
from .make_concept_probe import DEFAULT_PATH

__all__ = ["ProbeBank", "load_probe_bank"]


@dataclass(frozen=True)
class ProbeBank:
    """Named groups of fitting prompts (each group weighs the same) and the held-out other harm."""

    positive: dict[str, list[str]]
    negative: dict[str, list[str]]
    other_harm_name: str
    other_harm: list[str]

    def fit_prompts(self) -> set[str]:
        """Every prompt the probe is fitted on (the evaluator scores none of them)."""
        return {p for g in (*self.positive.values(), *self.negative.values()) for p in g}


def _strings(value: object, where: str, path: Path) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(p, str) and p.strip() for p in value):
        raise DataError(f"{path}: {where} must be a non-empty list of non-empty strings")
    return value


def _neutral(value: object, path: Path) -> list[str]:
    """The unconditioned prompt and near-empty captions: strings, the empty one included."""
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise DataError(f"{path}: negative_neutral must be a non-empty list of strings")
    return value


def _rows(spec: object, where: str, path: Path) -> dict[str, list[str]]:
    if not isinstance(spec, dict):
        raise DataError(f"{path}: {where} must map a built-in prompt set to row indices")
    out = {}
    for name, idx in spec.items():
        if name not in BUILTIN_PROMPT_SETS:
            raise DataError(f"{path}: {where}.{name}: not a built-in prompt set ({', '.join(BUILTIN_PROMPT_SETS)})")
        rows = load_prompts(name)
        if not isinstance(idx, list) or not all(isinstance(i, int) and 0 <= i < len(rows) for i in idx):
            raise DataError(f"{path}: {where}.{name}: row indices must be integers in [0, {len(rows)})")
        out[f"{name}-fit"] = [rows[i] for i in idx]
    return out


def load_probe_bank(path: str | Path | None = None) -> ProbeBank:
    """Read the probe bank (default: the packaged one); :class:`DataError` names what is wrong."""
    data = read_json_data(path, default=DEFAULT_PATH, field="concept_probe",
                          maker="sage_core.evaluation.make_concept_probe")
    path = Path(path).expanduser() if path else DEFAULT_PATH
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with positive/negative/other_harm_test")
    fit = data.get("fit_from_sets") or {}
    positive = {"written": _strings(data.get("positive"), "positive", path),
                **_rows(fit.get("positive", {}), "fit_from_sets.positive", path)}
    negative = {"written": _strings(data.get("negative"), "negative", path),
                "other-harm": _strings(data.get("negative_other_harm"), "negative_other_harm", path),
                **({"neutral": _neutral(data["negative_neutral"], path)} if "negative_neutral" in data else {}),
                **_rows(fit.get("negative", {}), "fit_from_sets.negative", path)}
    harm = data.get("other_harm_test")
    if not isinstance(harm, dict) or not isinstance(harm.get("name"), str):
        raise DataError(f"{path}: other_harm_test must be {{\"name\": ..., \"prompts\": [...]}}")
    return ProbeBank(positive=positive, negative=negative, other_harm_name=harm["name"],
                     other_harm=_strings(harm.get("prompts"), "other_harm_test.prompts", path))
