#!/usr/bin/env python3
"""Does a Llama decode step cost what the filled context costs, or what the window does?

A CPU proxy for the GPU path (#17): a tiny random Llama (cogkit.ml.tiny, an 8,192-position
window, its heads widened so that attention is a real share of a step: 8 heads of 32, no
GQA) answers 8 prompts at once, 32 greedy tokens each, from two engines, one with
``max_seq_len`` 8192 and one with 256, in alternating rounds. The decode step time is
``decode_seconds / (tokens - 1)`` of the last request admitted (its span holds decode steps
only); the figure is the median over rounds of 8192's over 256's. A third engine attends over the whole window at every step
(``decode_spans=[8192]``, the engine before it attended over the filled prefix), for
comparison. Every engine's tokens must equal transformers' ``generate``.

    python bench/llm_context_scaling.py --rounds 15

The LAST line printed is the figure: ``decode step ratio 8192/256: X`` (target ≤ 1.15).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from cogkit.ml.llm_engine import LLMEngine  # noqa: E402
from cogkit.ml.llm_text import build_prompt  # noqa: E402
from cogkit.ml.sampling import SamplingParams  # noqa: E402
from cogkit.ml.tiny.llama import build_tiny_llama  # noqa: E402

NEW_TOKENS = 32


BATCH = 8
CONFIG = dict(hidden_size=256, intermediate_size=512, num_attention_heads=8, num_key_value_heads=8, head_dim=32)


def step_ms(engine: LLMEngine, ids: list[int]) -> tuple[float, list[int]]:
    """One decode step's time with BATCH requests running, and the first request's tokens."""
    params = SamplingParams(temperature=0.0, min_new_tokens=NEW_TOKENS)
    with engine._cond:  # admitted together: one batch from the first decode step on
        streams = [engine.submit(ids, params, max_new_tokens=NEW_TOKENS) for _ in range(BATCH)]
    for s in streams:
        s.text()
    assert all(s.token_ids == streams[0].token_ids for s in streams)
    step = min(s.stats.decode_seconds for s in streams) / (NEW_TOKENS - 1)
    return step * 1000, streams[0].token_ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="cogkit-llm-scaling-") as tmp:
        folder = build_tiny_llama(Path(tmp) / "llama", max_position_embeddings=8192, **CONFIG)
        tok = AutoTokenizer.from_pretrained(folder)
        ids = build_prompt(tok, "tell me a story about a dragon", "You are a tiny robot.")[0]
        reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.no_grad():
            out = reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        expected = out[0, len(ids):].tolist()
        engines = {
            "8192": LLMEngine.from_pretrained(folder, device="cpu", dtype=torch.float32, slots=BATCH, max_seq_len=8192),
            "256": LLMEngine.from_pretrained(folder, device="cpu", dtype=torch.float32, slots=BATCH, max_seq_len=256),
            "8192, whole window": LLMEngine.from_pretrained(folder, device="cpu", dtype=torch.float32, slots=BATCH,
                                                            max_seq_len=8192, decode_spans=[8192]),
        }
        try:
            times: dict[str, list[float]] = {name: [] for name in engines}
            for name, engine in engines.items():  # warm-up, and the fidelity check
                _, tokens = step_ms(engine, ids)
                if tokens != expected:
                    raise SystemExit(f"engine {name}: greedy tokens differ from transformers' generate")
            for r in range(args.rounds):
                order = list(engines) if r % 2 == 0 else list(reversed(engines))
                for name in order:
                    ms, tokens = step_ms(engines[name], ids)
                    assert tokens == expected, name
                    times[name].append(ms)
        finally:
            for engine in engines.values():
                engine.close()
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, value in med.items():
        print(f"max_seq_len {name:>18}: decode step {value:.3f} ms (median of {args.rounds} rounds)")
    print(f"whole-window decode step ratio 8192/256: {med['8192, whole window'] / med['256']:.3f}")
    print("greedy tokens: equal to transformers' generate for every engine")
    print(f"decode step ratio 8192/256: {med['8192'] / med['256']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
