#!/usr/bin/env python3
"""Does swapping LoRAs make torch.compile trace the model again?

A CPU proxy for the GPU path (#17): the tiny SDXL and FLUX engines (cogkit.ml.tiny) are
set up compiled (SDXL: COGKIT_COMPILE=1, the UNet's blocks and the VAE decoder, with the
LoRA hot-swap slot; FLUX: COGKIT_FLUX_COMPILE=1, the go_fast transformer's blocks), with
their own warm-up. Then each runs: no LoRA, LoRA A, LoRA B (another rank), A again at
another scale, A at its first scale, no LoRA, and counts the graphs dynamo compiles after
the warm-up. It also checks that the images differ per LoRA and that going back to a
LoRA (or to none) gives its image again, pixel for pixel.

    python bench/lora_swap_recompiles.py                 # CPU inductor (several minutes of compiling)
    python bench/lora_swap_recompiles.py --backend eager  # dynamo only: the same count, in seconds

The LAST line printed is the figure: ``recompiles after warm-up: N`` (target 0).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("COGKIT_DEVICE", "cpu")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._dynamo.utils  # noqa: E402

MODELS = ("sdxl", "flux")


def graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def pixels(img) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def swaps(run, lora_a: str, lora_b: str) -> dict[str, np.ndarray]:
    """The request sequence; returns each step's image by label."""
    steps = [("none", None, 1.0), ("A", lora_a, 1.0), ("B", lora_b, 1.0), ("A x 0.5", lora_a, 0.5),
             ("A again", lora_a, 1.0), ("none again", None, 1.0)]
    return {label: pixels(run(lora, scale)) for label, lora, scale in steps}


def judge(name: str, images: dict[str, np.ndarray], before: int) -> int:
    new = graphs() - before
    diff = {k: int(np.abs(images[k] - images["none"]).max()) for k in ("A", "B")}
    ab = int(np.abs(images["A"] - images["B"]).max())
    assert diff["A"] > 0 and diff["B"] > 0 and ab > 0, f"{name}: a LoRA did not change the image ({diff}, A vs B {ab})"
    assert int(np.abs(images["A x 0.5"] - images["A"]).max()) > 0, f"{name}: lora_scale had no effect"
    assert np.array_equal(images["A again"], images["A"]), f"{name}: back to LoRA A gave another image"
    assert np.array_equal(images["none again"], images["none"]), f"{name}: back to no LoRA gave another image"
    print(f"{name}: {new} new graph(s) after warm-up over 6 requests; max pixel change vs no LoRA: "
          f"A {diff['A']}, B {diff['B']}, A vs B {ab}; A and no-LoRA images identical when swapped back")
    return new


def sdxl(tmp: Path) -> int:
    from cogkit.ml.tiny.sdxl import build_sdxl, build_sdxl_lora

    sys.path.insert(0, str(REPO / "models" / "sdxl"))
    from sdxl_engine import Request, SDXLEngine

    weights = build_sdxl(tmp / "sdxl")
    lora_a = build_sdxl_lora(weights, tmp / "sdxl-lora-a", seed=3, rank=4)
    lora_b = build_sdxl_lora(weights, tmp / "sdxl-lora-b", seed=5, rank=8)
    os.environ["COGKIT_COMPILE"] = "1"
    t0 = time.perf_counter()
    engine = SDXLEngine(str(weights))
    assert engine.compiled and (engine.slot is not None or os.environ.get("COGKIT_SDXL_LORA_SLOT") == "0")
    print(f"sdxl: set up and warmed up in {time.perf_counter() - t0:.1f}s")
    before = graphs()

    def run(lora: str | None, scale: float):
        [img] = engine.run(Request(prompt="a red fox", width=64, height=64, num_inference_steps=2, seed=7,
                                   lora_weights=lora, lora_scale=scale, apply_watermark=False))
        return img

    return judge("sdxl", swaps(run, str(lora_a), str(lora_b)), before)


def flux(tmp: Path) -> int:
    from cogkit.ml.tiny.flux import build_flux, build_flux_lora

    sys.path.insert(0, str(REPO / "models" / "flux"))
    from flux_engine import FluxEngine, Request

    weights = build_flux(tmp / "FLUX.1-schnell", variant="schnell")
    lora_a = build_flux_lora(weights, tmp / "flux-lora-a.safetensors", seed=3, rank=4)
    lora_b = build_flux_lora(weights, tmp / "flux-lora-b.safetensors", seed=5, rank=8)
    os.environ.update(COGKIT_FLUX_COMPILE="1", COGKIT_FLUX_FP8_CACHE=str(tmp / "fp8"))
    t0 = time.perf_counter()
    engine = FluxEngine(str(weights), warmup="min")
    assert engine.compiled and engine.fast is not None
    print(f"flux: set up and warmed up in {time.perf_counter() - t0:.1f}s")
    before = graphs()

    def run(lora: str | None, scale: float):
        [img] = engine.generate(Request("a red fox", megapixels="0.25", num_inference_steps=2, seed=7,
                                        go_fast=True, lora_weights=lora, lora_scale=scale), quiet=True)
        return img

    return judge("flux", swaps(run, str(lora_a), str(lora_b)), before)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    ap.add_argument("--only", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    args = ap.parse_args()
    wanted = [m for m in MODELS if m in {x.strip() for x in args.only.split(",")}]
    if not wanted:
        ap.error(f"--only: choose from {', '.join(MODELS)}")
    os.environ["COGKIT_COMPILE_BACKEND"] = args.backend
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    total = 0
    with tempfile.TemporaryDirectory(prefix="cogkit-lora-swap-") as tmp:
        for name in wanted:
            torch._dynamo.reset()
            total += globals()[name](Path(tmp))
    print(f"backend {args.backend}, models {', '.join(wanted)}")
    print(f"recompiles after warm-up: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
