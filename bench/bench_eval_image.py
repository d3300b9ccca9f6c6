"""Image-level generation throughput through our ImageGenerator (the path `sage eval --fidelity image` uses).

Random-weight SD 1.x components built from config in memory (nothing downloads): UNet 320/640/1280/1280
with cross-attention 768, the SD VAE, DDIM; text encoder = a random CLIP ViT-L/14 text tower. Paper
settings by default: 512x512, 50 steps, CFG 7.5, bf16 on GPU. Reports images/s and the ratio of the
achieved FLOP rate to --peak-tflops (FLOPs counted with torch.utils.flop_counter on one UNet and one
VAE-decoder forward, so the bound is measured, not assumed).

GPU:  python bench/bench_eval_image.py --device cuda --images 16 --batch 8
CPU smoke test (tiny components): python bench/bench_eval_image.py --size tiny --device cpu
"""

from __future__ import annotations

import argparse
import tempfile
import time


def _components(size: str):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    if size == "real":
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2)
        text = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, max_position_embeddings=77)
    else:
        unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16,
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                    attention_head_dim=4, norm_num_groups=4)
        vae = AutoencoderKL(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
        text = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=77)
    return unet, vae, sched, CLIPTextModel(text)


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("real", "tiny"), default="real")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--resolution", type=int, default=None, help="default 512 (real) / 32 (tiny)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense peak of the device (H100 bf16: 989)")
    args = ap.parse_args(argv)

    import torch

    from sage_core.encoders import TextEncoder
    from sage_core.evaluation.generation import GenerationSettings, ImageGenerator
    from tests.tiny_models import write_tiny_clip_tokenizer

    res = args.resolution or (512 if args.size == "real" else 32)
    torch.manual_seed(0)
    unet, vae, sched, text_model = _components(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import CLIPTokenizer

        tok = CLIPTokenizer.from_pretrained(write_tiny_clip_tokenizer(f"{tmp}/tok"))
        enc = TextEncoder(model=text_model, tokenizer=tok, max_length=77, is_clip=True, source="random-clip")
        gen = ImageGenerator.from_components(unet=unet, vae=vae, scheduler=sched, cache_dir=f"{tmp}/img",
                                             fingerprint="bench", device=args.device, precision=args.precision,
                                             batch_size=args.batch,
                                             settings=GenerationSettings(steps=args.steps, height=res, width=res))
        dev, dt = gen.device, gen.dtype
        lat = res // (2 ** (len(vae.config.block_out_channels) - 1))
        x = torch.randn(2, 4, lat, lat, device=dev, dtype=dt)
        ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device=dev, dtype=dt)
        with torch.inference_mode():
            unet_f = _flops(lambda: gen.unet(x, 10, encoder_hidden_states=ctx)) / 2   # per image, one branch
            vae_f = _flops(lambda: gen.vae.decode(x[:1]))
        per_image = args.steps * 2 * unet_f + vae_f  # CFG: conditional + unconditional UNet passes
        prompts = [f"a photo of object number {i}" for i in range(args.images + args.batch)]
        gen.generate(enc, prompts[:args.batch], seeds=list(range(args.batch)))  # warm-up (kernels, allocator)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        gen.generate(enc, prompts[args.batch:], seeds=list(range(args.batch, len(prompts))))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    ips = args.images / wall
    achieved = ips * per_image / 1e12
    out = {"images_per_s": ips, "tflops_per_image": per_image / 1e12, "achieved_tflops": achieved,
           "ratio_to_peak": achieved / args.peak_tflops}
    print(f"{args.size} SD1.x, {res}x{res}, {args.steps} DDIM steps, CFG, {dt}, {dev}, batch {args.batch}: "
          f"{ips:.3f} images/s ({args.images} images in {wall:.1f} s)")
    print(f"FLOPs per image {per_image / 1e12:.3f} TFLOP (UNet {unet_f / 1e9:.1f} GFLOP x {args.steps} x 2 "
          f"+ VAE decode {vae_f / 1e9:.1f} GFLOP); achieved {achieved:.2f} TFLOP/s = "
          f"{100 * out['ratio_to_peak']:.2f}% of {args.peak_tflops:g} TFLOP/s peak")
    return out


if __name__ == "__main__":
    main()
