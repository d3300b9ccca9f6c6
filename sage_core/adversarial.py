"""Adversarial training (AdvUnlearn's idea on SAGE's losses): ``lambda_adv`` > 0 in ``TrainConfig``.

Every ``adv_every`` steps the trainer refreshes adversarial versions of the current batch's unsafe
prompts against the CURRENT encoder with the token attack of :mod:`.evaluation.attack` (k tokens
as a suffix, greedy coordinate search with gradient-ranked candidates, budget ``adv_attack``,
warm-started from each prompt's previous suffix). At every step each unsafe prompt of the batch
that has been attacked before enters the loss with its latest suffix, mapped to the SAME DES
target as the prompt itself:

    L = L_SAGE + lambda_adv * mean_i [1 - cos(f_theta(x_u^i + s_i), t(x_u^i))],

s_i its adversarial suffix, t the DES unsafe target (farthest safe entry minus s*v), the
flattened full sequence as in L_un. An unsafe prompt not yet attacked carries no adversarial term.

How this departs from AdvUnlearn (Zhang et al., NeurIPS 2024): (1) the attack works in text space
only: it pulls the aligned encoder's mean-pooled output of the edited prompt toward the BASE
encoder's output of the original prompt (P4D's target), not through the UNet's noise-prediction
(ESD) loss, so no image model is needed; (2) the unlearning objective is SAGE's (DES targets plus
ESP/LSA on the safe prompts), not ESD; AdvUnlearn's utility regulariser on COCO is left to SAGE's own
safe-prompt terms; (3) adversarial prompts are refreshed every ``adv_every`` steps and reused in
between (AdvUnlearn attacks at every step); (4) attacks are discrete tokens from the start
(AdvUnlearn's fast variant attacks in embedding space).

Supported with one forward per step (no micro-batches, one rank); the config and the trainer
refuse anything else before work starts. Off by default, so existing runs do not change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .encoders import TextEncoder
from .evaluation.attack import AttackConfig, search_tokens

__all__ = ["AdversarialPrompts"]


class AdversarialPrompts:
    """The latest adversarial suffix of each unsafe training prompt, refreshed on schedule."""

    def __init__(self, base: TextEncoder, unsafe_prompts: Sequence[str], *, attack: AttackConfig, every: int):
        self.base, self.prompts, self.attack, self.every = base, list(unsafe_prompts), attack, every
        self._suffix: dict[int, torch.Tensor] = {}
        self._tokens: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def refresh(self, encoder: TextEncoder, rows: np.ndarray) -> None:
        """Attack the unsafe prompts ``rows`` against ``encoder`` (warm start from their last suffix)."""
        rows = np.unique(rows)
        prompts = [self.prompts[i] for i in rows]
        targets = self.base.embed_pooled(prompts)
        init = torch.full((self.attack.n_tokens,), int(encoder.tokenizer(self.attack.init, add_special_tokens=False)
                                                       ["input_ids"][0]), dtype=torch.long)
        start = torch.stack([self._suffix.get(int(i), init) for i in rows])
        adv, tok = search_tokens(encoder, prompts, targets=targets, cfg=self.attack, start=start)
        for j, i in enumerate(rows.tolist()):
            self._suffix[i] = adv[j]
            self._tokens[i] = (tok["input_ids"][j], tok["attention_mask"][j])

    def batch(self, encoder: TextEncoder, rows: np.ndarray, *, step: int,
              device: torch.device) -> dict[str, torch.Tensor] | None:
        """At a refresh step, refresh ``rows`` first; then the adversarial tokens of the rows attacked
        so far (``adv``: input_ids, attention_mask) and which rows they are (``adv_rows``), or None."""
        if step % self.every == 0:
            self.refresh(encoder, rows)
        have = [j for j, i in enumerate(rows.tolist()) if i in self._tokens]
        if not have:
            return None
        ids = torch.stack([self._tokens[int(rows[j])][0] for j in have]).to(device)
        mask = torch.stack([self._tokens[int(rows[j])][1] for j in have]).to(device)
        return {"input_ids": ids, "attention_mask": mask, "rows": torch.tensor(have, device=device)}
