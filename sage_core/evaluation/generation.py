"""Images from a frozen Stable Diffusion pipeline whose text encoder is swapped for an aligned one.

Paper protocol (``docs/method.md`` section 7): DDIM from the model's scheduler config with eta = 0,
50 steps, CFG 7.5, 512x512, one image per prompt, no safety checker; seed 42 + index per prompt
(our recorded deviation). The text side is our encoder's ``embed`` (padded, CLIP without mask,
as SD does) for the prompt and for "" (the unconditional branch), passed as ``prompt_embeds``.
Each prompt gets its own ``torch.Generator``, so an image depends only on (prompt, seed, settings,
weights), not on the batch it was in. Images are cached as PNG under
``<cache>/<key[:2]>/<key>.png``, key = sha256(encoder weights, SD folder, prompt, seed, settings).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..defs.errors import ModelError, StorageError
from ..encoders import TextEncoder

__all__ = ["GenerationSettings", "ImageGenerator", "resolve_device"]


@dataclass(frozen=True)
class GenerationSettings:
    steps: int = 50
    guidance_scale: float = 7.5
    height: int = 512
    width: int = 512
    eta: float = 0.0
    scheduler: str = "ddim"


def resolve_device(device: str, precision: str) -> tuple[torch.device, torch.dtype]:
    """auto -> cuda when available; precision auto -> bf16 on GPU, fp32 on CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device='cuda' but no CUDA device is visible; use device='cpu' or 'auto'")
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision == "auto":
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    else:
        dtype = dtypes[precision]
    return torch.device(device), dtype


def _folder_fingerprint(path: Path) -> str:
    """sha256 of the configs and (name, size, mtime) of the weight files: cheap, changes with the weights."""
    h = hashlib.sha256(str(path.resolve()).encode())
    for sub in ("unet", "vae", "scheduler"):
        for f in sorted((path / sub).glob("*")):
            if f.suffix == ".json":
                h.update(f.read_bytes())
            elif f.is_file():
                st = f.stat()
                h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


class ImageGenerator:
    """Loads the frozen UNet, VAE and DDIM scheduler of one SD folder once; generates for any encoder."""

    def __init__(self, sd_model: str | os.PathLike, *, cache_dir: str | os.PathLike,
                 settings: GenerationSettings = GenerationSettings(), device: str = "auto",
                 precision: str = "auto", batch_size: int = 8):
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # lazy: diffusers (~2 s)

        path = Path(sd_model).expanduser()
        missing = [s for s in ("unet", "vae", "scheduler") if not (path / s).is_dir()]
        if not path.is_dir() or missing:
            raise ModelError(f"sd_model={str(sd_model)!r}: not a Stable Diffusion folder "
                             f"(missing {', '.join(missing) if path.is_dir() else 'the folder'}); "
                             "give a local diffusers folder with unet/, vae/, scheduler/ (nothing is downloaded)")
        self.path = path
        self.settings = settings
        self.batch_size = batch_size
        self.device, self.dtype = resolve_device(device, precision)
        try:
            self.unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", local_files_only=True,
                                                             torch_dtype=self.dtype).to(self.device).eval()
            self.vae = AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True,
                                                     torch_dtype=self.dtype).to(self.device).eval()
            self.scheduler = DDIMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"sd_model={str(sd_model)!r}: could not load ({first})") from None
        self.cache_dir = Path(cache_dir).expanduser()
        self._sd_fingerprint = _folder_fingerprint(path)
        self.generated = 0  # images actually generated (not served from the cache)

    @classmethod
    def from_components(cls, *, unet, vae, scheduler, cache_dir: str | os.PathLike, fingerprint: str,
                        settings: GenerationSettings = GenerationSettings(), device: str = "auto",
                        precision: str = "auto", batch_size: int = 8) -> ImageGenerator:
        """Same generator around in-memory components (benchmarks with random weights); ``fingerprint``
        stands in for the folder's in the cache key."""
        self = cls.__new__(cls)
        self.path = Path("<memory>")
        self.settings, self.batch_size = settings, batch_size
        self.device, self.dtype = resolve_device(device, precision)
        self.unet = unet.to(self.device, self.dtype).eval()
        self.vae = vae.to(self.device, self.dtype).eval()
        self.scheduler = scheduler
        self.cache_dir = Path(cache_dir).expanduser()
        self._sd_fingerprint = fingerprint
        self.generated = 0
        return self

    def key(self, encoder: TextEncoder, prompt: str, seed: int) -> str:
        blob = json.dumps({"encoder": encoder.fingerprint(), "max_length": encoder.max_length,
                           "sd": self._sd_fingerprint, "prompt": prompt, "seed": seed,
                           "settings": asdict(self.settings), "dtype": str(self.dtype)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def image_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.png"

    def _pipeline(self, encoder: TextEncoder):
        from diffusers import StableDiffusionPipeline  # lazy: diffusers (~2 s), only for image generation

        cross = getattr(self.unet.config, "cross_attention_dim", None)
        if cross is not None and int(cross) != encoder.hidden_size:
            raise ModelError(f"encoder {encoder.source!r} has hidden size {encoder.hidden_size} but the UNet of "
                             f"{self.path} reads {cross}; image-level evaluation needs the SD text encoder "
                             "(or one trained from it)")
        # No text encoder in the pipeline: it gets embeddings, and with an (fp32) text encoder it would
        # cast them to fp32 while the UNet runs in bf16/fp16 (a dtype error on any half-precision run).
        return StableDiffusionPipeline(vae=self.vae, text_encoder=None, tokenizer=None,
                                       unet=self.unet, scheduler=self.scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)

    def generate(self, encoder: TextEncoder, prompts: Sequence[str], *, seeds: Sequence[int],
                 progress: bool = False) -> list[Path]:
        """PNG paths, one per prompt (seed ``seeds[i]``); only cache misses are generated."""
        if len(seeds) != len(prompts):
            raise ValueError("one seed per prompt")
        keys = [self.key(encoder, p, s) for p, s in zip(prompts, seeds, strict=True)]
        paths = [self.image_path(k) for k in keys]
        todo = [i for i, p in enumerate(paths) if not p.is_file()]
        if not todo:
            return paths
        pipe = self._pipeline(encoder)
        pipe.set_progress_bar_config(disable=True)  # per-step bars of every batch; `progress` shows batches
        model_device = encoder.device
        encoder.model.to(self.device)
        uncond = encoder.embed([""]).to(self.device, self.dtype)
        chunks: Iterable[int] = range(0, len(todo), self.batch_size)
        if progress:
            chunks = tqdm(chunks, desc="generating", unit="batch", leave=False)
        try:
            for start in chunks:
                idx = todo[start:start + self.batch_size]
                emb = encoder.embed([prompts[i] for i in idx]).to(self.device, self.dtype)
                gens = [torch.Generator(device=self.device).manual_seed(int(seeds[i])) for i in idx]
                with torch.inference_mode():
                    out = pipe(prompt_embeds=emb, negative_prompt_embeds=uncond.expand(len(idx), -1, -1),
                               num_inference_steps=self.settings.steps, guidance_scale=self.settings.guidance_scale,
                               height=self.settings.height, width=self.settings.width, eta=self.settings.eta,
                               generator=gens, output_type="np")
                for i, arr in zip(idx, out.images, strict=True):
                    img = Image.fromarray((arr * 255).round().clip(0, 255).astype("uint8"))
                    _atomic_png(img, paths[i])
                    self.generated += 1
        finally:
            encoder.model.to(model_device)
        return paths


def _atomic_png(img, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write images to {path.parent}: {exc.strerror or exc}") from None
