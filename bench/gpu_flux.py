"""FLUX.1 speed on a GPU with full-size random weights (nothing is downloaded).

Builds the FLUX.1 transformer (12 B, with the guidance embedding), T5-XXL encoder,
CLIP-L text encoder and the 16-channel VAE from their published configs with random
weights directly on the device, in the dtype cogkit.ml.device picks (bf16 on sm_80+),
and times the FLUX engine (models/flux/flux_engine.py: cached prompt embeddings,
denoising, VAE decode to PIL images) the way the predictor runs it:

* schnell: 1024x1024, 4 steps, 256 T5 tokens     goals on H100: fp8 <= 0.35 s, bf16 <= 0.50 s
* dev:     1024x1024, 28 steps, 512 T5 tokens, guidance 3.5          goal on H100: fp8 <= 2.0 s

in three modes: ``eager`` (go_fast=false: the bf16 model as diffusers runs it),
``compiled`` (go_fast on a bf16 copy: regional torch.compile, dynamic shapes; what
A100/T4 get) and ``fp8-compiled`` (go_fast: fp8 block weights + compile; what sm_89+
get). One transformer serves both variants (schnell's has no guidance embedding:
one small MLP less per step).

Then setup time to READY: the pipeline is saved to disk once (34 GB; skipped, with
a log line, when the disk lacks room for it and the 11 GB fp8 file), and a fresh
process runs the predictor's setup() twice, with an empty compile cache (and no
saved fp8 transformer) and again with both warm.

No case starts after --budget-s seconds (default 420; none with --tiny), and the
--json file is rewritten after every case, so a run cut short keeps what it measured.
The whole run is more than one ~8-minute device slot on an H100 (estimated, not
yet measured: the three modes 4-5 minutes, the boot part 3-4 more), so run it in
two parts:

    python bench/gpu_flux.py --no-boot          # on a GPU: the three modes
    python bench/gpu_flux.py --modes ""         # on a GPU: setup to READY only
    python bench/gpu_flux.py --tiny             # tiny configs on the CPU (a smoke test)
    python bench/gpu_flux.py --tiny --no-compile --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import _gpu  # first: the checkout on sys.path, the Hub offline

FLUX_DIR = os.path.join(_gpu.REPO, "models", "flux")
sys.path.insert(0, FLUX_DIR)

TRANSFORMER_FULL = dict(  # FLUX.1 [dev]; [schnell] is the same without guidance_embeds
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
VAE_FULL = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, sample_size=1024, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False,
)
CLIP_FULL = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
T5_FULL = dict(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
               relative_attention_num_buckets=32, feed_forward_proj="gated-gelu")
GOALS = {("schnell", "fp8-compiled"): 0.35, ("schnell", "compiled"): 0.50, ("schnell", "eager"): None,
         ("dev", "fp8-compiled"): 2.0}


log = _gpu.make_log("gpu_flux", sys.stderr)  # stdout carries the JSON


def build_pipeline(tiny: bool, plan):
    """A FluxPipeline with random weights built on ``plan.device`` in ``plan.dtype``
    (never materialised in fp32 first: the full transformer alone would be 48 GB)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from cogkit.ml.tiny.flux import flux_transformer, flux_vae, t5_encoder
    from cogkit.ml.tiny.tokenizers import clip_text_config, clip_tokenizer, t5_tokenizer

    tok, tok2 = clip_tokenizer(), t5_tokenizer()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(plan.dtype)
    try:
        with torch.device(plan.device):
            if tiny:
                transformer, vae = flux_transformer(guidance_embeds=True), flux_vae()
                te, te2 = CLIPTextModel(clip_text_config(tok)), t5_encoder(tok2)
            else:
                ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
                transformer = FluxTransformer2DModel(**TRANSFORMER_FULL)
                vae = AutoencoderKL(**VAE_FULL)
                te = CLIPTextModel(CLIPTextConfig(**CLIP_FULL, **ids))
                te2 = T5EncoderModel(T5Config(**T5_FULL, pad_token_id=tok2.pad_token_id, eos_token_id=tok2.eos_token_id,
                                              decoder_start_token_id=0))
    finally:
        torch.set_default_dtype(default)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(transformer=transformer, vae=vae, text_encoder=te, tokenizer=tok, text_encoder_2=te2,
                        tokenizer_2=tok2, scheduler=scheduler)
    pipe.to(plan.device, plan.dtype)
    for m in (transformer, vae, te, te2):
        m.eval()
    params = sum(p.numel() for p in transformer.parameters())
    log(f"built random FLUX ({params / 1e9:.2f} B transformer params) on {plan.device} in "
        f"{time.perf_counter() - t0:.1f}s")
    return pipe


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_case(engine, variant: str, steps: int, size: int, go_fast: bool, reps: int) -> dict:
    from flux_engine import VARIANTS, Request

    engine.variant = VARIANTS[variant]
    req = dict(prompt="a photo of a red fox in the snow", aspect_ratio="custom" if size != 1024 else "1:1",
               width=size if size != 1024 else None, height=size if size != 1024 else None,
               num_inference_steps=steps, seed=0, go_fast=go_fast)
    t0 = time.perf_counter()
    engine.generate(Request(**req), quiet=True)  # first call: compiles (go_fast) and fills the prompt cache
    sync()
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        engine.generate(Request(**req), quiet=True)
        sync()
        times.append(time.perf_counter() - t0)
    return {"first_call_s": round(first, 3), "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4), "runs": [round(t, 4) for t in times],
            "it_per_s": round(steps / statistics.median(times), 2)}


def boot(weights: str, compile_cache: str, fp8_cache: str, compile_: bool, warmup: str, timeout: float) -> dict:
    """Process start -> predictor setup() done, in a fresh interpreter."""
    code = (
        "import json, sys, time\n"
        f"sys.path.insert(0, {FLUX_DIR!r})\n"
        "from cogkit.loader import instantiate, load_target\n"
        f"p = instantiate(load_target('predict.py:Predictor', {FLUX_DIR!r}))\n"
        "t0 = time.perf_counter()\n"
        f"p.setup(weights={weights!r})\n"
        "print(json.dumps({'setup_s': time.perf_counter() - t0, 'fast': p.engine.fast_report}))\n"
    )
    env = dict(os.environ, COGKIT_COMPILE_CACHE=compile_cache, COGKIT_FLUX_FP8_CACHE=fp8_cache,
               COGKIT_FLUX_COMPILE="1" if compile_ else "0", COGKIT_FLUX_WARMUP=warmup)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"boot failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    fast = result.get("fast") or {}
    return {"to_ready_s": round(wall, 2), "setup_s": round(result["setup_s"], 2),
            "fp8": fast.get("source", "n/a").split(" ")[0].rstrip(","), "fp8_build_s": round(fast.get("seconds", 0.0), 2)}


def pipeline_bytes(pipe) -> tuple[int, int]:
    """(bytes save_pretrained writes, bytes of the fp8 transformer file setup() saves)."""
    import torch
    from flux_fast import block_linears

    total = sum(t.numel() * t.element_size() for m in pipe.components.values() if isinstance(m, torch.nn.Module)
                for t in [*m.parameters(), *m.buffers()])
    fp8 = sum(lin.weight.numel() for lin in block_linears(pipe.transformer).values())
    return total, fp8


def free_gpu() -> str:
    """Let go of everything this process compiled or cached on the GPU (the boot
    processes load a second copy of the pipeline); returns what is still held."""
    import torch

    torch._dynamo.reset()  # compiled code may keep the modules it was traced from alive
    gc.collect()
    if not torch.cuda.is_available():
        return "no GPU"
    torch.cuda.empty_cache()
    return f"{torch.cuda.memory_allocated() / 2**30:.1f} GiB allocated, {torch.cuda.memory_reserved() / 2**30:.1f} GiB reserved"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="FLUX.1 speed with random full-size weights")
    ap.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke test)")
    ap.add_argument("--size", type=int, default=None, help="image side, 256-1440 (default 1024; tiny: 512)")
    ap.add_argument("--reps", type=int, default=None, help="timed runs per case (default 5; tiny: 2)")
    ap.add_argument("--dev-steps", type=int, default=28)
    ap.add_argument("--modes", default="eager,compiled,fp8-compiled")
    ap.add_argument("--no-compile", action="store_true", help="go_fast modes without torch.compile")
    ap.add_argument("--no-boot", action="store_true", help="skip the setup-to-READY measurements")
    ap.add_argument("--workdir", default=None, help="where saved weights and caches go (default: a temp dir)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start no new case after this many seconds (default 420; no limit with --tiny)")
    ap.add_argument("--json", default=None, help="write the results here (after every case)")
    args = ap.parse_args(argv)
    budget_s = args.budget_s if args.budget_s is not None else (float("inf") if args.tiny else 420.0)
    size = args.size or (512 if args.tiny else 1024)
    reps = args.reps or (2 if args.tiny else 5)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    compile_ = not args.no_compile
    workdir = args.workdir or tempfile.mkdtemp(prefix="cogkit-flux-bench-")
    os.makedirs(workdir, exist_ok=True)
    os.environ["COGKIT_COMPILE_CACHE"] = os.path.join(workdir, "compile-inprocess")

    import torch

    from cogkit.ml.device import plan_device

    from flux_engine import FluxEngine

    plan = plan_device()
    results: dict = {
        "date": time.strftime("%Y-%m-%d"), "card": plan.card, "device": plan.device, "dtype": str(plan.dtype),
        "torch": torch.__version__, "size": size, "tiny": args.tiny, "compile": compile_, "cases": {},
    }
    pipe = build_pipeline(args.tiny, plan)

    for mode in modes:
        if _gpu.over_budget(log, budget_s, f"mode {mode}"):
            results["cases"].update({f"{v}/{mode}": {"skipped": "time budget"} for v in ("schnell", "dev")})
            continue
        os.environ["COGKIT_FLUX_FP8"] = "1" if mode == "fp8-compiled" else "0"
        os.environ["COGKIT_FLUX_COMPILE"] = "1" if (compile_ and mode != "eager") else "0"
        os.environ["COGKIT_FLUX_GO_FAST"] = "0" if mode == "eager" else "1"
        t0 = time.perf_counter()
        engine = FluxEngine(pipe=pipe, plan=plan, warmup="none")
        build_s = time.perf_counter() - t0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        for variant, steps in (("schnell", 4), ("dev", args.dev_steps)):
            if _gpu.over_budget(log, budget_s, f"{variant} {mode}"):
                results["cases"][f"{variant}/{mode}"] = {"skipped": "time budget"}
                continue
            r = time_case(engine, variant, steps, size, go_fast=mode != "eager", reps=reps)
            r["engine_setup_s"] = round(build_s, 2)
            if mode != "eager":
                r["go_fast"] = {k: v for k, v in engine.fast_report.items() if k != "source"}
            if torch.cuda.is_available():
                r["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            goal = None if args.tiny else GOALS.get((variant, mode))
            r["goal_s"] = goal
            results["cases"][f"{variant}/{mode}"] = r
            _gpu.write_json(args.json, results)
            log(f"{variant:7s} {mode:13s} {size}x{size} {steps:2d} steps: median {r['median_s']:.3f}s "
                f"({r['it_per_s']} it/s), first call {r['first_call_s']:.1f}s"
                + (f", goal <= {goal}s" if goal else ""))
        del engine
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    if not args.no_boot:
        weights = save_for_boot(pipe, workdir, budget_s, results)
        del pipe  # the boot processes load their own copy: nothing of this one may stay on the GPU
        if weights is not None:
            log(f"GPU memory of this process before the boots: {free_gpu()}")
            run_boots(weights, args, plan, workdir, budget_s, compile_, results)

    _gpu.write_json(args.json, results)
    print(json.dumps(results, indent=2))
    return 0


def save_for_boot(pipe, workdir: str, budget_s: float, results: dict) -> str | None:
    """The pipeline saved for the boot processes (once per --workdir); None, with the
    reason in ``results``, when the time budget is spent or the disk lacks room."""
    import shutil

    weights = os.path.join(workdir, "weights")
    saved = os.path.isfile(os.path.join(weights, "model_index.json"))
    if _gpu.over_budget(log, budget_s, "the setup-to-READY measurements"):
        results["boot_skipped"] = "time budget"
        return None
    pipe_bytes, fp8_bytes = pipeline_bytes(pipe)
    need = (0 if saved else pipe_bytes) + fp8_bytes + (1 << 30)  # + inductor caches and slack
    free = shutil.disk_usage(workdir).free
    if free < need:
        results["boot_skipped"] = f"disk: {need / 2**30:.1f} GiB needed in {workdir}, {free / 2**30:.1f} GiB free"
        log(f"setup-to-READY skipped: {results['boot_skipped']} (--workdir elsewhere?)")
        return None
    t0 = time.perf_counter()
    if not saved:
        pipe.save_pretrained(weights)
    results["save_s"] = round(time.perf_counter() - t0, 1)
    log(f"pipeline saved to {weights} in {results['save_s']:.1f}s")
    return weights


def run_boots(weights: str, args, plan, workdir: str, budget_s: float, compile_: bool, results: dict) -> None:
    """Setup to READY in fresh processes, cold then warm caches (see the module docstring)."""
    caches = os.path.join(workdir, "boot-compile"), os.path.join(workdir, "boot-fp8")
    warmup = "presets" if plan.device == "cuda" and compile_ else "none"
    for label in ("cold", "warm"):
        if _gpu.over_budget(log, budget_s, f"the {label} boot"):
            results[f"boot_{label}"] = {"skipped": "time budget"}
            continue
        os.environ.pop("COGKIT_FLUX_FP8", None)
        os.environ.pop("COGKIT_FLUX_GO_FAST", None)
        try:
            r = boot(weights, *caches, compile_=compile_, warmup=warmup, timeout=900)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            results[f"boot_{label}"] = {"error": str(exc)[-2000:]}
            log(f"boot ({label}) failed: {str(exc)[-2000:]}")
            _gpu.write_json(args.json, results)
            continue
        results[f"boot_{label}"] = r
        _gpu.write_json(args.json, results)
        log(f"boot ({label} compile cache, fp8 {r['fp8']}): READY in {r['to_ready_s']:.1f}s "
            f"(setup {r['setup_s']:.1f}s, fp8 transformer {r['fp8_build_s']:.1f}s)"
            + (", goal <= 15s" if label == "warm" and not args.tiny else ""))


if __name__ == "__main__":
    raise SystemExit(main())
