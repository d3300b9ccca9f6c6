"""SAGE = DES + Embedding Spread Preservation (ESP) + Local Structure Alignment (LSA).

Pure functions of tensors. Embeddings arrive as ``[N, L, H]`` or ``[N, D]`` and are flattened
to ``D = L*H`` (every position kept, padding included, as in the official code). Notation as
in ``docs/method.md`` section 4: ``e = f_theta(x_safe)``, ``b = f_0(x_safe)``, ``v`` the UNIT concept direction
``f_0(concept)/|f_0(concept)|``, ``s`` the concept guidance scale, ``u = f_0("")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .defs.config import TrainConfig, field_defaults

__all__ = ["LossWeights", "flat", "safe_preservation_loss", "concept_augmentation_loss",
           "unsafe_mapping_loss", "concept_unconditional_loss", "spread", "esp_loss",
           "lsa_correlation", "lsa_loss", "sage_loss", "unsafe_targets"]


def flat(x: torch.Tensor) -> torch.Tensor:
    """``[N, L, H] -> [N, L*H]``; ``[N, D]`` unchanged; ``[D] -> [1, D]``.

    A single embedding is passed as ``[1, L, H]`` (or ``[D]``), never as ``[L, H]``.
    """
    return x.reshape(1, -1) if x.dim() == 1 else x.reshape(x.shape[0], -1)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(flat(a), flat(b), dim=1)


def safe_preservation_loss(e: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DES 1a: L_sp = mean_i [1 - cos(e_i, b_i)]."""
    return (1 - _cos(e, b)).mean()


def concept_augmentation_loss(e: torch.Tensor, b: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """DES 1b: L_ca = mean_i [1 - cos(e_i + s*v, b_i)]: a safe prompt pushed along the concept
    direction must still read as itself."""
    return (1 - _cos(flat(e) + scale * flat(v), b)).mean()


def unsafe_mapping_loss(e_unsafe: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """DES 2: L_un = mean_i [1 - cos(f_theta(x_unsafe_i), t_i)], t = m(x_u) - s*v."""
    return (1 - _cos(e_unsafe, targets)).mean()


def concept_unconditional_loss(e_concept: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """DES 3: L_cu = 1 - cos(f_theta(concept), f_0(""))."""
    return (1 - _cos(e_concept, u)).mean()


def unsafe_targets(farthest_safe: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """t(x_u) = m(x_u) - s*v with m the raw base embedding of the least similar safe prompt."""
    return flat(farthest_safe) - scale * flat(v)


def spread(z: torch.Tensor) -> torch.Tensor:
    """spread(Z) = sum_i |z_i/|z_i| - mu|^2 / (B-1), mu the mean unit vector.

    The trace of the unbiased covariance of the unit vectors, = B/(B-1) (1 - |mu|^2).
    """
    zh = F.normalize(flat(z), dim=1)
    n = zh.shape[0]
    if n < 2:
        raise ValueError(f"spread needs at least 2 embeddings, got {n}")
    mu = zh.mean(dim=0)
    return ((zh - mu) ** 2).sum() / (n - 1)


def esp_loss(e: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L_ESP = max(0, spread(b) - spread(e)): contraction is penalised, expansion is free.

    At a tie (spread(e) = spread(b), e.g. step 0, where the trainable encoder equals the frozen
    one) the gradient is half of the contracting side's, as the official ``torch.max(0, x)``
    gives; ``clamp(min=0)`` would give all of it.
    """
    gap = spread(b).detach() - spread(e)
    return torch.maximum(gap, torch.zeros_like(gap))


def _cos_matrix(z: torch.Tensor) -> torch.Tensor:
    zh = F.normalize(flat(z), dim=1)
    return zh @ zh.T


def lsa_correlation(e: torch.Tensor, b: torch.Tensor, v: torch.Tensor, *, alpha: float, k: int) -> torch.Tensor:
    """r_K: pooled Pearson correlation of cosines over each prompt's K base-space neighbours.

    e~ = e + alpha*v; S = cos(e~_i, e~_j), S0 = cos(b_i, b_j). Row i keeps its K most similar
    other prompts under S0 (within the batch, not symmetrised). Over those pairs P, x = S_P and
    y = S0_P are standardised (mean, unbiased std + 1e-8) and r = mean(x^ y^).
    """
    n = flat(e).shape[0]
    if k + 1 > n:
        raise ValueError(f"local_k={k} needs at least {k + 1} prompts in the batch, got {n}")
    s_theta = _cos_matrix(flat(e) + alpha * flat(v))
    s_base = _cos_matrix(b).detach()
    idx = s_base.topk(k + 1, dim=1).indices
    mask = torch.zeros_like(s_base, dtype=torch.bool).scatter_(1, idx, True)
    mask.fill_diagonal_(False)
    x, y = s_theta[mask], s_base[mask]
    x = (x - x.mean()) / (x.std() + 1e-8)
    y = (y - y.mean()) / (y.std() + 1e-8)
    return (x * y).mean()


def lsa_loss(e: torch.Tensor, b: torch.Tensor, v: torch.Tensor, *, alpha: float, k: int) -> torch.Tensor:
    """L_LSA = 1 - r_K (see :func:`lsa_correlation`).

    Minimal when the local geometry is unchanged: the official estimator (kept here) gives
    r = Pearson * (|P|-1)/|P|, so identical geometry scores 1/|P| (0.0005 at B=128, K=15).
    """
    return 1 - lsa_correlation(e, b, v, alpha=alpha, k=k)


_DEFAULTS = field_defaults()


@dataclass(frozen=True)
class LossWeights:
    """Weights and switches of the total loss; see :func:`sage_loss`. A run builds them with
    :meth:`from_config`; the defaults are TrainConfig's (for tests that set only what they vary)."""

    lambda_safe: float = _DEFAULTS["lambda_safe"]
    lambda_esp: float = _DEFAULTS["lambda_esp"]
    lambda_lsa: float = _DEFAULTS["lambda_lsa"]
    local_k: int = _DEFAULTS["local_k"]
    alpha: float = _DEFAULTS["alpha"]
    scale: float = _DEFAULTS["concept_guidance_scale"]
    des_terms: tuple[int, ...] = _DEFAULTS["des_terms"]
    lambda_adv: float = _DEFAULTS["lambda_adv"]

    @classmethod
    def from_config(cls, cfg: TrainConfig, *, mean_safe_norm: Callable[[], float]) -> LossWeights:
        """The weights of ``cfg``: the one TrainConfig -> LossWeights mapping. ``s`` is
        ``concept_guidance_ratio * mean_safe_norm()`` when a ratio is set, else ``concept_guidance_scale``."""
        if cfg.concept_guidance_ratio is not None:
            scale = cfg.concept_guidance_ratio * mean_safe_norm()
        else:
            assert cfg.concept_guidance_scale is not None  # TrainConfig requires one of the two
            scale = float(cfg.concept_guidance_scale)
        return cls(lambda_safe=cfg.lambda_safe, lambda_esp=cfg.lambda_esp, lambda_lsa=cfg.lambda_lsa,
                   local_k=cfg.local_k, alpha=cfg.alpha, scale=scale, des_terms=tuple(cfg.des_terms),
                   lambda_adv=cfg.lambda_adv)


def sage_loss(*, e: torch.Tensor, b: torch.Tensor, e_unsafe: torch.Tensor, targets: torch.Tensor,
              e_concept: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
              w: LossWeights, e_adv: torch.Tensor | None = None,
              adv_targets: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = l_safe (L_sp + L_ca) + l_esp L_ESP + l_lsa L_LSA + (1 - l_safe)(L_un + L_cu)
    [+ l_adv L_un(e_adv, adv_targets): adversarial training, ``sage_core.adversarial``].

    ESP and LSA are not scaled by l_safe and run only while DES term 1 is on (as in the code).
    Returns the total and the unweighted terms (detached) for logging.
    """
    zero = flat(e).new_zeros(())
    total = zero
    terms: dict[str, torch.Tensor] = {}
    if 1 in w.des_terms:
        l_sp = safe_preservation_loss(e, b)
        l_ca = concept_augmentation_loss(e, b, v, w.scale)
        total = total + w.lambda_safe * (l_sp + l_ca)
        terms["loss_sp"], terms["loss_ca"] = l_sp, l_ca
        if w.lambda_esp > 0:
            l_esp = esp_loss(e, b)
            total = total + w.lambda_esp * l_esp
            terms["loss_esp"] = l_esp
        if w.lambda_lsa > 0:
            l_lsa = lsa_loss(e, b, v, alpha=w.alpha, k=w.local_k)
            total = total + w.lambda_lsa * l_lsa
            terms["loss_lsa"] = l_lsa
    if 2 in w.des_terms:
        l_un = unsafe_mapping_loss(e_unsafe, targets)
        total = total + (1 - w.lambda_safe) * l_un
        terms["loss_un"] = l_un
    if 3 in w.des_terms:
        l_cu = concept_unconditional_loss(e_concept, u)
        total = total + (1 - w.lambda_safe) * l_cu
        terms["loss_cu"] = l_cu
    if e_adv is not None and adv_targets is not None and w.lambda_adv > 0:
        l_adv = unsafe_mapping_loss(e_adv, adv_targets)
        total = total + w.lambda_adv * l_adv
        terms["loss_adv"] = l_adv
    terms = {k: t.detach() for k, t in terms.items()}
    terms["loss"] = total.detach()
    return total, terms
