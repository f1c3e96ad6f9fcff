"""LoRA training speed and memory: the FLUX and SDXL trainers (cogkit.ml.lora_train with
models/<name>/<name>_train.py), on full-size architectures with random weights on a GPU,
or on the tiny models on the CPU (--tiny).

Each case builds the pipeline (bench/gpu_flux.py's and bench/gpu_sdxl.py's builders:
nothing is downloaded), makes a set of synthetic square images, and runs the trainer's
own loop (train_lora: cached latents and prompt embeddings, text encoders parked off
the GPU, gradient checkpointing and bf16 on CUDA, AdamW) for --steps steps; the first
--warmup steps are left out of the median step time.

* GPU (default): 1024x1024, batch 1, LoRA rank 16. Goal on an H100 for FLUX:
  <= 1.0 s/step and <= 40 GB peak (torch.cuda.max_memory_allocated).
* --tiny (CPU): 64x64, rank 4, the tiny random models of cogkit.ml.tiny; steps/s and
  the process's peak RSS (each model in its own process, so the figures are its own).

    python bench/gpu_train.py                    # on a GPU: flux, then sdxl
    python bench/gpu_train.py --models flux      # one of them
    python bench/gpu_train.py --tiny             # the tiny trainers on the CPU

The LAST line printed is the figure: ``flux s/step: X (peak Y GB)`` (GPU) or
``flux steps/s: X (peak RSS Y MB)`` (--tiny); a Markdown table comes before it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _gpu  # first: the checkout on sys.path, the Hub offline

log = _gpu.make_log("gpu_train", sys.stderr)


def _examples(n: int, size: int):
    from PIL import Image

    from cogkit.ml.train_data import Example

    imgs = []
    for i in range(n):  # smooth gradients with a moving disc: cheap, and not pure noise
        img = Image.linear_gradient("L").resize((size, size)).convert("RGB")
        img.paste((230, 120 + 20 * i, 40), (size // 4 + i, size // 4, size // 2 + i, size // 2))
        imgs.append(Example(name=f"img{i}.png", image=img, caption=f"a photo of zxqvbn, picture {i}", size=(size, size)))
    return imgs


def run_one(model_name: str, tiny: bool, steps: int, warmup: int) -> dict:
    import torch

    from cogkit.ml.lora_train import TrainSettings, train_lora, training_plan

    plan = training_plan()
    if plan.device != "cuda" and not tiny:
        log("no CUDA device: the full-size run needs a GPU (use --tiny for the CPU run)")
        raise SystemExit(2)
    size, rank = (64, 4) if tiny else (1024, 16)
    if model_name == "flux":
        import gpu_flux

        sys.path.insert(0, os.path.join(_gpu.REPO, "models", "flux"))
        from flux_engine import VARIANTS
        from flux_train import FluxLora

        pipe = gpu_flux.build_pipeline(tiny, plan)
        model = FluxLora(pipe, plan, VARIANTS["dev"], base_weights="random")
    else:
        import gpu_sdxl

        sys.path.insert(0, os.path.join(_gpu.REPO, "models", "sdxl"))
        from sdxl_train import SdxlLora

        pipe = gpu_sdxl.build_pipeline(tiny, plan, log)
        model = SdxlLora(pipe, plan, base_weights="random")
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    settings = TrainSettings(steps=steps, learning_rate=1e-4, lora_rank=rank, batch_size=1, seed=0,
                             caption_dropout=0.05, optimizer="adamw", trigger_word="zxqvbn", resolution=size)
    result = train_lora(model, _examples(4, size), settings, {"model": model_name})
    timed = result.step_seconds[warmup:] or result.step_seconds
    out = {"model": model_name, "device": plan.device, "card": plan.card, "size": size, "rank": rank,
           "steps": steps, "median_step_s": round(statistics.median(timed), 4),
           "loss_first": round(result.losses[0], 4), "loss_last": round(result.losses[-1], 4),
           "total_s": round(result.seconds, 1)}
    if plan.device == "cuda":
        out["peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        import resource

        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="the tiny models on the CPU")
    ap.add_argument("--models", default="flux,sdxl", help="comma-separated: flux, sdxl")
    ap.add_argument("--steps", type=int, default=None, help="steps per case (default 12 on a GPU, 40 with --tiny)")
    ap.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this model here, print its JSON
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    steps = args.steps or (40 if args.tiny else 12)
    if args.one:
        print(json.dumps(run_one(args.one, args.tiny, steps, args.warmup)))
        return 0
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in ("flux", "sdxl"):
            ap.error(f"--models: unknown model {name!r} (flux, sdxl)")
        cmd = [sys.executable, os.path.abspath(__file__), "--one", name, "--steps", str(steps),
               "--warmup", str(args.warmup)] + (["--tiny"] if args.tiny else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            return proc.returncode
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        log(f"{name}: {results[-1]} ({time.perf_counter() - t0:.0f}s with the build)")
        _gpu.write_json(args.json, results)
    gpu = not args.tiny
    _gpu.print_table(
        ["model", "card", "size", "rank", "steps", "s/step (median)", "steps/s", "peak", "loss first -> last"],
        [[r["model"], r["card"], f"{r['size']}^2", r["rank"], r["steps"], r["median_step_s"],
          round(1 / r["median_step_s"], 2), f"{r['peak_gb']} GB" if gpu else f"{r['peak_rss_mb']} MB RSS",
          f"{r['loss_first']} -> {r['loss_last']}"] for r in results])
    for r in results:
        if gpu:
            print(f"{r['model']} s/step: {r['median_step_s']} (peak {r['peak_gb']} GB)")
        else:
            print(f"{r['model']} steps/s: {round(1 / r['median_step_s'], 2)} (peak RSS {r['peak_rss_mb']} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
