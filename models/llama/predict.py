"""Llama-family chat/completion predictor: streamed tokens, full sampling controls,
concurrent requests batched together (continuous batching).

Weights: a local ``save_pretrained`` folder of any transformers causal LM (with its
tokenizer, ideally with a chat template), an http(s) tar of one, or a Hugging Face
repo id, given as ``setup(weights)`` / COG_WEIGHTS; default meta-llama/Llama-3.1-8B-Instruct
(gated on the Hub: an HF_TOKEN with access; with HF_HUB_OFFLINE=1 only a cached copy counts,
so an offline machine without one fails at once, naming it).

Environment knobs (all optional): COG_MAX_CONCURRENCY (batch slots; default 16,
as in cog.yaml), COGKIT_LLM_MAX_SEQ_LEN (KV-cache positions per slot, i.e. the
context window served; default min(model's, 4096)), COGKIT_LLM_FP8=1 (fp8
weight-only linears), COGKIT_LLM_COMPILE=0/1 (compiled decode; default on one CUDA device). KV-cache memory
is slots x positions x (2 x layers x kv_heads x head_dim x 2 bytes): 8.6 GB for
Llama-3-8B at 16 x 4096. With several GPUs the model is split over them layer by
layer (device_map="auto"), each layer's cache beside it, decode eager.

torch and transformers are imported inside setup(), so ``cogkit schema`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Any

from cogkit import AsyncConcatenateIterator, BasePredictor, Input, Path, current_scope, streaming

DEFAULT_WEIGHTS = "meta-llama/Llama-3.1-8B-Instruct"
# A Hub repo may hold the weights twice (Meta's original/*.pth, 16 GB, pytorch_model*.bin): safetensors only.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]  # configs, weights, tokenizers
DEFAULT_SLOTS = 16  # keep equal to concurrency.max in cog.yaml
DEFAULT_MAX_SEQ_LEN = 4096
DEFAULT_MAX_NEW_TOKENS = 128


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Predictor(BasePredictor):
    def setup(self, weights: Path | None = None) -> None:
        from cogkit.ml.device import plan_device, set_global_flags
        from cogkit.ml.env import env_flag, env_int
        from cogkit.ml.llm_engine import LLMEngine
        from cogkit.ml.weights import resolve_weights

        folder = resolve_weights(weights, default=DEFAULT_WEIGHTS, allow_patterns=HUB_PATTERNS)  # fails fast
        plan = plan_device()
        set_global_flags(plan)
        slots = env_int("COG_MAX_CONCURRENCY", DEFAULT_SLOTS) or DEFAULT_SLOTS
        max_seq_len = env_int("COGKIT_LLM_MAX_SEQ_LEN", DEFAULT_MAX_SEQ_LEN)
        fp8 = bool(env_flag("COGKIT_LLM_FP8"))
        self.engine = LLMEngine.from_pretrained(
            folder,
            device=plan.device,
            dtype=plan.dtype,
            fp8=fp8,
            slots=slots,
            max_seq_len=max_seq_len,
            compile_decode=env_flag("COGKIT_LLM_COMPILE"),
        )
        # One short greedy generation: everything on the request path has run once.
        from cogkit.ml.sampling import SamplingParams

        warm_ids = self.engine.tokenizer("hi", add_special_tokens=True)["input_ids"]
        self.engine.generate(warm_ids, SamplingParams(temperature=0.0), max_new_tokens=3)

    @streaming
    async def predict(
        self,
        prompt: str = Input(description="Prompt to send to the model."),
        system_prompt: str = Input(
            default="You are a helpful assistant.",
            description="System prompt, placed in the chat template (or at {system_prompt}). Empty: none.",
        ),
        prompt_template: str = Input(
            default=None,
            description=(
                "Python format string with {system_prompt} and {prompt} (e.g. '<s>[INST] {prompt} [/INST]'). "
                "Default: the tokenizer's chat template, or the bare prompt when it has none."
            ),
        ),
        max_new_tokens: int = Input(
            default=DEFAULT_MAX_NEW_TOKENS,
            ge=1,
            description="Maximum number of tokens to generate (capped to what the context window leaves).",
        ),
        max_tokens: int = Input(
            default=None, ge=1, description="Alias of max_new_tokens (as vLLM-based predictors name it)."
        ),
        min_new_tokens: int = Input(
            default=-1,
            ge=-1,
            description="Minimum number of tokens to generate before end-of-sequence or a stop sequence; -1: off.",
        ),
        temperature: float = Input(
            default=0.7, ge=0.0, le=5.0, description="Randomness; 0 means greedy (always the most likely token)."
        ),
        top_p: float = Input(
            default=0.95,
            ge=0.0,
            le=1.0,
            description="Nucleus sampling: keep the smallest set of tokens with this total probability.",
        ),
        top_k: int = Input(default=-1, ge=-1, description="Keep only the k most likely tokens; -1 (or 0): off."),
        repetition_penalty: float = Input(
            default=1.0, ge=0.01, le=10.0, description="Penalise tokens already in the prompt or output; 1: off."
        ),
        presence_penalty: float = Input(
            default=0.0, ge=-2.0, le=2.0, description="Subtracted from tokens already generated at least once."
        ),
        frequency_penalty: float = Input(
            default=0.0, ge=-2.0, le=2.0, description="Subtracted once per time a token was already generated."
        ),
        stop_sequences: str = Input(
            default=None,
            description=(
                "Comma-separated stop sequences, e.g. '<end>,User:'. Generation stops before them; "
                "they are not in the output."
            ),
        ),
        seed: int = Input(default=None, ge=0, description="Random seed; leave empty for a random one (logged)."),
        log_performance_metrics: bool = Input(
            default=False, description="Log token counts, time to first token and tokens per second."
        ),
    ) -> AsyncConcatenateIterator[str]:
        from cogkit.ml.llm_text import build_prompt, parse_stop_sequences
        from cogkit.ml.sampling import SamplingParams
        from cogkit.ml.seeds import resolve_seed

        engine = self.engine
        new_tokens = _resolve_max_tokens(max_new_tokens, max_tokens)
        min_tokens = 0 if min_new_tokens in (-1, None) else min_new_tokens
        if min_tokens > new_tokens:
            raise ValueError(f"min_new_tokens ({min_tokens}) must not be greater than max_new_tokens ({new_tokens})")
        prompt_ids, text = build_prompt(engine.tokenizer, prompt, system_prompt, prompt_template)
        window = engine.max_seq_len
        if len(prompt_ids) >= window:
            raise ValueError(
                f"prompt: is {len(prompt_ids)} tokens after formatting, but the context window is {window} tokens "
                "(and at least one new token must fit)"
            )
        if len(prompt_ids) + min_tokens > window:
            raise ValueError(
                f"min_new_tokens ({min_tokens}) + the prompt ({len(prompt_ids)} tokens) exceed the context window "
                f"of {window} tokens"
            )
        if len(prompt_ids) + new_tokens > window:
            _log(
                f"max_new_tokens: {new_tokens} capped to {window - len(prompt_ids)} "
                f"(the prompt takes {len(prompt_ids)} of the {window}-token context window)"
            )
            new_tokens = window - len(prompt_ids)
        params = SamplingParams(
            temperature=temperature,
            top_p=top_p,
            top_k=-1 if top_k == 0 else top_k,
            repetition_penalty=repetition_penalty,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            min_new_tokens=min_tokens,
            seed=resolve_seed(seed),
        ).validate()
        _log(f"Formatted prompt: {text!r}")
        scope = current_scope()
        scope.record_metric("input_token_count", len(prompt_ids))

        stream = engine.submit(
            prompt_ids, params, max_new_tokens=new_tokens, stop_sequences=parse_stop_sequences(stop_sequences)
        )
        try:
            async for delta in stream:
                yield delta
        finally:
            stream.cancel()
            stats = stream.stats
            if stats is not None:
                _record(scope, stats, log=log_performance_metrics)


def _resolve_max_tokens(max_new_tokens: int | None, max_tokens: int | None) -> int:
    if max_tokens is None:
        return DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    if max_new_tokens not in (None, DEFAULT_MAX_NEW_TOKENS, max_tokens):
        raise ValueError(
            f"max_tokens ({max_tokens}) and max_new_tokens ({max_new_tokens}) disagree; "
            "max_tokens is an alias of max_new_tokens, give only one"
        )
    return max_tokens


def _record(scope: Any, stats: Any, *, log: bool) -> None:
    scope.record_metric("output_token_count", stats.output_token_count)
    if stats.time_to_first_token is not None:
        scope.record_metric("time_to_first_token", round(stats.time_to_first_token, 6))
    rate = stats.tokens_per_second
    if rate is not None:
        scope.record_metric("tokens_per_second", round(rate, 3))
    if log:
        ttft = "n/a" if stats.time_to_first_token is None else f"{stats.time_to_first_token * 1000:.1f} ms"
        _log(
            f"input tokens: {stats.input_token_count}, output tokens: {stats.output_token_count}, "
            f"time to first token: {ttft}, tokens per second: {'n/a' if rate is None else f'{rate:.1f}'}, "
            f"finish reason: {stats.finish_reason}, batched with up to {stats.batch_size_max} request(s)"
        )
