"""SDXL speed on a GPU with full-size random weights (nothing is downloaded).

Builds the SDXL 1.0 UNet, VAE and both CLIP text encoders from their published
configs with random weights directly on the device, in the dtype cogkit.ml.device
picks for the card (bf16 on sm_80+), with its speedups (channels_last, fused QKV,
SDPA), then times whole pipeline calls (text encoding + denoising + VAE decode to
a PIL image), eager and then with cogkit.ml.compile (regional UNet compile +
whole VAE decoder compile):

* 1024x1024, 30 steps, CFG 7.5 (Euler)              goal on H100: <= 0.9 s
* 512x512, SDXL-Turbo, 1 step, no CFG (Euler-A trailing)  goal on H100: <= 40 ms
* 1024x1024, LCM, 4 steps, no CFG (LCMScheduler; LCM-LoRA fused = base cost)

Reports median ms per image and denoising it/s (steps / median time). The whole run
stops starting new cases after --budget-s seconds so it fits a short device slot.

    python bench/gpu_sdxl.py                  # on a GPU (about 5-8 minutes)
    python bench/gpu_sdxl.py --tiny           # tiny configs, CPU (a smoke test)
    python bench/gpu_sdxl.py --tiny --compile-backend eager --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _gpu  # first: the checkout on sys.path, the Hub offline

UNET_FULL = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
VAE_FULL = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.13025, force_upcast=False,
)
TE1_FULL = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
TE2_FULL = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)


def build_pipeline(tiny: bool, plan, log):
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from cogkit.ml.tiny.sdxl import sdxl_unet, sdxl_vae
    from cogkit.ml.tiny.tokenizers import clip_text_config, clip_tokenizer

    tok, tok2 = clip_tokenizer(), clip_tokenizer()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(plan.device):
        if tiny:
            unet, vae = sdxl_unet(), sdxl_vae()
            te, te2 = CLIPTextModel(clip_text_config(tok)), CLIPTextModelWithProjection(clip_text_config(tok2))
        else:
            ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            unet = UNet2DConditionModel(**UNET_FULL)
            vae = AutoencoderKL(**VAE_FULL)
            te = CLIPTextModel(CLIPTextConfig(**TE1_FULL, **ids))
            te2 = CLIPTextModelWithProjection(CLIPTextConfig(**TE2_FULL, **ids))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=scheduler, add_watermarker=False)
    pipe.to(plan.device, plan.dtype)
    pipe.set_progress_bar_config(disable=True)
    params = sum(p.numel() for p in unet.parameters()) / 1e9
    log(f"built {'tiny' if tiny else 'full-size'} SDXL on {plan.device} ({plan.dtype}), UNet {params:.3f} B params, "
        f"in {time.perf_counter() - t0:.1f}s")
    return pipe


def cases(tiny: bool) -> list[dict]:
    big, small = (128, 64) if tiny else (1024, 512)
    return [
        dict(name=f"sdxl {big}^2 30 steps CFG", size=big, steps=30, guidance=7.5, scheduler="K_EULER",
             trailing=False, runs=3, goal_ms=None if tiny else 900),
        dict(name=f"turbo {small}^2 1 step", size=small, steps=1, guidance=0.0, scheduler="K_EULER_ANCESTRAL",
             trailing=True, runs=10, goal_ms=None if tiny else 40),
        dict(name=f"lcm {big}^2 4 steps", size=big, steps=4, guidance=1.0, scheduler="LCM",
             trailing=False, runs=5, goal_ms=None),
    ]


def time_case(pipe, case, plan, scheduler_config) -> dict:
    import torch

    from cogkit.ml.schedulers import make_scheduler

    pipe.scheduler = make_scheduler(case["scheduler"], scheduler_config, trailing=case["trailing"])

    def once():
        pipe("a photo of an astronaut riding a horse", height=case["size"], width=case["size"],
             num_inference_steps=case["steps"], guidance_scale=case["guidance"],
             generator=torch.Generator("cpu").manual_seed(0), output_type="pil")
        if plan.device == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        t0 = time.perf_counter()
        once()  # warm-up (compiles on the compiled pass)
        first = time.perf_counter() - t0
        times = []
        for _ in range(case["runs"]):
            t0 = time.perf_counter()
            once()
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return dict(case=case["name"], first_call_s=round(first, 3), median_ms=round(med * 1000, 1),
                min_ms=round(min(times) * 1000, 1), it_per_s=round(case["steps"] / med, 2),
                goal_ms=case["goal_ms"], meets_goal=None if case["goal_ms"] is None else med * 1000 <= case["goal_ms"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _gpu.add_common_args(ap, runs=None, runs_help="timed runs per case (default 3/10/5)")
    args = ap.parse_args(argv)
    log = _gpu.make_log("gpu_sdxl")

    import torch

    from cogkit.ml.compile import compile_unet_pipeline
    from cogkit.ml.device import apply_speedups

    planned = _gpu.plan_or_refuse(args.tiny, log)
    if planned is None:
        return 2
    plan, card = planned
    pipe = build_pipeline(args.tiny, plan, log)
    done = apply_speedups(pipe, plan)
    # every case's scheduler from the base config, not from the previous case's
    # (Turbo's trailing spacing would carry over into LCM)
    scheduler_config = pipe.scheduler.config
    results = {"card": card, "device": plan.device, "dtype": str(plan.dtype), "tiny": args.tiny,
               "torch": torch.__version__, "speedups": done, "date": time.strftime("%Y-%m-%d"), "runs": []}
    passes = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])
    for label, compiled in passes:
        if compiled:
            t0 = time.perf_counter()
            compile_unet_pipeline(pipe, mode=args.compile_mode, backend=args.compile_backend)
            log(f"compile set up in {time.perf_counter() - t0:.1f}s (compiles on first call)")
        for case in cases(args.tiny):
            if args.runs:
                case["runs"] = args.runs
            if _gpu.over_budget(log, args.budget_s, f"{label} {case['name']}"):
                results["runs"].append(dict(case=case["name"], variant=label, skipped="time budget"))
                continue
            r = time_case(pipe, case, plan, scheduler_config)
            r["variant"] = label
            results["runs"].append(r)
            log(f"{label:8s} {r['case']:28s} median {r['median_ms']:9.1f} ms  {r['it_per_s']:7.2f} it/s  "
                f"(first call {r['first_call_s']:.1f}s)" + ("" if r["goal_ms"] is None else
                f"  goal <= {r['goal_ms']} ms: {'met' if r['meets_goal'] else 'NOT met'}"))
    rows = []
    for r in results["runs"]:
        if "skipped" in r:
            rows.append([r["variant"], r["case"], f"skipped ({r['skipped']})", "", "", ""])
            continue
        goal = "" if r["goal_ms"] is None else f"<= {r['goal_ms']} ms: {'met' if r['meets_goal'] else 'not met'}"
        rows.append([r["variant"], r["case"], r["median_ms"], r["it_per_s"], r["first_call_s"], goal])
    _gpu.print_table(["variant", "case", "median ms", "it/s", "first call s", "goal"], rows)
    print(f"\ncard: {card}, dtype {plan.dtype}, torch {torch.__version__}, total {time.perf_counter() - log.start:.0f}s")
    _gpu.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
