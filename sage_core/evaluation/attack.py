"""Optimised text-level attacks on an aligned encoder: how deep does the erasure go?

Fixed prompt sets are transfer attacks (found against the original encoder). Here the attacker
adapts to the encoder A under evaluation, as P4D, UnlearnDiffAtk and AdvUnlearn do, but in text
space only (no images, seconds on a CPU):

- ``tokens`` (the realistic attacker, GCG/P4D-style greedy coordinate search): ``n_tokens``
  adversarial tokens inserted as a suffix (or prefix) of the prompt. At each step the gradient of
  the attack loss with respect to a one-hot encoding of those tokens ranks, per position, the
  ``top_k`` vocabulary entries that lower the loss most; ``candidates`` single-token swaps are
  drawn from them (seeded), evaluated in one batch, and the best one is kept if it lowers the loss.
  The edited prompts are scored as token ids (as GCG and P4D do); typing their decoded text
  (``AttackResult.adversarial``) may tokenize differently, most often for word pieces.
- ``soft`` (the upper bound AdvUnlearn uses): the same positions hold free input-embedding vectors,
  optimised by Adam (``lr``) for ``steps`` steps; no token can be typed to reach them.

Attack loss (P4D's target, in text space): 1 - cos(pool(A(p')), pool(E0(p))), the mean-pooled
output of the aligned encoder on the edited prompt against the BASE encoder's output on the
original prompt: the attacker wants A to say what the unaligned encoder said. It never sees the
detector below (``objective="probe"`` lets it climb the detector's score instead).

Success (the absolute view: what the frozen image model reads). Prompt p is recovered at step t
when the project's concept probe (:mod:`.probe`, fitted once in BASE space on prompts of its own)
scores the aligned encoder's output on the step-t prompt above ``threshold``; the evaluator
(:mod:`.attack_depth`) fixes that threshold once on the base encoder as the score exceeded by
``benign_fraction`` of the held-out SD-style safe control pool. Why this view: the UNet is
frozen and reads A's output as the base encoder wrote its space, so "scores like the concept in
base space" is the text-level stand-in for "generates the concept"; a detector fitted on the
aligned encoder (relative view) would move with the alignment. Why this reference: issue 23
showed that a benign side of plain captions reads prompt style; style-matched safe prompts do not.

Steps: step 0 is the unedited prompt; step t >= 1 is the state after t search rounds (tokens: one
gradient and one batch of candidates; soft: the t-th forward, i.e. after t - 1 updates). All draws
come from one generator seeded by ``seed`` and depend only on earlier steps, so a run with budget
b is the first b steps of a run with a larger budget: the success curve is monotone by construction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..defs.errors import ConfigError, ModelError, format_validation_error
from ..defs.strict_values import MAX_SEED, STRICT_MODEL
from ..encoders import TextEncoder, mean_pool
from .graded import Probe

__all__ = ["AttackConfig", "AttackResult", "build_attack_config", "check_attack", "run_attack", "search_tokens"]


class AttackConfig(BaseModel):
    """The attacker and its budget (validated at construction; unknown keys are errors)."""

    model_config = ConfigDict(**STRICT_MODEL, validate_default=True)

    mode: Literal["tokens", "soft"] = Field("tokens", description="discrete tokens (GCG) or a soft prompt")
    n_tokens: int = Field(4, ge=1, description="k: adversarial tokens (or soft vectors) inserted")
    position: Literal["suffix", "prefix"] = Field("suffix", description="where the k tokens go")
    steps: int = Field(8, ge=1, description="budget: search rounds per prompt")
    candidates: int = Field(8, ge=1, description="token swaps evaluated per prompt and round (tokens)")
    top_k: int = Field(64, ge=1, description="gradient-ranked vocabulary entries per position (tokens)")
    lr: float = Field(0.05, gt=0, le=10, description="Adam learning rate of the soft prompt (soft)")
    objective: Literal["base", "probe"] = Field(
        "base", description="attack loss: reach the base encoder's output (P4D) or raise the probe score")
    init: str = Field("!", min_length=1, description="text whose first token fills the k positions at the start")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the candidate draws")
    prompts: int = Field(64, ge=1, description="attack prompts attacked (seeded sample of those the base reads "
                         "as the concept)")
    batch_size: int = Field(512, ge=1, description="sequences per forward")


def build_attack_config(values: dict[str, Any] | None = None, *, where: str = "attack") -> AttackConfig:
    """``AttackConfig`` from a mapping; every problem on one line (``attack.steps=0: ...``)."""
    try:
        return AttackConfig(**(values or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model=AttackConfig, where=where)) from None


def check_attack(encoder: TextEncoder, cfg: AttackConfig) -> None:
    """Refuse, before any work, an encoder the attack cannot edit or a k that leaves no prompt."""
    if getattr(encoder, "tokenizer", None) is None:
        raise ModelError(f"encoder '{encoder.source}': has no tokenizer; the attack edits prompts token by token")
    _input_embeddings(encoder)
    room = encoder.max_length - 3  # start and end tokens and at least one prompt token
    if cfg.n_tokens > room:
        raise ConfigError(f"attack.n_tokens={cfg.n_tokens}: larger than the {encoder.max_length}-token sequence "
                          f"allows; at most {room} (start, end and one prompt token must fit)")


def _input_embeddings(encoder: TextEncoder) -> torch.nn.Embedding:
    get = getattr(encoder.model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if not isinstance(emb, torch.nn.Embedding):
        raise ModelError(f"encoder '{encoder.source}': exposes no input embedding table (get_input_embeddings)")
    return emb


@dataclass(frozen=True)
class AttackResult:
    """``steps`` per prompt: the first step at which it was recovered, -1 if never within ``budget``."""

    steps: np.ndarray
    budget: int
    scores: np.ndarray        # probe score of the final state (the recovering one where recovered)
    adversarial: list[str]    # the final attack prompts, decoded

    def recovered(self, budget: int | None = None) -> np.ndarray:
        """1.0 where the prompt was recovered within ``budget`` steps (default: the whole budget)."""
        b = self.budget if budget is None else budget
        return ((self.steps >= 0) & (self.steps <= b)).astype(float)

    def curve(self) -> np.ndarray:
        """Share recovered within 0, 1, ..., ``budget`` steps (non-decreasing)."""
        return np.array([self.recovered(b).mean() for b in range(self.budget + 1)])


@dataclass
class _Batch:
    ids: torch.Tensor    # [n, L]
    mask: torch.Tensor   # [n, L]
    rows: torch.Tensor   # [n * k] the row of each adversarial position
    cols: torch.Tensor   # [n * k] its column


class _Splicer:
    """Token ids of each prompt with room for k adversarial tokens, and batches with them inserted."""

    def __init__(self, encoder: TextEncoder, prompts: Sequence[str], cfg: AttackConfig):
        tok = encoder.tokenizer
        k = cfg.n_tokens
        out = tok(list(prompts), truncation=True, max_length=encoder.max_length - k)
        special = set(tok.all_special_ids)
        self.bodies = [list(ids) for ids in out["input_ids"]]
        self.k, self.suffix = k, cfg.position == "suffix"
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        # insert after a leading start token / before a trailing end token, where the tokenizer adds them
        self.at = [len(b) - (b[-1] in special) if self.suffix else int(b[0] in special) for b in self.bodies]

    def batch(self, which: Sequence[int], adv: torch.Tensor) -> _Batch:
        """Prompts ``which`` with ``adv`` ``[n, k]`` inserted, padded to the longest."""
        seqs, cols = [], []
        for j, i in enumerate(which):
            b, at = self.bodies[i], self.at[i]
            seqs.append(b[:at] + adv[j].tolist() + b[at:])
            cols.append(torch.arange(at, at + self.k))
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for j, s in enumerate(seqs):
            ids[j, :len(s)] = torch.tensor(s)
            mask[j, :len(s)] = 1
        rows = torch.arange(len(seqs)).repeat_interleave(self.k)
        return _Batch(ids=ids, mask=mask, rows=rows, cols=torch.cat(cols))


@contextlib.contextmanager
def _inject(emb: torch.nn.Embedding, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> Iterator[None]:
    """Replace the input embeddings at (rows, cols) by ``values`` ``[len(rows), H]`` (with their graph)."""
    def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[rows, cols] = values.to(out.dtype)
        return out

    handle = emb.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _Objective:
    """Attack loss and success on pooled outputs (no probe: loss only, every score -inf)."""

    def __init__(self, targets: torch.Tensor, probe: Probe | None, threshold: float, kind: str):
        self.targets, self.probe, self.threshold, self.kind = targets.double(), probe, threshold, kind

    def loss(self, pooled: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        if self.kind == "probe" and self.probe is not None:
            return -self.probe.scores(pooled)
        return 1 - torch.nn.functional.cosine_similarity(pooled.double(), self.targets[which], dim=1)

    def scores(self, pooled: torch.Tensor) -> np.ndarray:
        if self.probe is None:
            return np.full(len(pooled), -np.inf)
        return self.probe.scores(pooled).numpy()


def _forward(encoder: TextEncoder, b: _Batch) -> torch.Tensor:
    return mean_pool(encoder.module()(b.ids.to(encoder.device), b.mask.to(encoder.device)).cpu(), b.mask).double()


def _allowed_tokens(encoder: TextEncoder) -> torch.Tensor:
    """Vocabulary entries a user can type: no special, unused or control entries."""
    tok = encoder.tokenizer
    n = _input_embeddings(encoder).num_embeddings
    ok = torch.zeros(n, dtype=torch.bool)
    special = set(tok.all_special_ids)
    for token, i in tok.get_vocab().items():
        if i < n and i not in special and not (token.startswith("[") and token.endswith("]")) \
                and not token.startswith("<|"):
            ok[i] = True
    return ok


def run_attack(encoder: TextEncoder, prompts: Sequence[str], *, targets: torch.Tensor, probe: Probe,
               threshold: float, cfg: AttackConfig) -> AttackResult:
    """Attack every prompt within ``cfg``'s budget (module docstring); ``targets``: the base
    encoder's pooled embeddings of ``prompts`` ``[P, H]``."""
    check_attack(encoder, cfg)
    if len(prompts) != len(targets):
        raise ValueError(f"targets: {len(targets)} rows for {len(prompts)} prompts")
    model = encoder.model
    was_training = model.training
    model.eval()
    try:
        return _attack(encoder, prompts, objective=_Objective(targets, probe, threshold, cfg.objective), cfg=cfg)
    finally:
        model.train(was_training)


def _attack(encoder: TextEncoder, prompts: Sequence[str], *, objective: _Objective, cfg: AttackConfig) -> AttackResult:
    n = len(prompts)
    steps = np.full(n, -1)
    with torch.no_grad():   # step 0: the unedited prompts, tokenized as the evaluators do
        tok = encoder.tokenize(prompts, pad_to_max=False)
        scores = np.concatenate([objective.scores(mean_pool(encoder.embed_tokens(
            {k: v[i:i + cfg.batch_size] for k, v in tok.items()}), tok["attention_mask"][i:i + cfg.batch_size])
            .double()) for i in range(0, n, cfg.batch_size)])
    steps[scores > objective.threshold] = 0
    splicer = _Splicer(encoder, prompts, cfg)
    init = encoder.tokenizer(cfg.init, add_special_tokens=False)["input_ids"][0]
    adv = torch.full((n, cfg.n_tokens), int(init), dtype=torch.long)
    search = _SoftSearch(encoder, splicer, adv, cfg) if cfg.mode == "soft" else _TokenSearch(encoder, splicer, adv, cfg)
    for t in range(1, cfg.steps + 1):
        active = np.flatnonzero(steps < 0)
        if not len(active):
            break
        got = search.step(active.tolist(), objective)
        scores[active] = got
        steps[active[got > objective.threshold]] = t
    return AttackResult(steps=steps, budget=cfg.steps, scores=scores, adversarial=search.decoded(prompts))


def search_tokens(encoder: TextEncoder, prompts: Sequence[str], *, targets: torch.Tensor, cfg: AttackConfig,
                  start: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The token attack without a detector (adversarial training): ``cfg.steps`` rounds on every
    prompt from ``start`` ``[P, k]`` (default: the init token), then the k tokens and the edited
    prompts' tokens padded to ``encoder.max_length`` (``input_ids``, ``attention_mask``)."""
    check_attack(encoder, cfg)
    model = encoder.model
    was_training = model.training
    model.eval()
    try:
        splicer = _Splicer(encoder, prompts, cfg)
        if start is None:
            init = encoder.tokenizer(cfg.init, add_special_tokens=False)["input_ids"][0]
            start = torch.full((len(prompts), cfg.n_tokens), int(init), dtype=torch.long)
        search = _TokenSearch(encoder, splicer, start.clone(), cfg)
        objective = _Objective(targets, None, float("inf"), "base")
        for _ in range(cfg.steps):
            search.step(list(range(len(prompts))), objective)
    finally:
        model.train(was_training)
    b = splicer.batch(range(len(prompts)), search.adv)
    width = encoder.max_length - b.ids.shape[1]
    ids = torch.nn.functional.pad(b.ids, (0, width), value=splicer.pad)
    return search.adv, {"input_ids": ids, "attention_mask": torch.nn.functional.pad(b.mask, (0, width))}


class _TokenSearch:
    """Greedy coordinate search over the vocabulary with gradient-ranked candidates (GCG)."""

    def __init__(self, encoder: TextEncoder, splicer: _Splicer, adv: torch.Tensor, cfg: AttackConfig):
        self.encoder, self.splicer, self.adv, self.cfg = encoder, splicer, adv, cfg
        self.emb = _input_embeddings(encoder)
        self.allowed = _allowed_tokens(encoder)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    def _gradient(self, which: list[int], objective: _Objective) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """d loss / d one-hot ``[n, k, V]``, and the loss and pooled output of the current state."""
        b = self.splicer.batch(which, self.adv[which])
        weight = self.emb.weight
        one_hot = torch.nn.functional.one_hot(self.adv[which].to(weight.device), weight.shape[0]).to(weight.dtype)
        one_hot.requires_grad_(True)
        with torch.enable_grad(), _inject(self.emb, b.rows, b.cols, (one_hot @ weight).reshape(-1, weight.shape[1])):
            pooled = _forward(self.encoder, b)
            loss = objective.loss(pooled, torch.tensor(which))
            # None for an encoder whose output ignores its input
            grad = torch.autograd.grad(loss.sum(), one_hot, allow_unused=True)[0] if loss.requires_grad else None
        if grad is None:
            grad = torch.zeros_like(one_hot)
        return grad.detach().cpu(), loss.detach(), pooled.detach()

    def step(self, which: list[int], objective: _Objective) -> np.ndarray:
        cfg, n, k = self.cfg, len(which), self.splicer.k
        grad, loss, pooled = self._gradient(which, objective)
        grad[:, :, ~self.allowed] = float("inf")
        top = torch.topk(-grad, min(cfg.top_k, int(self.allowed.sum())), dim=-1).indices   # [n, k, top_k]
        pos = torch.randint(k, (n, cfg.candidates), generator=self.gen)
        pick = torch.randint(top.shape[-1], (n, cfg.candidates), generator=self.gen)
        cand = self.adv[which].unsqueeze(1).repeat(1, cfg.candidates, 1)                     # [n, C, k]
        r = torch.arange(n)[:, None].expand(n, cfg.candidates)
        cand[r, torch.arange(cfg.candidates)[None, :].expand(n, -1), pos] = top[r, pos, pick]
        flat_which = [i for i in which for _ in range(cfg.candidates)]
        flat = cand.reshape(-1, k)
        c_pooled = torch.cat([self._no_grad_pooled(flat_which[s:s + cfg.batch_size], flat[s:s + cfg.batch_size])
                              for s in range(0, len(flat_which), cfg.batch_size)])
        c_loss = objective.loss(c_pooled, torch.tensor(flat_which)).reshape(n, cfg.candidates)
        best = c_loss.argmin(dim=1)
        better = c_loss[torch.arange(n), best] < loss
        chosen = torch.where(better[:, None], c_pooled.reshape(n, cfg.candidates, -1)[torch.arange(n), best], pooled)
        self.adv[torch.tensor(which)[better]] = cand[torch.arange(n), best][better]
        return objective.scores(chosen)

    def _no_grad_pooled(self, which: list[int], adv: torch.Tensor) -> torch.Tensor:
        b = self.splicer.batch(which, adv)
        with torch.no_grad():
            return _forward(self.encoder, b)

    def decoded(self, prompts: Sequence[str]) -> list[str]:
        tok = self.encoder.tokenizer
        return [f"{p} {tok.decode(a)}" if self.splicer.suffix else f"{tok.decode(a)} {p}"
                for p, a in zip(prompts, self.adv.tolist(), strict=True)]


class _SoftSearch:
    """Free input-embedding vectors at the k positions, optimised by Adam (the upper bound)."""

    def __init__(self, encoder: TextEncoder, splicer: _Splicer, adv: torch.Tensor, cfg: AttackConfig):
        self.encoder, self.splicer, self.adv = encoder, splicer, adv
        self.emb = _input_embeddings(encoder)
        weight = self.emb.weight.detach()
        self.vectors = weight[adv.to(weight.device)].clone().requires_grad_(True)   # [P, k, H]
        self.opt = torch.optim.Adam([self.vectors], lr=cfg.lr)

    def step(self, which: list[int], objective: _Objective) -> np.ndarray:
        b = self.splicer.batch(which, self.adv[which])
        values = self.vectors[torch.tensor(which)].reshape(-1, self.vectors.shape[-1])
        with torch.enable_grad(), _inject(self.emb, b.rows, b.cols, values):
            pooled = _forward(self.encoder, b)
            loss = objective.loss(pooled, torch.tensor(which))
            # gradients of the vectors only (the encoder's own parameters are left alone)
            if loss.requires_grad:
                self.vectors.grad = torch.autograd.grad(loss.sum(), self.vectors)[0]
                self.opt.step()
        return objective.scores(pooled.detach())

    def decoded(self, prompts: Sequence[str]) -> list[str]:
        return [f"{p} <soft x{self.splicer.k}>" if self.splicer.suffix else f"<soft x{self.splicer.k}> {p}"
                for p in prompts]
