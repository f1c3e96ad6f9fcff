"""Correctness of the GPU-only code paths, on tiny models (no timings): the first
device call to make before the full-size benches (they cost minutes each to find
the same crash). About 2-4 minutes on an H100, most of it compiling.

* fp8: ``FP8Linear`` through ``torch._scaled_mm`` (per-tensor and per-row scales,
  with a bias, bf16; several token counts, one of them 1) against the same layer's
  dequantize path, eager and under ``torch.compile(dynamic=True, fullgraph=True)``.
  Needs CUDA sm_89+ (skipped below).
* llama: the LLM engine with its compiled decode step (CUDA graphs,
  "reduce-overhead") gives the eager engine's greedy tokens, each request alone
  and the three batched (fp32, so the two agree to the token; one request runs past
  256 positions, into the second attention span); no recompile after the warm-up, no
  CUDA-graph skip; then fp8 linears (bf16) run the same way.
* flux: go_fast (fp8 + regional compile, dynamic shapes) against go_fast=false:
  final latents within 10 % (relative L2); two more sizes and a LoRA (merged, two
  scales, removed) without a recompile.
* sdxl: the SDXL engine with COGKIT_COMPILE=1 and COGKIT_SDXL_FP8=1 (regional UNet
  and VAE-decoder compile, fp8 transformer-block linears) at two sizes.
* hotswap: the compiled SDXL engine's LoRA hot-swap slot (cogkit.ml.lora_hotswap):
  no LoRA, LoRA A, LoRA B (another rank), A at another scale, no LoRA, each against the
  uncompiled engine with the same LoRA (max pixel difference), and no recompile after
  the warm-up.

Prints one PASS/FAIL/SKIP line per check (with what was measured) and exits 1 if
any failed. ``--cpu`` runs the same on the CPU with the "eager" compile backend (a
smoke test of this script; the CPU's _scaled_mm is not CUDA's).

    python bench/gpu_check.py                    # on a GPU
    python bench/gpu_check.py --only fp8,llama
    python bench/gpu_check.py --cpu              # smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback

import _gpu  # first: the checkout on sys.path, the Hub offline

CHECKS = ("fp8", "llama", "flux", "sdxl", "hotswap")


class Skip(Exception):
    pass


def unique_graphs() -> int:
    import torch._dynamo.utils

    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def check_fp8(ctx: dict) -> str:
    import torch
    import torch.nn.functional as F

    from cogkit.ml.fp8 import FP8Linear, fp8_matmul_supported

    device = ctx["device"]
    if device == "cuda" and not fp8_matmul_supported(device):
        raise Skip(f"{torch.cuda.get_device_name(0)} has no fp8 matmuls (needs sm_89+)")
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 512).to(device, torch.bfloat16)
    notes = []
    for granularity in ("tensor", "row"):
        layer = FP8Linear(lin, granularity=granularity, use_scaled_mm=True)
        compiled = torch.compile(layer, dynamic=True, fullgraph=True, backend=ctx["backend"])
        worst_ref = worst_compiled = 0.0
        for tokens in (77, 1, 300):
            x = torch.randn(2, tokens, 256, device=device, dtype=torch.bfloat16)
            with torch.inference_mode():
                ref = F.linear(x, layer.dequantized_weight(torch.bfloat16), lin.bias).float()
                got, again = layer(x), compiled(x)
            assert got.dtype == torch.bfloat16 and got.shape == (2, tokens, 512)
            worst_ref = max(worst_ref, float((got.float() - ref).norm() / ref.norm()))
            worst_compiled = max(worst_compiled, float((again.float() - got.float()).norm() / got.float().norm()))
        # activations rounded to fp8 (3 mantissa bits): a few % against the dequantized weight alone
        assert worst_ref < 0.08, f"{granularity}: _scaled_mm vs dequantize rel L2 {worst_ref:.4f}"
        assert worst_compiled < 0.01, f"{granularity}: compiled vs eager rel L2 {worst_compiled:.4f}"
        notes.append(f"{granularity}: vs dequantize {worst_ref:.4f}, compiled vs eager {worst_compiled:.5f}")
    return "; ".join(notes)


def check_llama(ctx: dict) -> str:
    import torch
    import torch._dynamo.utils

    from cogkit.ml.llm_engine import LLMEngine
    from cogkit.ml.sampling import SamplingParams
    from cogkit.ml.tiny.llama import build_tiny_llama

    device, folder = ctx["device"], build_tiny_llama(os.path.join(ctx["tmp"], "llama"))

    def greedy(n: int) -> SamplingParams:  # EOS masked: every request runs its full length
        return SamplingParams(temperature=0.0, min_new_tokens=n)

    prompts = ["hello there", "the cat sat on the mat and", "a"]
    lengths = (24, 16, 300)  # the last one crosses the 256-position attention span into the 512 one

    def tokens(engine: LLMEngine, batched: bool) -> list[list[int]]:
        ids = [engine.tokenizer(p)["input_ids"] for p in prompts]
        if batched:
            with engine._cond:  # submitted together: admitted together, decoded as one batch
                streams = [engine.submit(i, greedy(n), max_new_tokens=n) for i, n in zip(ids, lengths)]
            for s in streams:
                s.text()
        else:
            streams = []
            for i, n in zip(ids, lengths):
                streams.append(engine.submit(i, greedy(n), max_new_tokens=n))
                streams[-1].text()
        return [s.token_ids for s in streams]

    notes = []
    for label, dtype, fp8 in (("fp32", torch.float32, False), ("fp8", torch.bfloat16, True)):
        if fp8 and device == "cuda":
            from cogkit.ml.fp8 import fp8_matmul_supported

            if not fp8_matmul_supported(device):
                notes.append("fp8 skipped (needs sm_89+)")
                continue
        engines = {}
        for compiled in (False, True):
            torch._dynamo.reset()
            model_kwargs = dict(device=device, dtype=dtype, slots=3, compile_decode=compiled,
                                compile_backend=ctx["backend"])
            engine = LLMEngine.from_pretrained(folder, fp8=fp8, **model_kwargs)
            graphs, skips = unique_graphs(), torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]
            engines[compiled] = (engine, graphs, skips)
        eager, (compiled, graphs, skips) = engines[False][0], engines[True]
        try:
            want = tokens(eager, batched=False)
            alone, batched = tokens(compiled, batched=False), tokens(compiled, batched=True)
            assert unique_graphs() == graphs, f"{label}: {unique_graphs() - graphs} recompile(s) after the warm-up"
            new_skips = torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]
            assert new_skips == skips == 0 or device != "cuda", f"{label}: CUDA graphs skipped ({new_skips})"
            same = sum(a == b for a, b in zip(alone, want)), sum(a == b for a, b in zip(batched, want))
            if not fp8:  # fp32: the compiled step must give the eager tokens
                assert alone == want and batched == want, f"fp32: compiled tokens differ from eager ({same})"
            assert all(len(t) == n for t, n in zip(batched, lengths)), f"{label}: wrong lengths"
            notes.append(f"{label}: {same[0]}/3 alone and {same[1]}/3 batched equal eager, no recompile, "
                         f"peak batch {compiled.peak_batch}")
        finally:
            eager.close()
            compiled.close()
    return "; ".join(notes)


def check_flux(ctx: dict) -> str:
    import torch

    from cogkit.ml.tiny.flux import build_flux, build_flux_lora

    sys.path.insert(0, os.path.join(_gpu.REPO, "models", "flux"))
    from flux_engine import FluxEngine, Request

    weights = build_flux(os.path.join(ctx["tmp"], "FLUX.1-dev"), variant="dev")
    lora = build_flux_lora(weights, os.path.join(ctx["tmp"], "flux-lora.safetensors"))
    os.environ.update(COGKIT_FLUX_COMPILE="1", COGKIT_FLUX_FP8_CACHE=os.path.join(ctx["tmp"], "fp8"))
    torch._dynamo.reset()
    engine = FluxEngine(str(weights), warmup="none")
    assert engine.compiled and engine.fast is not None
    emb, pooled = engine.encode("a red fox")
    latents = {}
    with torch.inference_mode():  # as generate() runs (a grad-mode change would recompile)
        for fast in (False, True):
            latents[fast] = engine.pipeline("txt2img", fast)(
                prompt_embeds=emb, pooled_prompt_embeds=pooled, width=256, height=256, num_inference_steps=4,
                guidance_scale=3.5, max_sequence_length=engine.variant.max_sequence_length,
                generator=torch.Generator("cpu").manual_seed(1), output_type="latent").images.float()
    rel = float((latents[True] - latents[False]).norm() / latents[False].norm())
    assert rel <= 0.10, f"go_fast latents differ by {rel:.3f} (relative L2)"
    graphs = unique_graphs()

    def go(**kw):
        [img] = engine.generate(Request("a red fox", num_inference_steps=2, seed=3, go_fast=True, **kw), quiet=True)
        return img

    sizes = [go(aspect_ratio="16:9", megapixels="0.25").size, go(aspect_ratio="9:21", megapixels="0.25").size]
    for scale in (0.7, 1.2):
        go(megapixels="0.25", lora_weights=str(lora), lora_scale=scale)
    go(megapixels="0.25")
    assert unique_graphs() == graphs, f"{unique_graphs() - graphs} recompile(s) for new sizes / LoRAs"
    return (f"{engine.fast_report.get('granularity')} scales, scaled_mm={engine.fast_report.get('scaled_mm')}; "
            f"latents rel L2 {rel:.4f}; sizes {sizes} and LoRAs without recompiling")


def check_sdxl(ctx: dict) -> str:
    import torch

    from cogkit.ml.tiny.sdxl import build_sdxl

    sys.path.insert(0, os.path.join(_gpu.REPO, "models", "sdxl"))
    from sdxl_engine import Request, SDXLEngine

    weights = build_sdxl(os.path.join(ctx["tmp"], "sdxl"))
    os.environ.update(COGKIT_COMPILE="1", COGKIT_SDXL_FP8="1")
    torch._dynamo.reset()
    try:
        engine = SDXLEngine(str(weights))
        sizes = [engine.run(Request(width=w, height=h, num_inference_steps=3, seed=1))[0].size
                 for w, h in ((1024, 1024), (768, 512))]
    finally:
        os.environ.pop("COGKIT_SDXL_FP8", None)
    assert sizes == [(1024, 1024), (768, 512)], sizes
    return f"fp8 UNet blocks + compile: {sizes}"


def check_hotswap(ctx: dict) -> str:
    import numpy as np
    import torch

    from cogkit.ml.tiny.sdxl import build_sdxl, build_sdxl_lora

    sys.path.insert(0, os.path.join(_gpu.REPO, "models", "sdxl"))
    from sdxl_engine import Request, SDXLEngine

    weights = build_sdxl(os.path.join(ctx["tmp"], "sdxl-hotswap"))
    loras = {"A": build_sdxl_lora(weights, os.path.join(ctx["tmp"], "lora-a"), seed=3, rank=4),
             "B": build_sdxl_lora(weights, os.path.join(ctx["tmp"], "lora-b"), seed=5, rank=8)}
    engines = {}
    for compiled in (False, True):
        os.environ["COGKIT_COMPILE"] = "1" if compiled else "0"
        torch._dynamo.reset()
        engines[compiled] = SDXLEngine(str(weights))
    os.environ.pop("COGKIT_COMPILE", None)
    assert engines[True].slot is not None, "the compiled engine has no LoRA slot"
    graphs = unique_graphs()
    size = 1024 if ctx["device"] == "cuda" else 64  # the warm-up's size (SDXL compiles static shapes)
    worst = {}
    for label, lora, scale in (("none", None, 1.0), ("A", "A", 1.0), ("B", "B", 1.0), ("A x 0.5", "A", 0.5),
                               ("none again", None, 1.0)):
        req = dict(prompt="a red fox", width=size, height=size, num_inference_steps=4, seed=7, apply_watermark=False,
                   lora_weights=str(loras[lora]) if lora else None, lora_scale=scale)
        a, b = (np.asarray(engines[c].run(Request(**req))[0], dtype=np.int16) for c in (True, False))
        worst[label] = int(np.abs(a - b).max())
    assert unique_graphs() == graphs, f"{unique_graphs() - graphs} recompile(s) for LoRA swaps after the warm-up"
    # fp16 compiled vs eager: kernels differ in rounding; a LoRA missing or stale would be ~100+
    assert max(worst.values()) <= 24, f"compiled slot vs eager adapters, max pixel difference {worst}"
    return f"no recompile over 5 swaps; max pixel difference vs eager adapters {worst}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU with the eager compile backend (smoke test)")
    ap.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {', '.join(CHECKS)}")
    args = ap.parse_args(argv)
    asked = {c.strip() for c in args.only.split(",") if c.strip()}
    unknown = sorted(asked - set(CHECKS))
    if unknown:
        ap.error(f"--only: unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    wanted = [c for c in CHECKS if c in asked]  # this order: llama's fp32 runs before anything turns TF32 on
    log = _gpu.make_log("gpu_check")

    import torch

    if args.cpu:
        os.environ["COGKIT_DEVICE"] = "cpu"
        os.environ["COGKIT_COMPILE_BACKEND"] = "eager"  # inductor on a small CPU takes minutes per graph
    elif not torch.cuda.is_available():
        log("no CUDA device: use --cpu for a smoke test")
        return 2
    device = "cpu" if args.cpu else "cuda"
    backend = os.environ.get("COGKIT_COMPILE_BACKEND") or "inductor"
    log(f"device {device} ({torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU'}), "
        f"torch {torch.__version__}, compile backend {backend}")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="cogkit-gpu-check-") as tmp:
        ctx = {"device": device, "backend": backend, "tmp": tmp}
        for name in wanted:
            try:
                note = globals()[f"check_{name}"](ctx)
                log(f"PASS {name}: {note}")
            except Skip as exc:
                log(f"SKIP {name}: {exc}")
            except Exception as exc:  # one broken path must not hide the others
                failed += 1
                log(f"FAIL {name}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-6)}")
    log(f"{len(wanted) - failed} of {len(wanted)} checks passed or skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
