"""The robustness and proximal stages of a trial: more objectives measured at every text evaluation.

A spec that names ``fidelity.robust`` (the benign LoRA fine-tune, :mod:`sage_core.robustness`)
and/or ``fidelity.proximal`` (proximal-concept disruption and the SaDi-style index,
:mod:`sage_core.evaluation.proximal`) gets their metrics in the same result row as the text
metrics of each evaluation: the trial's report callback calls :class:`TrialStages` on the
checkpoint just written, before it reports. So ``robust_*``, ``prox_*`` and ``sadi_text`` are
ordinary objectives: the Pareto scheduler ranks by them at the rungs, Optuna samples by them,
``sage pareto --extra robust_concept_auc`` draws a 3-objective front.

Why in the trial and not after the sweep like the image stage: the stages cost seconds on a CPU
(tens of LoRA steps on MiniLM), far less than the image stage's minutes of GPU per survivor, and
an objective that exists only for survivors cannot steer the search.

``fidelity.robust.image`` is the image-level variant (:mod:`sage_core.robustness_image`: a benign
UNet LoRA fine-tune, then NudeNet ASR again); it runs in the image stage for the survivors
(:func:`sweeps.image_stage.evaluate_encoder`), not here; :func:`stage_problems` validates it.

``fidelity.attack`` (:mod:`sage_core.evaluation.attack_depth`: an optimised token or soft-prompt
attack on the live encoder; its AttackConfig values, plus ``at``) costs more (tens of seconds on a
CPU), so it runs only where the sweep reads it: at the rungs (``at``: chosen text evaluations
instead) and at the final step. Its rows hold ``attack_depth`` [lo, hi], ``attack_steps_median``
and ``attack_recovered_at_*`` beside that step's text metrics; the other rows lack them, and an
attack objective must be measured at every rung (:func:`attack_objective_problems`).

The stages build their base-side state (text evaluator, proximal base embeddings, the attack's
probe, threshold and targets; cached on disk under the sweep's cache) once per trial process and
reuse it at every evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sage_core.defs.errors import ConfigError, DataError
from sage_core.defs.metrics import lookup

__all__ = ["TrialStages", "stage_problems", "ATTACK_AT", "attack_at_problems", "attack_objective_problems"]

#: ``fidelity.attack.at``: the steps of the attack stage (its other keys are AttackConfig values).
ATTACK_AT = "at"


def attack_at_problems(attack: Mapping[str, Any] | None, *, text_every: int) -> list[str]:
    """``fidelity.attack.at``: a strictly increasing list of text-evaluation steps (or absent)."""
    at = (attack or {}).get(ATTACK_AT)
    if at is None:
        return []
    if (not isinstance(at, list) or not at or sorted(set(at)) != at
            or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 or s % text_every for s in at)):
        return [f"fidelity.attack.at={at!r}: must be a strictly increasing list of steps, multiples of "
                f"fidelity.text_every={text_every} (or leave it out: the rungs)"]
    return []


def attack_objective_problems(attack: Mapping[str, Any] | None, *, rungs: Sequence[int] | None,
                              objectives: Sequence[str]) -> list[str]:
    """An attack objective ranks at the rungs: an explicit ``fidelity.attack.at`` must hold them all."""
    at = (attack or {}).get(ATTACK_AT)
    ranked = [m for m in objectives if getattr(lookup(m), "fidelity", None) == "attack"]
    if not ranked or not isinstance(at, list):
        return []
    if rungs is None:
        return [f"fidelity.attack.at={at!r}: objective {ranked[0]!r} ranks at every text evaluation (no "
                "fidelity.rungs); leave at out, or give fidelity.rungs and list them all in at"]
    missing = [r for r in rungs if r not in at]
    return [f"fidelity.attack.at={at!r}: objective {ranked[0]!r} ranks at the rungs {missing} too; list every "
            f"rung of fidelity.rungs={list(rungs)} in at, or leave at out"] if missing else []


def stage_builders() -> dict[str, Callable[..., Any]]:
    """Stage name -> the function that validates its ``fidelity.<stage>`` settings into its config (the
    one mapping: validation, the trials and warm starts all use it). Imported here, not at module level:
    the attack and robustness configs load torch."""
    from sage_core.evaluation.attack import build_attack_config  # lazy: torch (~1 s), off `sage` start-up
    from sage_core.evaluation.proximal import build_proximal_config  # lazy: torch (~1 s), off `sage` start-up
    from sage_core.robustness import build_robust_config  # lazy: torch (~1 s), off `sage` start-up

    return {"robust": build_robust_config, "proximal": build_proximal_config, "attack": build_attack_config}


def stage_problems(robust: Mapping[str, Any] | None, proximal: Mapping[str, Any] | None, *,
                   image_metrics: Sequence[str] | None = None, attack: Mapping[str, Any] | None = None) -> list[str]:
    """Every problem of ``fidelity.robust`` / ``fidelity.proximal`` / ``fidelity.attack`` settings (validated
    before Ray starts; ``attack`` without ``at``); ``image_metrics``: the image stage's metrics (None: no
    image stage), for ``fidelity.robust.image``."""
    problems: list[str] = []
    builders = stage_builders()
    for stage, values in (("robust", robust), ("proximal", proximal), ("attack", attack)):
        if values is None:
            continue
        try:
            builders[stage](dict(values), where=f"fidelity.{stage}")
        except ConfigError as exc:
            problems += list(exc.problems)
    return problems + _image_problems((robust or {}).get("image"), image_metrics)


def _image_problems(values: Mapping[str, Any] | None, image_metrics: Sequence[str] | None) -> list[str]:
    """``fidelity.robust.image`` (the UNet fine-tune of the image stage) and the ``robust_asr*`` metrics
    that need it."""
    from sage_core.robustness_image import (  # lazy: torch, off `sage` start-up
        build_image_robust_config,
        read_image_captions,
    )

    where = "fidelity.robust.image"
    needs = [m for m in image_metrics or ()
             if m.startswith("robust_") and getattr(lookup(m), "fidelity", "") == "image"]
    if values is None:
        return [f"fidelity.image.metrics: {m!r} is measured after a UNet LoRA fine-tune; add {where}: "
                "{data: FOLDER} (benign images with captions)" for m in needs]
    if image_metrics is None:
        return [f"{where}: the UNet fine-tune runs in the image stage; add fidelity.image (metrics: [asr, "
                "robust_asr], eval: {sd_model: FOLDER, ...})"]
    try:
        cfg = build_image_robust_config(values, where=where)
        read_image_captions(cfg.data, where=f"{where}.data")
    except ConfigError as exc:
        return list(exc.problems)
    except DataError as exc:
        return [str(exc)]
    return []


class TrialStages:
    """``stages(metrics, checkpoint) -> more metrics`` for one trial's :class:`~sage_core.defs.config.TrainConfig`.

    ``attack``: the AttackConfig values of ``fidelity.attack`` (without ``at``); ``attack_at``: the steps
    it runs at besides the final one (None: every evaluation)."""

    def __init__(self, cfg: Any, *, robust: Mapping[str, Any] | None, proximal: Mapping[str, Any] | None,
                 attack: Mapping[str, Any] | None = None, attack_at: Sequence[int] | None = None):
        build = stage_builders()
        self.cfg = cfg
        self.robust = build["robust"](robust, where="fidelity.robust") if robust is not None else None
        self.proximal = build["proximal"](proximal, where="fidelity.proximal") if proximal is not None else None
        self.attack = build["attack"](dict(attack), where="fidelity.attack") if attack is not None else None
        self.attack_at = None if attack_at is None else frozenset(int(s) for s in attack_at)
        self._state: dict[str, Any] | None = None

    def attacks_at(self, step: int, *, final: bool) -> bool:
        """The attack stage runs at this evaluation."""
        return self.attack is not None and (final or self.attack_at is None or step in self.attack_at)

    def _setup(self) -> dict[str, Any]:
        if self._state is None:
            from sage_core.encoders import load_encoder  # lazy: torch (~1 s), off `sage` start-up
            from sage_core.evaluation import TextEvaluator, build_eval_config  # lazy: torch (~1 s), off `sage` start-up
            from sage_core.evaluation.attack_depth import AttackDepthEvaluator  # lazy: torch, off `sage` start-up
            from sage_core.evaluation.paired import PairedAUC  # lazy: torch (~1 s), off `sage` start-up
            from sage_core.evaluation.proximal import ProximalEvaluator  # lazy: torch (~1 s), off `sage` start-up

            cfg, cache = self.cfg, self.cfg.resolved_cache_dir()
            base = load_encoder(cfg.encoder, max_length=cfg.max_length)
            eval_cfg = build_eval_config(cfg.eval_config_values())
            state: dict[str, Any] = {"ev": None, "prox": None, "paired": None, "attack": None}
            if self.robust is not None or self.proximal is not None:
                state["ev"] = ev = TextEvaluator(base, eval_cfg, cache_dir=cache)
                state["paired"] = PairedAUC(ev)
            if self.proximal is not None:
                state["prox"] = ProximalEvaluator(base, self.proximal, cache_dir=cache)
            if self.attack is not None:
                state["attack"] = AttackDepthEvaluator(base, eval_cfg, self.attack, cache_dir=cache)
            self._state = state
        return self._state

    def __call__(self, metrics: Mapping[str, float], checkpoint: str | Path, *, step: int | None = None,
                 final: bool = True) -> dict[str, float]:
        """The stages' metrics of the aligned encoder saved in ``checkpoint`` at ``step`` (``final``: the
        trial's last evaluation); ``metrics``: the text evaluation of that same encoder (``concept_auc``
        etc. before the fine-tune)."""
        from sage_core.encoders import load_encoder, quiet_hf_progress  # lazy: torch (~1 s), off `sage` start-up

        state = self._setup()
        with quiet_hf_progress():
            aligned = load_encoder(str(checkpoint), max_length=self.cfg.max_length)
        out = self._robust_and_proximal(state, metrics, aligned) if state["ev"] is not None else {}
        if state["attack"] is not None and (step is None or self.attacks_at(step, final=final)):
            out.update(state["attack"](aligned))
        return out

    def _robust_and_proximal(self, state: dict[str, Any], metrics: Mapping[str, float],
                             aligned: Any) -> dict[str, float]:
        from sage_core.evaluation.paired import probe_scores  # lazy: torch (~1 s), off `sage` start-up
        from sage_core.robustness import robustness_metrics  # lazy: torch (~1 s), off `sage` start-up

        ev, prox, paired = state["ev"], state["prox"], state["paired"]
        scores = probe_scores(ev, aligned)
        before = metrics if "concept_auc" in metrics else ev(aligned)
        out: dict[str, float] = {}
        if self.robust is not None:
            out.update(robustness_metrics(aligned, evaluator=ev, cfg=self.robust, before=before, paired=paired,
                                          aligned_scores=scores,
                                          exclude=set(prox.bank.prompts) if prox is not None else None))
        if prox is not None:
            out.update(prox(aligned, concept_auc=float(before["concept_auc"]),
                            concept_auc_boots=paired.auc(scores)[1]))
        return out
