"""``sd14-init``: the Stable Diffusion v1.4 text encoder's shape, with random weights, offline.

A ``CLIPTextModel`` with SD v1.4's ``text_encoder/config.json`` (12 layers, hidden 768, 12 heads,
MLP 3072, quick_gelu, 77 positions, 49,408 tokens: 123M parameters) initialised from a fixed seed,
and SD's tokenizer rebuilt from the CLIP BPE merges file that the PyPI package ``open-clip-torch``
ships (``open_clip/bpe_simple_vocab_16e6.txt.gz``). Its ids equal Stable Diffusion's
("a photo of a cat" -> 49406, 320, 1125, 539, 320, 2368, 49407).

The weights are random, so a run on it says nothing about safety or utility: it exists to run
the paper's shapes (memory, speed, ZeRO at real width, the real tokenizer) with nothing downloaded.
This module imports torch and transformers only inside the functions that build things (the config
check asks :func:`sage_core.defs.locations.encoder_is_clip`, which reads only a ``config.json``).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .defs.errors import ModelError
from .defs.locations import default_cache_dir

__all__ = ["SD14_SEED", "SD14_TEXT_CONFIG", "sd14_text_config", "bpe_merges_path",
           "sd14_tokenizer", "build_sd14_init"]

#: Seed of the random initialisation: the same weights in every process and on every machine.
SD14_SEED = 1400

#: ``text_encoder/config.json`` of Stable Diffusion v1.4 (the CLIP ViT-L/14 text tower).
SD14_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "attention_dropout": 0.0, "dropout": 0.0, "initializer_range": 0.02,
    "initializer_factor": 1.0, "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}

# CLIP's vocabulary: 256 byte symbols, the same with "</w>", the first 49152 - 256 - 2 merges, 2 specials.
_N_MERGES = 49152 - 256 - 2
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def sd14_text_config():
    """A fresh ``CLIPTextConfig`` equal to SD v1.4's text encoder configuration."""
    from transformers import CLIPTextConfig  # lazy: transformers (~1 s), only for loading a model

    return CLIPTextConfig(**SD14_TEXT_CONFIG)


def bpe_merges_path() -> Path:
    """The BPE merges file of ``open-clip-torch``, found without importing ``open_clip``
    (its import pulls torchvision, which we do not install)."""
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    raise ModelError("encoder 'sd14-init' needs the CLIP BPE merges file of the package open-clip-torch "
                     "(pip install --no-deps open-clip-torch; `make env` installs it)")


def _bytes_to_unicode() -> list[str]:
    """CLIP/GPT-2's printable stand-in for each of the 256 bytes, in CLIP's vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def _write_vocab(merges_gz: Path, folder: Path) -> None:
    """``vocab.json`` + ``merges.txt`` (CLIP's, built as open_clip's SimpleTokenizer does) into ``folder``."""
    lines = gzip.decompress(merges_gz.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:_N_MERGES + 1]  # line 0 is the version header
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + list(_SPECIALS)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != SD14_TEXT_CONFIG["vocab_size"]:
        raise ModelError(f"{merges_gz}: gives {len(vocab)} distinct tokens, expected "
                         f"{SD14_TEXT_CONFIG['vocab_size']} (not CLIP's bpe_simple_vocab_16e6)")
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _vocab_folder(cache_dir: Path) -> Path:
    """The vocabulary files in ``cache_dir``, written once (atomically) per merges file."""
    merges_gz = bpe_merges_path()
    digest = hashlib.sha256(merges_gz.read_bytes()).hexdigest()[:16]
    folder = cache_dir / f"clip-bpe-{digest}"
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".clip-bpe-", dir=cache_dir))
    try:
        _write_vocab(merges_gz, tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "vocab.json").is_file():  # not a concurrent writer that won the rename
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def sd14_tokenizer(cache_dir: str | os.PathLike | None = None):
    """Stable Diffusion's ``CLIPTokenizer`` (pad = ``<|endoftext|>``, 77 tokens), built offline.

    ``cache_dir`` holds the vocabulary files; default ``$SAGE_CACHE_DIR``, else ``~/.cache/sage-sweeps``.
    """
    from transformers import CLIPTokenizer  # lazy: transformers (~1 s), only for loading a model

    folder = _vocab_folder(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                         model_max_length=SD14_TEXT_CONFIG["max_position_embeddings"])


def build_sd14_init(*, seed: int = SD14_SEED, cache_dir: str | os.PathLike | None = None):
    """``(CLIPTextModel, CLIPTokenizer)``: SD v1.4's text encoder shape, weights drawn from ``seed``.

    The draw uses a forked RNG, so building it leaves the caller's random state untouched.
    """
    import torch  # lazy: torch (~1 s), only for building the SD v1.4 init
    from transformers import CLIPTextModel  # lazy: transformers (~1 s), only for loading a model

    tokenizer = sd14_tokenizer(cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(sd14_text_config())
    model.eval()
    return model, tokenizer


