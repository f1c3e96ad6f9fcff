"""Llama-3-8B decode speed on a GPU with random weights (nothing is downloaded).

Builds the Llama-3-8B architecture (32 layers, d 4096, GQA 32/8, vocab 128256) with
random weights directly on the device, in bf16, and serves it with
``cogkit.ml.llm_engine.LLMEngine`` exactly as models/llama does (static slot KV
cache, compiled decode step with CUDA graphs, eager prefill). Then, where the card
has fp8 matmuls (sm_89+), the same model with fp8 weight-only linears
(``cogkit.ml.fp8``, lm_head kept in bf16). For each:

* batch 1: a 200-token prompt, 256 new tokens (EOS masked so all 256 come), greedy
  and sampled (temperature 0.7, top-p 0.95): decode tokens/s (tokens after the
  first / time after the first) and time to first token (submit -> first token);
  goals on H100: >= 170 tok/s bf16, >= 320 tok/s fp8, TTFT <= 25 ms;
* 32 concurrent requests (same lengths, sampled, own seeds) submitted at once:
  total output tokens/s over the wall time, and the per-request decode tokens/s;
  goal on H100: >= 2,500 tok/s total.

Each figure is printed with its H100 goal beside it (#17).

Medians over --runs runs after one warm-up run. Stops starting new cases after
--budget-s seconds so it fits a short device slot; the --json file is written after
each case. Each case compiles the decode step twice (batch 1 and 16), the bulk of
its time on a GPU (one attention span: the cache is sized to the request, so shorter
spans would only add graphs); if both cases do not fit one device call, run ``--fp8 off`` and
``--fp8 only`` as two.

    python bench/gpu_llama.py                      # on a GPU (about 5-8 minutes, estimated)
    python bench/gpu_llama.py --fp8 only           # the fp8 case alone
    python bench/gpu_llama.py --tiny               # tiny config on the CPU (a smoke test)
    python bench/gpu_llama.py --tiny --fp8 on --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import _gpu  # first: the checkout on sys.path, the Hub offline

LLAMA3_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=8192,
    rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
)
TINY = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
    rms_norm_eps=1e-6, tie_word_embeddings=False,
)
EOS_ID = 2


def numbered_tokenizer(vocab_size: int):
    """A tokenizer covering every id of the model (token i is the word ``t<i>``; id 2 is EOS):
    the engine detokenises every step, as it would with the real tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    vocab["</s>"] = EOS_ID
    del vocab[f"t{EOS_ID}"]
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="t0")


def build_model(cfg: dict[str, Any], device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**cfg, bos_token_id=1, eos_token_id=EOS_ID, pad_token_id=0)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def random_prompts(count: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (length,), generator=g).tolist() for _ in range(count)]


GOALS = {"batch1_bf16": 170, "batch1_fp8": 320, "concurrent32": 2500}  # tok/s on an H100 (#17)


def measure(engine, args, vocab: int, label: str, log) -> dict[str, Any]:
    from cogkit.ml.sampling import SamplingParams

    n = args.new_tokens
    out: dict[str, Any] = {"label": label}
    prompts = random_prompts(max(args.concurrent, args.runs + 1), args.prompt_tokens, vocab)
    settings = {
        "greedy": lambda i: SamplingParams(temperature=0.0, min_new_tokens=n),
        "sampled": lambda i: SamplingParams(temperature=0.7, top_p=0.95, min_new_tokens=n, seed=i),
    }
    for mode, params in settings.items():
        stats = []
        for i in range(args.runs + 1):  # run 0 warms up
            s = engine.submit(prompts[i], params(i), max_new_tokens=n)
            s.text()
            assert s.stats.output_token_count == n, s.stats
            if i:
                stats.append(s.stats)
        tps = statistics.median(st.tokens_per_second for st in stats)
        ttft = statistics.median(st.time_to_first_token for st in stats) * 1000
        out[f"batch1_{mode}"] = {"decode_tok_s": round(tps, 1), "ttft_ms": round(ttft, 2)}
        goal = GOALS["batch1_fp8" if label == "fp8" else "batch1_bf16"]
        log(f"[{label}] batch 1 {mode}: {tps:.1f} tok/s decode (H100 goal >= {goal}), TTFT {ttft:.1f} ms "
            f"(goal <= 25; median of {len(stats)})")
    # all requests submitted at once: they are admitted together and decoded as one batch
    t0 = time.perf_counter()
    with engine._cond:
        streams = [
            engine.submit(p, settings["sampled"](100 + i), max_new_tokens=n)
            for i, p in enumerate(prompts[: args.concurrent])
        ]
    for s in streams:
        s.text()
    wall = time.perf_counter() - t0
    total = sum(s.stats.output_token_count for s in streams)
    per = statistics.median(s.stats.tokens_per_second for s in streams)
    ttft = statistics.median(s.stats.time_to_first_token for s in streams) * 1000
    out[f"concurrent{args.concurrent}"] = {
        "total_tok_s": round(total / wall, 1), "per_request_decode_tok_s": round(per, 1),
        "median_ttft_ms": round(ttft, 1), "wall_s": round(wall, 2), "batch": engine.peak_batch,
    }
    log(f"[{label}] {args.concurrent} concurrent: {total / wall:.0f} tok/s total (H100 goal >= {GOALS['concurrent32']} "
        f"at 32), {per:.1f} tok/s per request, "
        f"median TTFT {ttft:.0f} ms, peak batch {engine.peak_batch}, {wall:.1f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on the CPU, short lengths (smoke test)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="default 200 (tiny: 20)")
    parser.add_argument("--new-tokens", type=int, default=None, help="default 256 (tiny: 32)")
    parser.add_argument("--concurrent", type=int, default=None, help="default 32 (tiny: 4)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fp8", choices=("auto", "on", "off", "only"), default="auto",
                        help="auto: also run fp8 weight-only where the card has fp8 matmuls (sm_89+); "
                        "on: also run it anywhere (dequantizing matmuls where fp8 ones are missing); "
                        "only: the fp8 case alone (e.g. as a second, shorter device call)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="compiled decode step (auto: on CUDA)")
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    import torch

    from cogkit.ml.compile import set_cache_dir
    from cogkit.ml.fp8 import fp8_matmul_supported
    from cogkit.ml.llm_engine import LLMEngine, quantize_fp8

    log = _gpu.make_log("gpu_llama")
    device = args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    args.prompt_tokens = args.prompt_tokens or (20 if args.tiny else 200)
    args.new_tokens = args.new_tokens or (32 if args.tiny else 256)
    args.concurrent = args.concurrent or (4 if args.tiny else 32)
    cfg = TINY if args.tiny else LLAMA3_8B
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    compile_decode = {"auto": device == "cuda", "on": True, "off": False}[args.compile]
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    set_cache_dir()
    card = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "CPU"
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "card": card, "device": device, "torch": torch.__version__,
        "model": "tiny Llama" if args.tiny else "Llama-3-8B architecture, random weights",
        "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "compiled_decode": compile_decode,
        "cases": [],
    }
    log(f"{results['model']} on {card} ({device}, {dtype}), compile={compile_decode}")
    tok = numbered_tokenizer(cfg["vocab_size"])
    t0 = time.perf_counter()
    model = build_model(cfg, device, dtype)
    log(f"model built in {time.perf_counter() - t0:.1f}s ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params)")

    def engine_for(label: str) -> LLMEngine:
        t0 = time.perf_counter()
        seq = args.prompt_tokens + args.new_tokens
        engine = LLMEngine(model, tok, slots=args.concurrent, max_seq_len=-(-seq // 64) * 64,
                           compile_decode=compile_decode, decode_buckets=[1, args.concurrent],
                           decode_spans=[-(-seq // 64) * 64],
                           prefix_cache_tokens=0)  # TTFT of a whole prompt: both modes reuse the prompts
        log(f"[{label}] engine ready in {time.perf_counter() - t0:.1f}s")
        return engine

    if args.fp8 != "only":
        label = "bf16" if dtype == torch.bfloat16 else "fp32"
        engine = engine_for(label)
        results["cases"].append(measure(engine, args, cfg["vocab_size"], label, log))
        engine.close()
        del engine
        _gpu.write_json(args.json, results)

    fp8 = args.fp8 in ("on", "only") or (args.fp8 == "auto" and fp8_matmul_supported(device))
    if fp8 and (args.fp8 == "only" or not _gpu.over_budget(log, args.budget_s, "fp8")):
        torch._dynamo.reset()  # the bf16 graphs (and their CUDA-graph memory) go
        if device == "cuda":
            torch.cuda.empty_cache()
        quantize_fp8(model)
        engine = engine_for("fp8")
        results["cases"].append(measure(engine, args, cfg["vocab_size"], "fp8 weights", log))
        engine.close()
    elif not fp8:
        log("fp8 skipped: " + ("--fp8 off" if args.fp8 == "off" else f"no fp8 matmuls on {card} (needs CUDA sm_89+)"))
    results["total_s"] = round(time.perf_counter() - log.start, 1)
    _gpu.write_json(args.json, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
