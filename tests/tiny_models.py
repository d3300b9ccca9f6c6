"""Tiny models built from configs in memory (no downloads), shared by the tests and benches."""

from __future__ import annotations

import json
from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level alphabet, so every byte of any prompt maps to a vocabulary entry.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tiny_clip_tokenizer(path: str | Path) -> Path:
    """A real ``CLIPTokenizer`` with a byte-level vocabulary and a few merges."""
    from transformers import CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges = ["t h", "th e</w>", "a n", "i n", "o n</w>", "e r</w>"]
    vocab_list += [m.replace(" ", "") for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=77)
    tok.save_pretrained(path)
    return path


def tiny_clip_config(vocab_size: int, *, hidden: int = 32, layers: int = 2, seed_dim: int = 37):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=seed_dim,
                          num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=77,
                          projection_dim=hidden, eos_token_id=vocab_size - 1, bos_token_id=vocab_size - 2,
                          pad_token_id=vocab_size - 1)


def make_tiny_clip_encoder(path: str | Path, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a Stable-Diffusion-style ``text_encoder/`` + ``tokenizer/`` pair of a tiny CLIP."""
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path)
    tok_dir = write_tiny_clip_tokenizer(path / "tokenizer")
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(seed)
    model = CLIPTextModel(tiny_clip_config(len(tok), hidden=hidden, layers=layers))
    model.save_pretrained(path / "text_encoder", safe_serialization=True)
    return path
