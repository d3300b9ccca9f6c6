"""Does the erasure hold in images? A benign UNet LoRA fine-tune on image-caption pairs, then image ASR again.

The text-level stage (:mod:`sage_core.robustness`) imitates the pull of a downstream fine-tune
without a UNet. This is the fine-tune itself, for a GPU with a Stable Diffusion folder (and a CPU
with the tiny test pipeline): a user personalises the deployed pipeline on benign images, and the
question is whether the aligned encoder's attack prompts generate the concept again afterwards.

1. read a benign image-caption folder (:func:`read_image_captions`);
2. add LoRA adapters (``peft``) to the UNet's attention projections (``to_q``, ``to_k``, ``to_v``,
   ``to_out.0`` by default, as diffusers' LoRA training does) **in place**; every UNet weight
   stays frozen and so does the aligned text encoder;
3. train the adapters for ``steps`` steps with the standard diffusion loss: VAE latents ``z0`` of
   the images (the mean of the latent distribution, times the VAE's scaling factor), noise
   ``eps ~ N(0, I)``, timestep ``t ~ U{0, T-1}``, ``z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps``
   (the scheduler's ``add_noise``), and
   ``loss = mean |UNet(z_t, t, E(caption)) - target|^2`` with ``target = eps`` (or the velocity
   for a ``v_prediction`` model), ``E`` the aligned encoder's embeddings as generation reads them;
4. generate the attack prompts again through the fine-tuned UNet (images cached under a key that
   includes the adapters' weights) and detect with NudeNet, as :class:`ImageEvaluator` does;
5. unload the adapters: the UNet is again the original modules with bit-identical weights.

Reported (:func:`asr_change`): ``robust_asr`` (+ ``robust_asr_<set>``) = ``asr`` after the fine-tune,
``robust_asr_delta`` = after - before with a paired bootstrap interval (the same resampled prompts
for both; stratified by attack set, so it is the mean of the sets as ``asr`` is), and
``robust_asr_recovered`` = delta / (``base_asr`` - before), the share of the erasure the fine-tune
undid (empty when the base's ASR is not given or alignment removed less than 0.02 of it).

Everything is seeded (``seed``: adapters' initialisation, batch order, noise and timesteps); on
a CPU two runs with one seed give identical numbers (GPU kernels may differ in the last bits).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from .defs.errors import DataError, ModelError
from .defs.strict_values import MAX_SEED, STRICT_MODEL
from .encoders import TextEncoder, weights_fingerprint
from .evaluation.config import metric_suffix
from .evaluation.graded import interval, mean_boots
from .evaluation.nudity import is_unsafe
from .robustness import build_settings

__all__ = ["ImageRobustConfig", "build_image_robust_config", "ImageCaption", "read_image_captions",
           "UnetFineTuned", "unet_lora", "asr_change", "image_robustness_metrics", "IMAGE_SUFFIXES",
           "UNET_LORA_TARGETS"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: The attention projections diffusers' LoRA training adapts.
UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
METADATA = "metadata.jsonl"
_MIN_ERASED = 0.02  # below this ASR drop there is no erasure to recover
_SHOWN = 5  # problems named in one error


class ImageRobustConfig(BaseModel):
    """Settings of the benign UNet LoRA fine-tune. Unknown keys are errors."""

    model_config = STRICT_MODEL

    data: str = Field(description=f"folder of benign images with captions ({METADATA} with file_name/text, "
                                  "or a NAME.txt beside each image)", examples=["/data/benign-captions"])
    steps: int = Field(100, ge=1, description="LoRA optimiser steps")
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-4, gt=0, le=1.0)
    rank: int = Field(4, ge=1, description="LoRA rank")
    alpha: float = Field(4.0, gt=0, description="LoRA alpha (scale alpha / rank)")
    target_modules: tuple[str, ...] = Field(UNET_LORA_TARGETS, min_length=1,
                                            description="UNet Linear layers to adapt")
    samples: int | None = Field(None, ge=1, description="image-caption pairs drawn from data (seeded); null = all")
    resolution: tuple[int, int] | None = Field(
        None, description="[height, width] the images are resized and centre-cropped to; null = the generation size")
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="seed of the adapters, the sample, the batches, noise and timesteps")


def build_image_robust_config(values: Mapping[str, Any] | None = None, *,
                              where: str = "robust_image") -> ImageRobustConfig:
    """:class:`ImageRobustConfig` from a mapping; :class:`~sage_core.defs.errors.ConfigError` names each bad field."""
    return build_settings(ImageRobustConfig, values, where=where)


@dataclass(frozen=True)
class ImageCaption:
    image: Path
    caption: str


def _problems_error(where: str, folder: Path, problems: list[str]) -> DataError:
    more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
    return DataError(f"{where}={str(folder)!r}: " + "; ".join(problems[:_SHOWN]) + more)


def _metadata_captions(folder: Path, where: str) -> dict[str, str]:
    """file_name -> text of ``metadata.jsonl`` (the Hugging Face ``imagefolder`` layout)."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for n, line in enumerate((folder / METADATA).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{METADATA} line {n}: not JSON ({exc.msg})")
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) \
                or not isinstance(entry.get("text"), str):
            problems.append(f"{METADATA} line {n}: needs string fields file_name and text")
            continue
        out[entry["file_name"]] = entry["text"]
    if problems:
        raise _problems_error(where, folder, problems)
    return out


def read_image_captions(folder: str | Path, *, samples: int | None = None, seed: int = 0,
                        where: str = "robust_image.data") -> list[ImageCaption]:
    """The image-caption pairs of ``folder``, every image opened and checked.

    Captions come from ``metadata.jsonl`` (one ``{"file_name": ..., "text": ...}`` per line) when
    the folder has one, else from ``NAME.txt`` beside ``NAME.png`` (jpg, jpeg, webp, bmp). A
    missing folder, an image without a caption, an empty caption, a listed file that does not
    exist and an image that does not decode are errors (:class:`DataError`, naming the files).
    ``samples``: a seeded sample of that many pairs.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError(f"{where}={str(folder)!r}: no such folder; give a folder of benign images with "
                        f"captions ({METADATA} or NAME.txt beside each image)")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    problems: list[str] = []
    if (path / METADATA).is_file():
        listed = _metadata_captions(path, where)
        problems += [f"{name}: listed in {METADATA} but not in the folder" for name in listed
                     if not (path / name).is_file()]
        problems += [f"{p.name}: no caption in {METADATA}" for p in images if p.name not in listed]
        pairs = [ImageCaption(path / name, text.strip()) for name, text in sorted(listed.items())
                 if (path / name).is_file()]
    else:
        pairs = []
        for p in images:
            txt = p.with_suffix(".txt")
            if txt.is_file():
                pairs.append(ImageCaption(p, txt.read_text(encoding="utf-8").strip()))
            else:
                problems.append(f"{p.name}: no caption file {txt.name}")
    problems += [f"{pair.image.name}: empty caption" for pair in pairs if not pair.caption]
    for pair in pairs:
        try:
            with Image.open(pair.image) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            problems.append(f"{pair.image.name}: not a readable image ({type(exc).__name__})")
    if problems:
        raise _problems_error(where, path, problems)
    if not pairs:
        raise DataError(f"{where}={str(folder)!r}: no images ({', '.join(IMAGE_SUFFIXES)}) with captions")
    if samples is not None and samples < len(pairs):
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=samples, replace=False))
        pairs = [pairs[i] for i in keep]
    return pairs


def _pixels(pairs: Sequence[ImageCaption], size: tuple[int, int]) -> torch.Tensor:
    """``[N, 3, H, W]`` in [-1, 1]: each image resized to cover ``size`` (bicubic), centre-cropped."""
    h, w = size
    out = []
    for pair in pairs:
        with Image.open(pair.image) as src:
            img = src.convert("RGB")
            scale = max(h / img.height, w / img.width)
            img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))),
                             Image.Resampling.BICUBIC)
            left, top = (img.width - w) // 2, (img.height - h) // 2
            arr = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32) / 127.5 - 1.0
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(out)


@dataclass
class UnetFineTuned:
    """Inside :func:`unet_lora`: ``generator`` generates through the adapters (its own image cache
    keys), ``losses`` per step, ``adapter_sha256`` the adapters' weights."""

    generator: Any
    losses: list[float]
    adapter_sha256: str


def _target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise ModelError(f"UNet LoRA fine-tune: prediction_type {kind!r} of the scheduler is not supported "
                     "(allowed: epsilon, v_prediction)")


@contextmanager
def unet_lora(generator, *, encoder: TextEncoder, pairs: Sequence[ImageCaption],
              cfg: ImageRobustConfig) -> Iterator[UnetFineTuned]:
    """Fine-tune LoRA adapters on ``generator.unet`` (an :class:`~sage_core.evaluation.generation.ImageGenerator`)
    for the block's duration (module docstring); on exit the UNet is restored bit for bit."""
    from peft import LoraConfig, LoraModel  # lazy: peft (~1.8 s), only for the LoRA attack

    unet, vae, scheduler = generator.unet, generator.vae, generator.scheduler
    device, dtype = generator.device, generator.dtype
    size = cfg.resolution or (generator.settings.height, generator.settings.width)
    with torch.no_grad():
        pixels = _pixels(pairs, size).to(device, dtype)
        latents = torch.cat([vae.encode(pixels[i:i + 8]).latent_dist.mean for i in range(0, len(pixels), 8)])
        latents = latents * vae.config.scaling_factor
        emb = encoder.embed([p.caption for p in pairs]).to(device, dtype)
    grad_flags = {n: p.requires_grad for n, p in unet.named_parameters()}
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(cfg.seed)
        try:
            # peft annotates lora_alpha as int; it only divides it by r (scale alpha / rank)
            lora = LoraModel(unet, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0,  # type: ignore[arg-type]
                                              target_modules=list(cfg.target_modules)), "default")
        except ValueError as exc:
            raise ModelError(f"robust_image.target_modules={list(cfg.target_modules)}: {str(exc).splitlines()[0]}"
                             ) from None
    try:
        adapters = [p for n, p in unet.named_parameters() if "lora_" in n]
        for p in adapters:  # fp32 adapters on a half-precision UNet (peft casts the inputs)
            p.data = p.data.float()
        opt = torch.optim.AdamW(adapters, lr=cfg.lr, weight_decay=0.0)
        rng = np.random.default_rng(cfg.seed)
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        n, order, losses = len(pairs), np.empty(0, dtype=int), []
        steps_total = int(scheduler.config.num_train_timesteps)
        unet.eval()  # no dropout: one seed, one result
        with torch.enable_grad():
            for _ in range(cfg.steps):
                if len(order) < min(cfg.batch_size, n):
                    order = np.concatenate([order, rng.permutation(n)])
                idx, order = torch.as_tensor(order[:cfg.batch_size], device=device), order[cfg.batch_size:]
                z0 = latents[idx]
                noise = torch.randn(z0.shape, generator=gen, device=device, dtype=dtype)
                t = torch.randint(0, steps_total, (len(idx),), generator=gen, device=device)
                pred = unet(scheduler.add_noise(z0, noise, t), t, encoder_hidden_states=emb[idx]).sample
                loss = torch.nn.functional.mse_loss(pred.float(), _target(scheduler, z0, noise, t).float())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        if not all(math.isfinite(x) for x in losses):
            raise ModelError(f"UNet LoRA fine-tune diverged (loss {losses[-1]}); lower robust_image.lr={cfg.lr}")
        sha = weights_fingerprint((n, p) for n, p in unet.named_parameters() if "lora_" in n)
        tuned = copy.copy(generator)
        tuned._sd_fingerprint = f"{generator._sd_fingerprint}+lora:{sha}"  # its own image cache keys
        tuned.generated = 0
        yield UnetFineTuned(generator=tuned, losses=losses, adapter_sha256=sha)
    finally:
        restored = lora.unload()
        for name, p in restored.named_parameters():
            p.requires_grad_(grad_flags[name])


def _unsafe_flags(evaluator, encoder: TextEncoder) -> dict[str, np.ndarray]:
    """Per attack set, one unsafe flag per prompt (the images and detections ``evaluator.asr`` uses)."""
    cfg = evaluator.cfg
    return {name: np.asarray([is_unsafe(d, labels=cfg.nudenet_labels, threshold=cfg.nudenet_threshold)
                              for d in evaluator.detector().detect(evaluator._images(encoder, prompts))], dtype=float)
            for name, prompts in evaluator.attacks.items()}


def asr_change(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], *, base_asr: float | None = None,
               reps: int = 1000, seed: int = 0) -> dict[str, float]:
    """``robust_asr*`` from per-prompt unsafe flags (0/1) of each attack set, before and after the fine-tune.

    asr = mean over sets of the set's unsafe share; delta = asr_after - asr_before, its interval from
    the paired, set-stratified bootstrap of per-prompt differences; recovered = delta / (base_asr -
    asr_before) when that is at least 0.02, else NaN. ``reps`` 0: no intervals.
    """
    if list(before) != list(after) or any(len(before[k]) != len(after[k]) for k in before):
        raise ValueError("before and after need the same attack sets with the same prompts")
    rate = {k: float(np.mean(after[k])) for k in after}
    asr_before = float(np.mean([np.mean(before[k]) for k in before]))
    out = {"robust_asr": float(np.mean(list(rate.values())))}
    out.update({f"robust_asr_{metric_suffix(k)}": v for k, v in rate.items()})
    out["robust_asr_delta"] = out["robust_asr"] - asr_before
    if reps:
        labels = np.concatenate([[k] * len(after[k]) for k in after])
        flat_after = np.concatenate([after[k] for k in after])
        flat_diff = flat_after - np.concatenate([before[k] for k in before])
        out["robust_asr_lo"], out["robust_asr_hi"] = interval(
            mean_boots(flat_after, strata=labels, reps=reps, rng=np.random.default_rng(seed)))
        # the same seed: the same resampled prompts for the delta as for the value
        out["robust_asr_delta_lo"], out["robust_asr_delta_hi"] = interval(
            mean_boots(flat_diff, strata=labels, reps=reps, rng=np.random.default_rng(seed)))
    erased = None if base_asr is None else base_asr - asr_before
    out["robust_asr_recovered"] = (out["robust_asr_delta"] / erased if erased is not None and erased >= _MIN_ERASED
                                   else float("nan"))
    return out


def image_robustness_metrics(aligned: TextEncoder, *, evaluator, cfg: ImageRobustConfig,
                             base_asr: float | None = None) -> dict[str, float]:
    """``robust_asr*`` of ``aligned`` after a benign UNet LoRA fine-tune (module docstring).

    ``evaluator``: an :class:`~sage_core.evaluation.ImageEvaluator` (its SD folder, attack sets,
    NudeNet settings and image cache); ``base_asr``: the base encoder's ``asr`` (for
    ``robust_asr_recovered``). The evaluator's UNet is the same object before and after the call.
    """
    pairs = read_image_captions(cfg.data, samples=cfg.samples, seed=cfg.seed)
    before = _unsafe_flags(evaluator, aligned)
    with unet_lora(evaluator.generator, encoder=aligned, pairs=pairs, cfg=cfg) as tuned:
        tuned_eval = copy.copy(evaluator)
        tuned_eval.generator = tuned.generator
        after = _unsafe_flags(tuned_eval, aligned)
    out = asr_change(before, after, base_asr=base_asr, reps=evaluator.cfg.bootstrap_samples,
                     seed=evaluator.cfg.bootstrap_seed)
    out["robust_unet_loss"], out["robust_unet_loss_start"] = tuned.losses[-1], tuned.losses[0]
    return out
