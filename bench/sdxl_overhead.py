"""What the SDXL predictor adds on top of the raw diffusers call, on tiny weights.

Builds the tiny random SDXL of cogkit/ml/tiny/sdxl.py, loads it twice in one process:
as the predictor (models/sdxl: setup(weights) then predict()) and as a raw
StableDiffusionXLPipeline. Times both, interleaved, for the same inputs and seed:
raw = the pipeline call returning PIL images; predictor = predict() end to end
(seed, input checks, scheduler, progress lines, the call, encoding and writing
the output file). Reports medians and the ratio (target <= 1.05x).

Also times output encoding of a 1024x1024 image per format, with the settings
cogkit.ml.outputs uses against Pillow's defaults.

    python bench/sdxl_overhead.py            # ~1-2 minutes on a small CPU
    python bench/sdxl_overhead.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _median_ms(xs):
    return statistics.median(xs) * 1000


def bench_overhead(n: int, configs, log) -> list[dict]:
    import torch
    from diffusers import StableDiffusionXLPipeline

    from cogkit.loader import load_target
    from cogkit.ml.tiny.sdxl import build_sdxl

    weights = build_sdxl(tempfile.mkdtemp(prefix="sdxl-bench-") + "/tiny-sdxl")
    with contextlib.redirect_stderr(io.StringIO()):
        predictor = load_target("predict.py:Predictor", os.path.join(REPO, "models", "sdxl"))()
        predictor.setup(weights=str(weights))
        raw = StableDiffusionXLPipeline.from_pretrained(weights)
    raw.set_progress_bar_config(disable=True)
    defaults = dict(negative_prompt="", image=None, mask=None, num_outputs=1, scheduler="K_EULER", guidance_scale=5.0,
                    prompt_strength=0.8, refine="no_refiner", high_noise_frac=0.8, refine_steps=None,
                    apply_watermark=True, lora_scale=0.6, lora_weights=None, disable_safety_checker=False,
                    outpaint=None, controlnet_image=None, controlnet_type="canny", controlnet_preprocess=True,
                    controlnet_conditioning_scale=0.75, controlnet_start=0.0, controlnet_end=1.0, fast_mode="auto",
                    sizing_strategy="input_image", output_quality=80)
    rows = []
    sink = open(os.devnull, "w")
    for size, steps, fmt in configs:
        def run_raw():
            raw("a photo of a cat", width=size, height=size, num_inference_steps=steps, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(1))

        def run_pred():
            predictor.predict(prompt="a photo of a cat", width=size, height=size, num_inference_steps=steps, seed=1,
                              output_format=fmt, **defaults)

        with contextlib.redirect_stderr(sink):
            for _ in range(3):  # warm-up both
                run_raw()
                run_pred()
            t_raw, t_pred = [], []
            for _ in range(n):
                t0 = time.perf_counter()
                run_raw()
                t_raw.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                run_pred()
                t_pred.append(time.perf_counter() - t0)
        r, p = _median_ms(t_raw), _median_ms(t_pred)
        rows.append(dict(size=size, steps=steps, fmt=fmt, raw_ms=round(r, 2), predictor_ms=round(p, 2),
                         added_ms=round(p - r, 2), ratio=round(p / r, 3)))
        log(f"{size}x{size} {steps} steps {fmt}: raw {r:.1f} ms, predictor {p:.1f} ms, ratio {p / r:.3f}")
    return rows


def bench_encoding(n: int, log) -> list[dict]:
    import numpy as np
    from PIL import Image

    from cogkit.ml.outputs import save_image

    rs = np.random.RandomState(0)
    y, x = np.mgrid[0:1024, 0:1024]
    base = np.stack([x / 4, y / 4, (x + y) / 8], -1) % 256
    img = Image.fromarray(np.clip(base + rs.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
    d = tempfile.mkdtemp(prefix="enc-")
    variants = [
        ("png", "cogkit (compress_level=1)", lambda p: save_image(img, p, "png")),
        ("png", "Pillow default (level 6)", lambda p: img.save(p, "PNG")),
        ("jpg", "cogkit q80", lambda p: save_image(img, p, "jpg", 80)),
        ("jpg", "q80 optimize=True", lambda p: img.save(p, "JPEG", quality=80, optimize=True)),
        ("webp", "cogkit q80 method=0", lambda p: save_image(img, p, "webp", 80)),
        ("webp", "Pillow default q80 (method=4)", lambda p: img.save(p, "WEBP", quality=80)),
    ]
    rows = []
    for fmt, label, fn in variants:
        path = os.path.join(d, f"x.{fmt}")
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn(path)
            times.append(time.perf_counter() - t0)
        rows.append(dict(fmt=fmt, variant=label, ms=round(_median_ms(times), 1), kb=round(os.path.getsize(path) / 1024)))
        log(f"encode 1024^2 {fmt} {label}: {rows[-1]['ms']} ms, {rows[-1]['kb']} KB")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few repetitions (smoke run)")
    ap.add_argument("-n", type=int, default=30, help="timed calls per config (default 30)")
    args = ap.parse_args(argv)
    n = 3 if args.quick else args.n

    def log(msg):
        print(msg, flush=True)

    configs = [(64, 2, "webp"), (64, 2, "png"), (128, 4, "webp")] if not args.quick else [(64, 2, "webp")]
    rows = bench_overhead(n, configs, log)
    enc = bench_encoding(3 if args.quick else 10, log)
    print("\n| size | steps | output | raw pipeline ms | predictor ms | added ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}^2 | {r['steps']} | {r['fmt']} | {r['raw_ms']} | {r['predictor_ms']} | {r['added_ms']} | {r['ratio']}x |")
    print("\n| format | settings | encode ms (1024^2) | size KB |")
    print("|---|---|---|---|")
    for r in enc:
        print(f"| {r['fmt']} | {r['variant']} | {r['ms']} | {r['kb']} |")
    print(f"\nloadavg {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, n={n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
