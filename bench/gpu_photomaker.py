"""PhotoMaker speed on a GPU with full-size random weights (nothing is downloaded).

Builds the full-size SDXL 1.0 pipeline with random weights on the device (the
builder of bench/gpu_sdxl.py), fuses a random rank-64 PhotoMaker LoRA into its UNet
with the predictor's own code (timed: it is part of setup), builds the v1 ID encoder
(CLIP ViT-L/14 tower, projections 1024->768 and 1024->1280, fuse MLP at 2048) and
times whole requests through the predictor's engine (``PhotoMakerEngine.run``:
open and CLIP-preprocess the ID images, encode the three prompts, ID encoder and
fuse, 30 Euler steps with CFG and the merge at step 6, VAE decode to PIL), eager
and then compiled (cogkit.ml.compile: regional UNet + VAE decoder, as the engine's
COGKIT_COMPILE does):

* 1024x1024, 30 steps, guidance 5, 1 ID image      goal on H100: <= 1.6 s
* 1024x1024, 30 steps, guidance 5, 4 ID images

Reports median ms per request, denoising it/s (steps / median), the prompt + ID
part alone (prepare, text encoders, ID encoder), and peak GPU memory.

    python bench/gpu_photomaker.py                 # on a GPU (about 5 minutes)
    python bench/gpu_photomaker.py --tiny          # tiny configs on the CPU (a smoke test)
    python bench/gpu_photomaker.py --tiny --compile-backend eager --runs 1 --json out.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import _gpu  # first: the checkout on sys.path, the Hub offline

sys.path.insert(0, os.path.join(_gpu.REPO, "models", "photomaker"))

# PhotoMaker v1's ID encoder tower (CLIP ViT-L/14); --tiny uses the tiny checkpoint's (cogkit/ml/tiny/photomaker.py)
VISION_FULL = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   patch_size=14, image_size=224, projection_dim=768)
LORA_RANK_FULL, LORA_RANK_TINY = 64, 4
STEPS, GUIDANCE = 30, 5.0
GOAL_MS = 1600


def build_engine(tiny: bool, plan, log):
    import torch
    from transformers import CLIPVisionConfig

    from cogkit.ml.device import apply_speedups
    from gpu_sdxl import build_pipeline
    from photomaker_engine import PhotoMakerEngine
    from photomaker_id_encoder import IDEncoder, load_id_encoder
    from photomaker_weights import fuse_lora
    from cogkit.ml.tiny.photomaker import id_encoder_state, lora_state

    pipe = build_pipeline(tiny, plan, log)
    if tiny:
        pipe.default_sample_size = 16  # 128^2 on the CPU, like gpu_sdxl --tiny
    gen = torch.Generator(plan.device).manual_seed(0)
    lora = lora_state(pipe.unet, gen, rank=LORA_RANK_TINY if tiny else LORA_RANK_FULL, scale=0.01)
    t0 = time.perf_counter()
    layers = fuse_lora(pipe, lora)
    fuse_s = time.perf_counter() - t0
    log(f"PhotoMaker LoRA fused into {layers} UNet layers in {fuse_s:.2f}s")
    apply_speedups(pipe, plan)
    if tiny:
        encoder = load_id_encoder(id_encoder_state(torch.Generator().manual_seed(1)))
    else:
        torch.manual_seed(1)
        with torch.device(plan.device):
            encoder = IDEncoder(CLIPVisionConfig(**VISION_FULL), pipe.text_encoder_2.config.hidden_size)
    encoder = encoder.to(plan.device, plan.dtype).eval()
    log(f"ID encoder: {sum(p.numel() for p in encoder.parameters()) / 1e6:.1f} M params")
    return PhotoMakerEngine(pipe, encoder, plan), fuse_s


def face_files(folder: str, count: int) -> list[str]:
    import numpy as np
    from PIL import Image

    paths = []
    for i in range(count):
        arr = (np.random.RandomState(i).rand(768, 640, 3) * 255).astype(np.uint8)  # a phone-photo-ish size
        path = os.path.join(folder, f"face{i}.jpg")
        Image.fromarray(arr).save(path, quality=90)
        paths.append(path)
    return paths


def time_case(engine, faces: list[str], runs: int, plan) -> dict:
    import torch

    from photomaker_engine import Request

    req = Request(images=faces, prompt="a photo of a man img", num_steps=STEPS, guidance_scale=GUIDANCE, seed=0,
                  style_strength_ratio=20)

    def sync():
        if plan.device == "cuda":
            torch.cuda.synchronize()

    def once() -> float:
        t0 = time.perf_counter()
        engine.run(req)
        sync()
        return time.perf_counter() - t0

    def prompt_and_id() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            prep = engine.prepare(req)
            e = engine.encode(prep)
            pixels = engine.id_encoder.preprocess(prep.images).to(plan.device, plan.dtype)
            engine.id_encoder(pixels, e["id"], prep.id_prompts[1].class_positions)
        sync()
        return time.perf_counter() - t0

    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first = once()  # warm-up (compiles on the compiled pass)
    times = [once() for _ in range(runs)]
    prep_times = [prompt_and_id() for _ in range(max(3, runs))]
    med = statistics.median(times)
    size = engine.pipe.default_sample_size * engine.pipe.vae_scale_factor
    return dict(case=f"{size}^2 {STEPS} steps CFG, {len(faces)} ID image(s)", first_call_s=round(first, 3),
                median_ms=round(med * 1000, 1), min_ms=round(min(times) * 1000, 1),
                it_per_s=round(STEPS / med, 2), prompt_id_ms=round(statistics.median(prep_times) * 1000, 1),
                peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if plan.device == "cuda" else None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _gpu.add_common_args(ap, runs=5, runs_help="timed runs per case")
    args = ap.parse_args(argv)
    log = _gpu.make_log("gpu_photomaker")

    import torch

    from cogkit.ml.compile import compile_unet_pipeline

    planned = _gpu.plan_or_refuse(args.tiny, log)
    if planned is None:
        return 2
    plan, card = planned
    engine, fuse_s = build_engine(args.tiny, plan, log)
    results = {"card": card, "device": plan.device, "dtype": str(plan.dtype), "tiny": args.tiny,
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "lora_fuse_s": round(fuse_s, 2),
               "runs": []}
    passes = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])
    with tempfile.TemporaryDirectory(prefix="gpu-photomaker-") as tmp:
        faces = face_files(tmp, 4)
        for label, compiled in passes:
            if compiled:
                t0 = time.perf_counter()
                compile_unet_pipeline(engine.pipe, mode=args.compile_mode, backend=args.compile_backend)
                log(f"compile set up in {time.perf_counter() - t0:.1f}s (compiles on first call)")
            for count in (1, 4):
                if _gpu.over_budget(log, args.budget_s, f"{label} with {count} ID image(s)"):
                    results["runs"].append(dict(case=f"{count} ID image(s)", variant=label, skipped="time budget"))
                    continue
                r = time_case(engine, faces[:count], args.runs, plan)
                r["variant"] = label
                r["goal_ms"] = GOAL_MS if (count == 1 and not args.tiny) else None
                r["meets_goal"] = None if r["goal_ms"] is None else r["median_ms"] <= GOAL_MS
                results["runs"].append(r)
                log(f"{label:8s} {r['case']:40s} median {r['median_ms']:9.1f} ms  {r['it_per_s']:7.2f} it/s  "
                    f"prompt+ID {r['prompt_id_ms']:.1f} ms  (first call {r['first_call_s']:.1f}s)"
                    + ("" if r["goal_ms"] is None else
                       f"  goal <= {GOAL_MS} ms: {'met' if r['meets_goal'] else 'NOT met'}"))
    rows = []
    for r in results["runs"]:
        if "skipped" in r:
            rows.append([r["variant"], r["case"], f"skipped ({r['skipped']})", "", "", "", "", ""])
            continue
        goal = "" if r["goal_ms"] is None else f"<= {r['goal_ms']} ms: {'met' if r['meets_goal'] else 'not met'}"
        rows.append([r["variant"], r["case"], r["median_ms"], r["it_per_s"], r["prompt_id_ms"], r["first_call_s"],
                     r["peak_gib"], goal])
    _gpu.print_table(["variant", "case", "median ms", "it/s", "prompt+ID ms", "first call s", "peak GiB", "goal"], rows)
    print(f"\ncard: {card}, dtype {plan.dtype}, torch {torch.__version__}, LoRA fuse {fuse_s:.2f}s, "
          f"total {time.perf_counter() - log.start:.0f}s")
    _gpu.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
