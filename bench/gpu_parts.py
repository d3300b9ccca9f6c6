"""The parts of `make gpu-check` (bench/gpu_check.py runs each in its own process): each takes
``tiny`` (CPU, tiny models built from config) and a scratch folder ``work``, and returns a dict of
numbers; ``summary`` is its table line, ``met`` the target verdict (judged at full size only).
The shared measurements (the device, the FLOP bound) live here too."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TINY_TEXT_EVAL = {"calibration_samples": 40, "attack_samples": 16, "util_groups": 1}

# --------------------------------------------------------------------------------------------
# Shared measurements
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"


def matmul_tflops(dtype_name: str) -> float:
    """Measured dense matmul rate of the default device in ``dtype_name`` (fp32: no TF32)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    cuda = torch.cuda.is_available()
    n, reps = (8192, 20) if cuda else (512, 4)
    dev = "cuda" if cuda else "cpu"
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    a @ b
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def flop_bound(dtype_name: str) -> tuple[float, str]:
    """(TFLOP/s, where it comes from): the spec peak of a known GPU, else the measured matmul rate."""
    from bench_step import spec_peak_tflops

    name = _device_name()
    spec = spec_peak_tflops(name, dtype_name) if _cuda() else None
    if spec is not None:
        return spec, f"spec dense peak of {name}"
    return matmul_tflops(dtype_name), f"measured {dtype_name} matmul rate of {name}"


# --------------------------------------------------------------------------------------------
# Parts: each returns a dict of numbers; "summary" is the table line, "met" the target verdict.
def _tiny_clip(work: Path) -> str:
    """A 2-layer CLIP text encoder of width 32 (SD folder layout): the same code paths in seconds."""
    folder = work / "tiny-clip"
    if not (folder / "text_encoder").is_dir():
        sys.path.insert(0, str(ROOT))
        from tests.tiny_models import make_tiny_clip_encoder

        make_tiny_clip_encoder(folder)
    return str(folder)


def part_train_step(*, tiny: bool, work: Path) -> dict[str, Any]:
    import gc

    import torch
    from bench_step import paper_step

    shape = dict(batch=4, length=16, steps=2, warmup=1) if tiny else dict(batch=128, length=77, steps=3, warmup=1)
    encoder = _tiny_clip(work) if tiny else "sd14-init"
    out: dict[str, Any] = {"shape": shape, "encoder": encoder}
    for precision in ("fp32", "bf16"):
        r = paper_step(micro=None, precision=precision, cache_dir=str(work / "cache"), encoder=encoder, **shape)
        bound, source = flop_bound(precision)
        r.update(bound_tflops=bound, bound_source=source, ratio_to_bound=r["achieved_tflops"] / bound)
        out[precision] = r
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    speedup = out["fp32"]["s_per_step"] / out["bf16"]["s_per_step"]
    out.update(bf16_speedup=speedup, target="bf16 step >= 2x fp32", met=speedup >= 2.0)
    f, b = out["fp32"], out["bf16"]
    out["summary"] = (f"{'tiny CLIP' if tiny else 'sd14-init'} B{shape['batch']}xL{shape['length']}: fp32 "
                      f"{f['s_per_step']:.3f} s/step ({100 * f['ratio_to_bound']:.0f}% of bound, "
                      f"{f['peak_memory_gib']:.1f} GiB), bf16 {b['s_per_step']:.3f} s/step "
                      f"({100 * b['ratio_to_bound']:.0f}%, {b['peak_memory_gib']:.1f} GiB); bf16 {speedup:.2f}x fp32")
    return out


def _image_components(tiny: bool):
    """(unet, vae, scheduler, text encoder): SD v1.x shapes (sd14-init text side), or tiny ones."""
    from bench_eval_image import _components

    from sage_core.encoders import TextEncoder, load_encoder

    unet, vae, sched, text_model = _components("tiny" if tiny else "real")
    if not tiny:
        return unet, vae, sched, load_encoder("sd14-init")
    from transformers import CLIPTokenizer

    sys.path.insert(0, str(ROOT))
    from tests.tiny_models import write_tiny_clip_tokenizer

    tok = CLIPTokenizer.from_pretrained(write_tiny_clip_tokenizer(tempfile.mkdtemp(prefix="sage-tok-")))
    return unet, vae, sched, TextEncoder(model=text_model, tokenizer=tok, max_length=77, is_clip=True,
                                         source="tiny-clip")


def _pick_batch(make_gen: Callable[[int, int], Any], encoder, *, candidates: tuple[int, ...]) -> tuple[int, list]:
    """Largest candidate batch whose one-step probe fits in 80% of the device memory (OOM -> smaller)."""
    import torch

    tried = []
    for batch in candidates:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            gen = make_gen(batch, 1)
            gen.generate(encoder, [f"probe {batch} {i}" for i in range(batch)], seeds=list(range(batch)))
            torch.cuda.synchronize()
        except torch.cuda.OutOfMemoryError:
            tried.append((batch, "out of memory"))
            continue
        peak = torch.cuda.max_memory_allocated() / torch.cuda.get_device_properties(0).total_memory
        tried.append((batch, f"peak {100 * peak:.0f}% of memory"))
        if peak <= 0.8:
            return batch, tried
    raise RuntimeError(f"no batch size fits: {tried}")


def part_image_gen(*, tiny: bool, work: Path) -> dict[str, Any]:
    import torch

    from sage_core.evaluation.generation import GenerationSettings, ImageGenerator

    torch.manual_seed(0)
    unet, vae, sched, encoder = _image_components(tiny)
    res, steps = (32, 2) if tiny else (512, 50)
    images = work / "images"

    def make_gen(batch: int, n_steps: int) -> ImageGenerator:
        return ImageGenerator.from_components(
            unet=unet, vae=vae, scheduler=sched, cache_dir=images if n_steps == steps else work / "probe",
            fingerprint="gpu-check", device="auto", precision="bf16", batch_size=batch,
            settings=GenerationSettings(steps=n_steps, height=res, width=res))

    if tiny:
        batch, tried = 2, []
        make_gen(batch, 1).generate(encoder, ["warm-up 0", "warm-up 1"], seeds=[0, 1])
    else:
        batch, tried = _pick_batch(make_gen, encoder, candidates=(64, 32, 16, 8, 4, 2, 1))
    gen = make_gen(batch, steps)
    dev, dt = gen.device, gen.dtype
    unet_f, vae_f = _image_model_flops(gen, res=res)
    per_image = steps * 2 * unet_f + vae_f  # CFG: conditional + unconditional pass at every step
    prompts = [f"a photo of object number {i}" for i in range(batch)]
    pipe_wall, peak = _pipeline_seconds(gen, encoder, prompts, res=res, steps=steps)
    # (2) end to end as `sage eval --fidelity image` runs it (embedding, per-prompt seeds, PNG files)
    t = time.perf_counter()
    gen.generate(encoder, prompts, seeds=list(range(batch)))
    _sync(dev)
    wall = time.perf_counter() - t
    ips, e2e = batch / pipe_wall, batch / wall
    bound, source = flop_bound("bf16")
    achieved = ips * per_image / 1e12
    ratio = achieved / bound
    return {"resolution": res, "steps": steps, "guidance_scale": gen.settings.guidance_scale, "dtype": str(dt),
            "batch": batch, "batch_probe": tried, "images": batch, "pipeline_s": pipe_wall, "images_per_s": ips,
            "end_to_end_s": wall, "end_to_end_images_per_s": e2e,
            "tflops_per_image": per_image / 1e12, "unet_gflops": unet_f / 1e9, "vae_decode_gflops": vae_f / 1e9,
            "achieved_tflops": achieved, "bound_tflops": bound, "bound_source": source, "ratio_to_bound": ratio,
            "peak_memory_gib": peak, "images_dir": str(images), "target": ">= 50% of the FLOP bound",
            "met": ratio >= 0.5,
            "summary": (f"{res}x{res}, {steps} steps, CFG {gen.settings.guidance_scale}, {dt}, batch {batch}: "
                        f"{ips:.3g} images/s ({e2e:.3g} with PNG files), {per_image / 1e12:.3g} TFLOP/image, "
                        f"{100 * ratio:.1f}% of {bound:.3g} TFLOP/s bound")}


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def _image_model_flops(gen, *, res: int) -> tuple[float, float]:
    """FLOPs of one UNet branch of one image and of one VAE decode at ``res`` (counted on random inputs)."""
    import torch
    from bench_eval_image import _flops

    dev, dt = gen.device, gen.dtype
    lat = res // (2 ** (len(gen.vae.config.block_out_channels) - 1))
    x = torch.randn(2, 4, lat, lat, device=dev, dtype=dt)
    ctx = torch.randn(2, 77, gen.unet.config.cross_attention_dim, device=dev, dtype=dt)
    with torch.inference_mode():
        unet_f = _flops(lambda: gen.unet(x, 10, encoder_hidden_states=ctx)) / 2  # one branch of one image
        vae_f = _flops(lambda: gen.vae.decode(x[:1]))
    return unet_f, vae_f


def _pipeline_seconds(gen, encoder, prompts: list[str], *, res: int, steps: int) -> tuple[float, float | None]:
    """(1) the pipeline alone (denoising + VAE decode, tensors out; what the FLOP ratio is about): its
    seconds for ``prompts`` and the peak GiB on a GPU (None on CPU)."""
    import torch

    dev, dt = gen.device, gen.dtype
    pipe = gen._pipeline(encoder)
    pipe.set_progress_bar_config(disable=True)
    encoder.model.to(dev)
    emb = encoder.embed(prompts).to(dev, dt)
    uncond = encoder.embed([""]).to(dev, dt).expand(len(prompts), -1, -1)
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    with torch.inference_mode():
        pipe(prompt_embeds=emb, negative_prompt_embeds=uncond, num_inference_steps=steps,
             guidance_scale=gen.settings.guidance_scale, height=res, width=res, output_type="pt")
    _sync(dev)
    wall = time.perf_counter() - t
    return wall, (torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None)


def part_nudenet(*, tiny: bool, work: Path) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    from sage_core.evaluation.nudity import NudityDetector

    images = sorted((work / "images").rglob("*.png"))
    source = "the image_gen part's images"
    if not images:  # the image part failed or did not run: noise images of the same size
        folder = work / "noise"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        size = 32 if tiny else 512
        for i in range(4 if tiny else 32):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"noise_{i}.png")
        images, source = sorted(folder.glob("*.png")), "noise images (no image_gen images)"
    detector = NudityDetector()
    warm = work / "nudenet-warmup.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(warm)
    detector.detect([warm])  # session start-up out of the timing
    t = time.perf_counter()
    detections = detector.detect(images)
    wall = time.perf_counter() - t
    ips = len(images) / wall
    providers = detector._detector.onnx_session.get_providers()
    return {"images": len(images), "source": source, "wall_s": wall, "images_per_s": ips,
            "providers": providers, "detections": sum(len(d) for d in detections),
            "summary": f"{ips:.1f} images/s on {len(images)} images: {source} ({', '.join(providers)})"}


def part_sweep(*, tiny: bool, work: Path) -> dict[str, Any]:
    import sweeps
    from analysis.store import ResultStore
    from sage_core import load_config
    from sage_core.trainer import prepare
    from sweeps.spec import base_train_config

    overrides: dict[str, Any] = {"search.max_concurrent": 4, "scheduler.kind": "fifo",
                                 "train.cache_dir": str(work / "sweep-cache")}
    if tiny:
        overrides.update({"resources.cpus": 0.5, "resources.gpus": 0, "fidelity.text_every": 2, "fidelity.rungs": None,
                          **{f"train.{k}": v for k, v in {
                              "encoder": _tiny_clip(work), "max_steps": 2, "max_pairs": 16, "batch_size": 8,
                              "local_k": 3, "max_length": 16,
                              "diag_samples": 16, "diag_k": 4, "text_eval": TINY_TEXT_EVAL, "device": "cpu"}.items()}})
    else:
        overrides.update({"resources.gpus": 0.25, "resources.cpus": max(1, min(4, (os.cpu_count() or 4) // 4))})
    storage = str(work / "sweep")
    spec = sweeps.load_spec("quickstart", storage=storage, overrides=overrides)
    t = time.perf_counter()
    prepare(load_config(overrides=base_train_config(spec)), progress=False)  # warm base cache, as any later sweep
    prepare_s = time.perf_counter() - t
    t = time.perf_counter()
    outcome = sweeps.run(spec, progress=False)
    wall = time.perf_counter() - t
    last: dict[str, float] = {}
    for row in ResultStore(f"{storage}/results").read().to_pylist():
        last[row["trial_id"]] = max(last.get(row["trial_id"], 0.0), row["wall_s"])
    total = sum(last.values())
    ratio = wall / total if total else float("nan")
    return {"trials": len(last), "state": outcome.state, "gpus_per_trial": spec.resources.gpus,
            "cpus_per_trial": spec.resources.cpus, "max_concurrent": spec.search.max_concurrent,
            "base_cache_prepare_s": prepare_s, "wall_s": wall, "sum_trial_s": total, "wall_over_sum": ratio,
            "target": "4 trials share one GPU, wall < 0.5x the sum of trial times",
            "met": len(last) >= 4 and ratio < 0.5,
            "summary": (f"{len(last)} trials x {spec.resources.gpus:g} GPU: wall {wall:.1f} s vs sum of trials "
                        f"{total:.1f} s = {ratio:.2f}x")}

def part_attack(*, tiny: bool, work: Path) -> dict[str, Any]:
    """One erasure-depth evaluation (``AttackDepthEvaluator`` with the default ``EvalConfig`` and
    ``AttackConfig``: its prompts, steps and candidates) on the paper-scale encoder (sd14-init, the
    train_step part's; the tiny CLIP on CPU): the depth of the base (0 by construction) and of an
    exact copy (equal to the base's), and the seconds of one attack run to the full budget (the
    success threshold raised so that no prompt stops early: every prompt pays for every step)."""
    import torch

    from sage_core.encoders import load_encoder
    from sage_core.evaluation import EvalConfig
    from sage_core.evaluation.attack import AttackConfig
    from sage_core.evaluation.attack_depth import AttackDepthEvaluator
    from sage_core.evaluation.perturb import perturbed

    cuda = _cuda()
    encoder = _tiny_clip(work) if tiny else "sd14-init"
    base = load_encoder(encoder, max_length=16 if tiny else 77, device="cuda" if cuda else "cpu")
    cfg = AttackConfig()
    t = time.perf_counter()
    ev = AttackDepthEvaluator(base, EvalConfig(), cfg, cache_dir=work / "attack-cache")
    build_s = time.perf_counter() - t
    m_base = ev(base)
    m_copy = ev(perturbed(base, kind="copy", size=0.0, reference_prompts=ev.prompts))
    threshold, ev.threshold = ev.threshold, float("inf")
    try:
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        full = ev.run(base)
        if cuda:
            torch.cuda.synchronize()
        attack_s = time.perf_counter() - t
    finally:
        ev.threshold = threshold
    same = m_copy == m_base
    shape = f"{cfg.mode}, {len(ev.prompts)} prompts x {cfg.steps} steps x {cfg.candidates} candidates"
    return {"encoder": encoder, "device": str(base.device), "attack": cfg.model_dump(mode="json"),
            "prompts": len(ev.prompts), "build_s": build_s, "attack_s": attack_s,
            "full_budget_steps": full.budget, "threshold": threshold,
            "base_depth": m_base["attack_depth"], "base_recovered_at_0": m_base["attack_recovered_at_0"],
            "copy_depth": m_copy["attack_depth"], "copy_equals_base": same,
            "target": "base depth 0, an exact copy's metrics equal the base's",
            "met": m_base["attack_depth"] == 0.0 and same,
            "summary": (f"{'tiny CLIP' if tiny else 'sd14-init'} ({shape}): one attack to the full budget "
                        f"{attack_s:.2f} s (evaluator built in {build_s:.1f} s); depth of the base "
                        f"{m_base['attack_depth']:.3f}, of an exact copy {m_copy['attack_depth']:.3f}"
                        f" ({'equal' if same else 'DIFFERENT'})")}


PARTS = ("train_step", "image_gen", "nudenet", "sweep", "attack")
PART_FUNCS: dict[str, Callable[..., dict[str, Any]]] = {
    "train_step": part_train_step, "image_gen": part_image_gen, "nudenet": part_nudenet, "sweep": part_sweep,
    "attack": part_attack}
