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

The stages build their base-side state (text evaluator, proximal base embeddings; cached on disk
under the sweep's cache) once per trial process and reuse it at every evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TrialStages", "stage_problems"]


def stage_problems(robust: Mapping[str, Any] | None, proximal: Mapping[str, Any] | None, *,
                   image_metrics: Sequence[str] | None = None) -> list[str]:
    """Every problem of ``fidelity.robust`` / ``fidelity.proximal`` settings (validated before Ray starts);
    ``image_metrics``: the image stage's metrics (None: no image stage), for ``fidelity.robust.image``."""
    from sage_core.errors import ConfigError
    from sage_core.evaluation.proximal import build_proximal_config
    from sage_core.robustness import build_robust_config

    problems: list[str] = []
    for values, build, where in ((robust, build_robust_config, "fidelity.robust"),
                                 (proximal, build_proximal_config, "fidelity.proximal")):
        if values is None:
            continue
        try:
            build(values, where=where)
        except ConfigError as exc:
            problems += list(exc.problems)
    return problems + _image_problems((robust or {}).get("image"), image_metrics)


def _image_problems(values: Mapping[str, Any] | None, image_metrics: Sequence[str] | None) -> list[str]:
    """``fidelity.robust.image`` (the UNet fine-tune of the image stage) and the ``robust_asr*`` metrics
    that need it."""
    from analysis.metrics import lookup
    from sage_core.errors import ConfigError, DataError
    from sage_core.robustness_image import build_image_robust_config, read_image_captions

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
    """``stages(metrics, checkpoint) -> more metrics`` for one trial's :class:`~sage_core.config.TrainConfig`."""

    def __init__(self, cfg: Any, *, robust: Mapping[str, Any] | None, proximal: Mapping[str, Any] | None):
        from sage_core.evaluation.proximal import build_proximal_config
        from sage_core.robustness import build_robust_config

        self.cfg = cfg
        self.robust = build_robust_config(robust, where="fidelity.robust") if robust is not None else None
        self.proximal = build_proximal_config(proximal, where="fidelity.proximal") if proximal is not None else None
        self._state: dict[str, Any] | None = None

    def _setup(self) -> dict[str, Any]:
        if self._state is None:
            from sage_core.encoders import load_encoder
            from sage_core.evaluation import TextEvaluator, build_eval_config
            from sage_core.evaluation.paired import PairedAUC
            from sage_core.evaluation.proximal import ProximalEvaluator

            cfg = self.cfg
            base = load_encoder(cfg.encoder, max_length=cfg.max_length)
            ev = TextEvaluator(base, build_eval_config(cfg.eval_config_values()), cache_dir=cfg.resolved_cache_dir())
            prox = (ProximalEvaluator(base, self.proximal, cache_dir=cfg.resolved_cache_dir())
                    if self.proximal is not None else None)
            self._state = {"ev": ev, "prox": prox, "paired": PairedAUC(ev)}
        return self._state

    def __call__(self, metrics: Mapping[str, float], checkpoint: str | Path) -> dict[str, float]:
        """The stages' metrics of the aligned encoder saved in ``checkpoint``; ``metrics``: the text
        evaluation of that same encoder (``concept_auc`` etc. before the fine-tune)."""
        from sage_core.encoders import load_encoder, quiet_hf_progress
        from sage_core.evaluation.paired import probe_scores
        from sage_core.robustness import robustness_metrics

        state = self._setup()
        ev, prox, paired = state["ev"], state["prox"], state["paired"]
        with quiet_hf_progress():
            aligned = load_encoder(str(checkpoint), max_length=self.cfg.max_length)
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
