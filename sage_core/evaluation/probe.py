"""The concept probe: a second concept detector, fitted in base space on prompts of its own.

The bank (``sage_core/data/concept_probe.json``, made by ``tools/make_concept_probe.py``, which says why each
group is there) gives named groups of positives (written nudity prompts in SD, sentence and prose
style + half of each packaged attack set at weight 0.5) and negatives (their clothed minimal
contrasts, safe look-alikes, other harms such as violence, near-empty prompts, 1,000 COCO captions). The
evaluator never scores a prompt the probe was fitted on, and checks the probe's specificity on
hand-written violence prompts it never saw.

:func:`concept_probe` fits the probe once per base encoder and bank and caches it. The probe of the
embedded default encoder (MiniLM, 32 tokens) ships fitted in ``sage_core/data/probes/``, keyed like
the cache (weights, token ids of the bank, L2 weight), so it is used only when all of them match;
``python tools/make_concept_probe.py --ship-probe minilm`` rewrites it, and a test
checks that a fresh fit equals the shipped one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cache import atomic_save, build_once, cache_key, load_cached
from ..data import DATA_DIR, load_prompts, read_json_data
from ..defs.errors import DataError
from ..defs.locations import BUILTIN_PROMPT_SETS
from ..encoders import TextEncoder, load_encoder
from . import graded
from .config import EvalConfig

__all__ = ["DEFAULT_PATH", "ProbeBank", "load_probe_bank", "concept_probe", "probe_file_name", "ship_probe",
           "PACKAGED_PROBES"]

#: The packaged probe bank (written by ``tools/make_concept_probe.py``).
DEFAULT_PATH = DATA_DIR / "concept_probe.json"
#: Fitted probes shipped with the package (the embedded default encoder's).
PACKAGED_PROBES = DATA_DIR / "probes"


@dataclass(frozen=True)
class ProbeBank:
    """Named groups of fitting prompts (each weighs ``weights.get(name, 1)``) and the held-out other harm."""

    positive: dict[str, list[str]]
    negative: dict[str, list[str]]
    other_harm_name: str
    other_harm: list[str]
    weights: dict[str, float] = field(default_factory=dict)

    def fit_prompts(self) -> set[str]:
        """Every prompt the probe is fitted on (the evaluator scores none of them)."""
        return {p for g in (*self.positive.values(), *self.negative.values()) for p in g}


def _strings(value: object, where: str, path: Path, *, empty_ok: bool = False) -> list[str]:
    if not (isinstance(value, list) and value and all(isinstance(p, str) and (empty_ok or p.strip()) for p in value)):
        raise DataError(f"{path}: {where} must be a non-empty list of {'' if empty_ok else 'non-empty '}strings")
    return value


def _named_groups(value: object, where: str, path: Path) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not value:
        raise DataError(f"{path}: {where} must map group names to lists of prompts")
    # the neutral group holds the empty prompt on purpose
    return {name: _strings(g, f"{where}.{name}", path, empty_ok=name == "neutral") for name, g in value.items()}


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
                          maker="make_concept_probe")
    path = Path(path).expanduser() if path else DEFAULT_PATH
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with positive/negative/other_harm_test")
    fit = data.get("fit_from_sets") or {}
    positive = {**_named_groups(data.get("positive"), "positive", path),
                **_rows(fit.get("positive", {}), "fit_from_sets.positive", path)}
    negative = {**_named_groups(data.get("negative"), "negative", path),
                **_rows(fit.get("negative", {}), "fit_from_sets.negative", path)}
    weights = data.get("group_weights") or {}
    groups = {*positive, *negative}
    if not isinstance(weights, dict) or not all(
            k in groups and isinstance(w, (int, float)) and 0 < w < float("inf") for k, w in weights.items()):
        raise DataError(f"{path}: group_weights must map group names ({', '.join(sorted(groups))}) to positive numbers")
    harm = data.get("other_harm_test")
    if not isinstance(harm, dict) or not isinstance(harm.get("name"), str):
        raise DataError(f"{path}: other_harm_test must be {{\"name\": ..., \"prompts\": [...]}}")
    return ProbeBank(positive=positive, negative=negative, other_harm_name=harm["name"],
                     other_harm=_strings(harm.get("prompts"), "other_harm_test.prompts", path),
                     weights={k: float(w) for k, w in weights.items()})


def _groups(bank: ProbeBank) -> list[list[str]]:
    return [*bank.positive.values(), *bank.negative.values()]


def _group_weights(bank: ProbeBank) -> list[float]:
    return [bank.weights.get(name, 1.0) for name in (*bank.positive, *bank.negative)]


def probe_file_name(base: TextEncoder, bank: ProbeBank, *, l2: float, concept: str) -> str:
    """``probe-<key>.safetensors``: the key covers the weights, the bank's token ids, groups and
    group weights, l2."""
    groups = _groups(bank)
    key = cache_key(base, [p for g in groups for p in g], concept=concept, kind="probe", l2=l2,
                    sizes=[len(g) for g in groups], group_weights=_group_weights(bank))
    return f"probe-{key[:24]}.safetensors"


def _fit(base: TextEncoder, bank: ProbeBank, *, l2: float, batch_size: int) -> dict[str, torch.Tensor]:
    groups = _groups(bank)
    pooled = base.embed_pooled([p for g in groups for p in g], batch_size=batch_size)
    parts = list(torch.split(pooled, [len(g) for g in groups]))
    probe = graded.fit_probe(parts[:len(bank.positive)], parts[len(bank.positive):], l2=l2,
                             weights=_group_weights(bank))
    return {"weight": probe.weight, "bias": torch.tensor(probe.bias, dtype=torch.float64)}


def concept_probe(base: TextEncoder, bank: ProbeBank, *, l2: float, concept: str, batch_size: int,
                  cache_dir: str | os.PathLike) -> tuple[graded.Probe, str]:
    """The probe fitted on ``bank`` in ``base``'s space and where it came from (``packaged``,
    ``cache`` or ``fitted``); a fit is saved under ``<cache_dir>/eval``."""
    name = probe_file_name(base, bank, l2=l2, concept=concept)

    def valid(t: dict[str, torch.Tensor]) -> bool:
        return t["weight"].numel() == base.hidden_size

    shipped = load_cached(PACKAGED_PROBES / name)
    if shipped is not None and valid(shipped):
        return graded.Probe(weight=shipped["weight"], bias=float(shipped["bias"])), "packaged"
    path = Path(cache_dir).expanduser() / "eval" / name
    source = "cache" if load_cached(path) is not None else "fitted"
    t = build_once(path, lambda: _fit(base, bank, l2=l2, batch_size=batch_size), valid=valid,
                   metadata={"encoder": base.source, "concept": concept})
    return graded.Probe(weight=t["weight"], bias=float(t["bias"])), source


def ship_probe(encoder: str = "minilm", *, max_length: int | None = None) -> Path:
    """Fit the default probe (default EvalConfig) on ``encoder`` and write it into the package."""
    cfg = EvalConfig()
    base = load_encoder(encoder, max_length=max_length)
    bank = load_probe_bank(cfg.concept_probe)
    out = PACKAGED_PROBES / probe_file_name(base, bank, l2=cfg.probe_l2, concept=cfg.concept)
    for old in PACKAGED_PROBES.glob("probe-*.safetensors"):
        old.unlink()
    atomic_save(_fit(base, bank, l2=cfg.probe_l2, batch_size=cfg.batch_size), out,
                metadata={"encoder": encoder, "max_length": str(base.max_length), "concept": cfg.concept})
    out.chmod(0o644)
    return out

