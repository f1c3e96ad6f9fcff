"""Continuous-batching text generation on a transformers causal LM.

``LLMEngine`` owns the model and a background thread. ``submit()`` queues a request
and returns a ``GenerationStream`` (iterate it with ``for`` or ``async for`` to get
text deltas; ``stream.stats`` holds the counts and timings once it ends).

How a request runs:

* The KV cache is static: ``slots`` rows of ``max_seq_len`` positions per layer
  (``SlotKVCache``), allocated once. A request takes the lowest free slot.
* Between two decode steps, waiting requests are admitted: each prompt is prefilled
  on its own into its slot, and its first token is sampled (time to first token).
  Prefill is chunked (``prefill_chunk`` tokens, default 512) and interleaved with the
  decode steps: while others are decoding, one chunk runs between two of their steps,
  so a long prompt holds their next token back by one chunk, not by the whole prompt
  (with nobody decoding, the chunks run back to back). A chunk attends over the slot's
  filled prefix and causally within itself. Prompt prefixes are cached
  (``cogkit.ml.llm_prefix``, ``prefix_cache_tokens``): a request starting with the
  same system prompt as an earlier one copies that prefix's keys and values into its
  slot and prefills only the rest.
* One decode step advances every running request together: the last token of each
  slot goes in at that slot's own position, with a mask that lets each row see only
  its own positions. The step runs on the first ``n`` slots, ``n`` a power of two
  (so at most log2(slots)+1 shapes exist, each compiled/captured once on GPU;
  ``decode_buckets`` picks other sizes, e.g. [1, slots] to compile only two), and
  attends over the first ``span`` positions of the cache only: the smallest power of
  two from 256 (``decode_spans`` picks others) that holds the longest running row. So
  a step costs what the filled context costs, not what the window does: a 32-token
  answer in an 8,192-position cache attends over 256 positions, not 8,192.
* Each request keeps its own sampling settings and generator (``cogkit.ml.sampling``),
  detokeniser and stop sequences (``cogkit.ml.llm_text``); it ends on an
  end-of-sequence token, a stop sequence, ``max_new_tokens``, or cancellation.

The model stays a plain transformers module: the engine passes its own cache object
(``cache=``), explicit per-row ``position_ids`` and a 4-D mask, and registers one
attention function ("cogkit_slots", SDPA without repeating K/V for grouped-query
heads). On CUDA the decode step is ``torch.compile``d with CUDA graphs
("reduce-overhead"), gpt-fast style; prefill stays eager. A model split over several
GPUs (``device_map="auto"``) keeps each layer's cache on that layer's GPU and decodes
eagerly.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cogkit.ml.llm_prefix import PrefixCache
from cogkit.ml.llm_text import IncrementalDecoder, StopMatcher
from cogkit.ml.logs import log
from cogkit.ml.sampling import SamplingParams, SlotSampler

ATTENTION_NAME = "cogkit_slots"


class GenerationError(RuntimeError):
    """A request the engine could not run (bad request or a failed forward pass)."""


# ----------------------------------------------------------------------------------------------
# Results and streams


@dataclasses.dataclass
class GenerationStats:
    """Counts and timings of one request (seconds, measured by the engine)."""

    input_token_count: int
    output_token_count: int = 0
    time_to_first_token: float | None = None  # submit -> first token sampled (includes queueing)
    decode_seconds: float = 0.0  # first token -> last token
    finish_reason: str = ""  # "stop" (EOS or stop sequence), "length", "canceled", "error"
    batch_size_max: int = 1  # most requests decoded together in one step while this one ran
    cached_input_token_count: int = 0  # prompt tokens taken from the prefix cache, not prefilled

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed: tokens after the first, per second after the first."""
        if self.output_token_count < 2 or self.decode_seconds <= 0:
            return None
        return (self.output_token_count - 1) / self.decode_seconds


_END = object()


class GenerationStream:
    """Text deltas of one request, filled by the engine thread, read by one consumer."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._wakers: list[Any] = []
        self._request: _Request | None = None
        self.stats: GenerationStats | None = None
        self.token_ids: list[int] = []  # every sampled token, end-of-sequence included

    # engine side
    def _push(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def _take(self) -> Any:
        item = self._items[0]
        if item is _END or isinstance(item, BaseException):
            # the end stays in place: reading the stream again ends (or fails) at once
            # instead of waiting forever for items that never come
            if isinstance(item, BaseException):
                raise item
            return item
        return self._items.popleft()

    # consumer side
    def __iter__(self) -> Iterator[str]:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._take()
            if item is _END:
                return
            yield item

    async def __aiter__(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(event.set)

        with self._cond:
            self._wakers.append(wake)
        try:
            while True:
                event.clear()
                with self._cond:
                    item = self._take() if self._items else None
                if item is None:
                    await event.wait()
                    continue
                if item is _END:
                    return
                yield item
        finally:
            with self._cond:
                self._wakers.remove(wake)

    def text(self) -> str:
        """Consume the whole stream and return the joined text."""
        return "".join(self)

    def cancel(self) -> None:
        """Stop generating (the engine frees the slot before its next step)."""
        if self._request is not None:
            self._request.cancelled = True


@dataclasses.dataclass(eq=False)
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    decoder: IncrementalDecoder
    matcher: StopMatcher
    stream: GenerationStream
    stats: GenerationStats
    submitted_at: float
    slot: int = -1
    position: int = 0  # where the next input token goes in the cache
    prefilled: int = 0  # prompt tokens already in the cache
    prefix_checked: bool = False  # the prefix cache was asked
    last_token: int = 0
    first_token_at: float = 0.0
    cancelled: bool = False


# ----------------------------------------------------------------------------------------------
# The cache and the attention function the model runs with


class SlotKVCache:
    """Static K/V buffers ``[slots, kv_heads, max_seq_len, head_dim]`` per layer.

    transformers' attention layers call ``update(k, v, layer_idx, ...)`` and attend
    over what it returns. In prefill mode (``prefill_slot`` set) the new keys fill that
    slot from position ``prefill_start`` on, and the slot up to them comes back; otherwise
    row i of the batch is slot i and its one new key goes to ``positions[i]``, and the first
    ``span`` positions of the first ``rows`` slots come back (the mask hides the rest
    of each row).
    """

    is_compileable = True

    def __init__(
        self, config: Any, slots: int, max_seq_len: int, dtype: torch.dtype, devices: Sequence[torch.device]
    ) -> None:
        """``devices``: one per layer (a model split over several GPUs keeps each layer's
        cache beside it), or a single one for all."""
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = text_config.num_attention_heads
        kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        shape = (slots, kv_heads, max_seq_len, head_dim)
        layers = text_config.num_hidden_layers
        devices = list(devices) if len(devices) == layers else [devices[0]] * layers
        self.keys = [torch.zeros(shape, dtype=dtype, device=d) for d in devices]
        self.values = [torch.zeros(shape, dtype=dtype, device=d) for d in devices]
        for t in (*self.keys, *self.values):
            # fixed addresses: in-place updates then keep CUDA graphs valid
            torch._dynamo.mark_static_address(t)
        self.prefill_slot: int | None = None
        self.prefill_start = 0  # prefill mode: where this chunk's keys go in the slot
        self.positions: torch.Tensor | None = None
        self.span = max_seq_len  # decode: how many positions of each row to attend over

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.prefill_slot is not None:
            s, a = self.prefill_slot, self.prefill_start
            b = a + key_states.shape[2]
            keys[s, :, a:b].copy_(key_states[0])
            values[s, :, a:b].copy_(value_states[0])
            return keys[s : s + 1, :, :b], values[s : s + 1, :, :b]
        rows, heads, _, dim = key_states.shape
        assert self.positions is not None, "SlotKVCache: positions not set for a decode step"
        index = self.positions.to(keys.device).view(rows, 1, 1, 1).expand(rows, heads, 1, dim)
        keys[:rows].scatter_(2, index, key_states)
        values[:rows].scatter_(2, index, value_states)
        return keys[:rows, :, : self.span], values[:rows, :, : self.span]


def _slot_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    batch, heads, q_len, dim = query.shape
    group = heads // key.shape[1]
    if attention_mask is None:
        # prefill of one slot from position 0: plain causal attention
        out = F.scaled_dot_product_attention(
            query, key, value, is_causal=q_len > 1, scale=scaling, enable_gqa=group > 1
        )
    elif q_len == 1 and group > 1:
        # decode: the heads sharing a K/V head act as that head's queries (no K/V copies)
        grouped = query.reshape(batch, key.shape[1], group, dim)
        out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask, scale=scaling)
        out = out.reshape(batch, heads, 1, dim)
    else:
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=scaling, enable_gqa=group > 1
        )
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, _slot_attention)


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends generation: the generation config's, the model config's, the tokenizer's."""
    ids: list[int] = []
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)
    return ids


def _layer_devices(model: Any) -> list[torch.device]:
    """The device of each decoder layer (several with ``device_map="auto"`` on many GPUs)."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        return []
    out = []
    for layer in layers:
        weight = next((p for p in layer.parameters()), None)
        out.append(weight.device if weight is not None else torch.device("cpu"))
    return out


def quantize_fp8(model: Any, *, use_scaled_mm: bool | None = None) -> int:
    """fp8 weight-only linears (per-row scales) for every Linear of a causal LM but its
    lm_head, which stays in the model's dtype (the logits are the most sensitive);
    returns how many were swapped. ``use_scaled_mm``: see cogkit.ml.fp8.FP8Linear."""
    from cogkit.ml.fp8 import quantize_linears

    return quantize_linears(model, granularity="row", include=lambda name, _: not name.endswith("lm_head"),
                            use_scaled_mm=use_scaled_mm)


def _buckets(limit: int, start: int = 1) -> list[int]:
    """Powers of two from ``start`` below ``limit``, then ``limit``."""
    out, n = [], start
    while n < limit:
        out.append(n)
        n *= 2
    return out + [limit]


MIN_SPAN = 256  # the shortest attention span of a decode step


# ----------------------------------------------------------------------------------------------


class LLMEngine:
    """See the module docstring. Thread-safe: ``submit`` from any thread or event loop."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        slots: int = 8,
        max_seq_len: int | None = None,
        compile_decode: bool | None = None,
        decode_buckets: Sequence[int] | None = None,
        decode_spans: Sequence[int] | None = None,
        compile_backend: str | Callable[..., Any] = "inductor",
        warm_up: bool = True,
        prefill_chunk: int | None = 512,
        prefix_cache_tokens: int | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots: must be >= 1, got {slots}")
        if max_seq_len is not None and max_seq_len < 2:
            raise ValueError(f"max_seq_len: must be >= 2 positions, got {max_seq_len}")
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError(f"prefill_chunk: must be >= 1 token (or None for whole prompts), got {prefill_chunk}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = model.get_input_embeddings().weight.device  # where input ids go
        layer_devices = _layer_devices(model)
        multi_device = len(set(layer_devices) | {self.device}) > 1
        self.dtype = next(p for p in model.parameters() if p.dtype.is_floating_point).dtype
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        window = getattr(config, "max_position_embeddings", None) or 4096
        self.max_seq_len = int(min(window, max_seq_len) if max_seq_len else window)
        self.slots = slots
        self.prefill_chunk = prefill_chunk or self.max_seq_len
        # one window's worth of cached prefix positions unless told (0: none)
        self.prefixes = PrefixCache(self.max_seq_len if prefix_cache_tokens is None else prefix_cache_tokens)
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        _register_attention()
        model.set_attn_implementation(ATTENTION_NAME)
        self.cache = SlotKVCache(model.config, slots, self.max_seq_len, self.dtype, layer_devices or [self.device])
        self.sampler = SlotSampler(slots, self.vocab_size, model.get_output_embeddings().weight.device)
        self._positions_all = torch.arange(self.max_seq_len, device=self.device)
        torch._dynamo.mark_static_address(self._positions_all)
        self._buckets = (
            sorted({min(int(b), slots) for b in decode_buckets} | {slots}) if decode_buckets else _buckets(slots)
        )
        if self._buckets[0] < 1:
            raise ValueError(f"decode_buckets: batch sizes must be >= 1, got {list(decode_buckets or [])}")
        self._spans = (
            sorted({min(int(s), self.max_seq_len) for s in decode_spans} | {self.max_seq_len})
            if decode_spans else _buckets(self.max_seq_len, min(MIN_SPAN, self.max_seq_len))
        )
        if self._spans[0] < 1:
            raise ValueError(f"decode_spans: spans must be >= 1 position, got {list(decode_spans or [])}")
        if compile_decode is None:
            compile_decode = self.device.type == "cuda" and not multi_device  # CUDA graphs need one device
        self.compile_decode = compile_decode
        self._decode = self._decode_forward
        if compile_decode:
            # one graph per (batch size, span): room for all of them in dynamo's cache
            graphs = len(self._buckets) * len(self._spans) + 2
            if torch._dynamo.config.recompile_limit < graphs:
                torch._dynamo.config.recompile_limit = graphs
            mode = "reduce-overhead" if self.device.type == "cuda" and compile_backend == "inductor" else None
            self._decode = torch.compile(
                self._decode_forward, backend=compile_backend, mode=mode, fullgraph=True, dynamic=False
            )

        self.peak_batch = 0  # most requests decoded together in one step (for tests and logs)
        self.decode_steps = 0
        self.prefill_chunks = 0
        self._cond = threading.Condition()
        self._pending: collections.deque[_Request] = collections.deque()
        self._active: dict[int, _Request] = {}
        self._closing = False
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._warm_up = warm_up and compile_decode
        self._thread = threading.Thread(target=self._run, name="cogkit-llm-engine", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error
        log(
            f"[llm] engine ready: {slots} slots x {self.max_seq_len} positions "
            f"(KV cache {self.cache.nbytes / 2**30:.2f} GiB, {self.dtype}), decode "
            f"{'compiled' if compile_decode else 'eager'} on {self.device}"
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        fp8: bool = False,
        **kwargs: Any,
    ) -> LLMEngine:
        """Load a causal LM and its tokenizer from a local folder (save_pretrained layout)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device is None or dtype is None:
            from cogkit.ml.device import plan_device

            plan = plan_device()
            device = device or plan.device
            dtype = dtype or plan.dtype
        from cogkit.ml.weights import WeightsError

        folder = os.fspath(path)
        missing = [f for f in ("config.json",) if not os.path.isfile(os.path.join(folder, f))]
        tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
        if not any(os.path.isfile(os.path.join(folder, f)) for f in tokenizer_files):
            missing.append("tokenizer.json / tokenizer_config.json")
        if missing:
            raise WeightsError(
                f"weights: {folder} is not a transformers causal-LM folder (missing {', '.join(missing)}); "
                "expected what save_pretrained writes for the model and its tokenizer"
            )
        # AutoTokenizer, not a concrete class: those silently return an empty tokenizer for a bad folder
        tokenizer = AutoTokenizer.from_pretrained(folder)
        # A model too big for one GPU (70B-class in bf16) is split over all of them, layer by layer.
        device_map = "auto" if str(device) == "cuda" and torch.cuda.device_count() > 1 else str(device)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device_map)
        if fp8:
            quantize_fp8(model)
        return cls(model, tokenizer, **kwargs)

    # ------------------------------------------------------------------------------------------
    # public API

    def submit(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        *,
        max_new_tokens: int = 128,
        stop_sequences: Sequence[str] = (),
    ) -> GenerationStream:
        """Queue a request; raises GenerationError (naming the rule) if it cannot fit."""
        params = (params or SamplingParams()).validate()
        prompt_ids = [int(t) for t in prompt_ids]
        if not prompt_ids:
            raise GenerationError("prompt: is empty after tokenisation")
        if max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
        if params.min_new_tokens > max_new_tokens:
            raise GenerationError(
                f"min_new_tokens ({params.min_new_tokens}) must not exceed max_new_tokens ({max_new_tokens})"
            )
        if len(prompt_ids) + max_new_tokens > self.max_seq_len:
            raise GenerationError(
                f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                f"context window of {self.max_seq_len} tokens"
            )
        if self._closing:
            raise GenerationError("the engine is shut down")
        stream = GenerationStream()
        req = _Request(
            prompt_ids=prompt_ids,
            params=params,
            max_new_tokens=max_new_tokens,
            decoder=IncrementalDecoder(self.tokenizer),
            matcher=StopMatcher(list(stop_sequences)),
            stream=stream,
            stats=GenerationStats(input_token_count=len(prompt_ids)),
            submitted_at=time.perf_counter(),
        )
        stream._request = req
        stream.stats = req.stats
        with self._cond:
            self._pending.append(req)
            self._cond.notify_all()
        return stream

    def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams | None = None, **kwargs: Any
    ) -> tuple[str, GenerationStats]:
        """Blocking convenience: the whole text and the stats."""
        stream = self.submit(prompt_ids, params, **kwargs)
        text = stream.text()
        assert stream.stats is not None
        return text, stream.stats

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------------------------------
    # model calls

    def _decode_forward(self, input_ids: torch.Tensor, positions: torch.Tensor, span: int) -> torch.Tensor:
        """One decode step attending over the first ``span`` positions (a Python int: each
        span is its own compiled graph)."""
        self.cache.positions = positions
        self.cache.span = span
        mask = (self._positions_all[None, :span] <= positions[:, None])[:, None, None, :]
        out = self.model(
            input_ids=input_ids,
            position_ids=positions[:, None],
            attention_mask=mask,
            cache=self.cache,
            use_cache=True,
        )
        return out.logits[:, -1, :]

    def _prefill(self, req: _Request, n: int) -> torch.Tensor:
        """The next ``n`` prompt tokens of ``req`` into its slot; returns the last one's logits."""
        start = req.prefilled
        ids = torch.tensor([req.prompt_ids[start : start + n]], dtype=torch.long, device=self.device)
        positions = self._positions_all[None, start : start + n]
        # the first chunk is plain causal attention; later ones also see the filled prefix
        mask = None if start == 0 else (self._positions_all[None, : start + n] <= positions[0, :, None])[None, None]
        self.cache.prefill_slot, self.cache.prefill_start = req.slot, start
        try:
            out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask, cache=self.cache,
                             use_cache=True, logits_to_keep=1)
        finally:
            self.cache.prefill_slot = None
        req.prefilled += n
        self.prefill_chunks += 1
        return out.logits[:, -1, :]

    def _warm_up_decode(self) -> None:
        t0 = time.perf_counter()
        for n in self._buckets:
            ids = torch.zeros((n, 1), dtype=torch.long, device=self.device)
            pos = torch.zeros((n,), dtype=torch.long, device=self.device)
            for span in self._spans:
                for _ in range(3):  # compile, then CUDA-graph warm-up and capture
                    self._decode(ids, pos, span)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        log(f"[llm] decode compiled for batch sizes {self._buckets} x spans {self._spans} "
            f"in {time.perf_counter() - t0:.1f}s")

    # ------------------------------------------------------------------------------------------
    # the engine thread

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                if self._warm_up:
                    self._warm_up_decode()
        except BaseException as exc:  # surfaced by __init__
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closing and not self._pending and not self._active:
                        self._cond.wait()
                    if self._closing:
                        break
                    dropped = [r for r in self._pending if r.cancelled]  # gone before they got a slot
                    for req in dropped:
                        self._pending.remove(req)
                    admitted: list[_Request] = []
                    while self._pending and len(self._active) + len(admitted) < self.slots:
                        admitted.append(self._pending.popleft())
                try:
                    for req in dropped + admitted:
                        self._admit(req)
                    for req in [r for r in self._active.values() if r.cancelled]:
                        self._finish(req, "canceled")
                    self._prefill_some()
                    if any(r.first_token_at for r in self._active.values()):
                        self._step()
                except Exception as exc:  # a bug outside the model calls: fail what runs, keep serving
                    log(f"[llm] engine error: {type(exc).__name__}: {exc}")
                    for req in [*admitted, *self._active.values()]:
                        if req.stats.finish_reason == "":
                            self._fail(req, GenerationError(f"engine error: {type(exc).__name__}: {exc}"))
        for req in [*self._active.values(), *self._pending]:
            self._fail(req, GenerationError("the engine shut down"))

    def _admit(self, req: _Request) -> None:
        """Give ``req`` a slot and its sampler state; its prompt is prefilled by _prefill_some."""
        if req.cancelled:
            req.stats.finish_reason = "canceled"
            req.stream._push(_END)
            return
        req.slot = min(set(range(self.slots)) - set(self._active))
        self._active[req.slot] = req
        try:
            self.sampler.assign(req.slot, req.params, req.prompt_ids, self.eos_ids)
        except Exception as exc:
            self._fail(req, GenerationError(f"prefill failed: {type(exc).__name__}: {exc}"))

    def _reuse_prefix(self, req: _Request) -> None:
        """Copy the longest cached prefix of the prompt into the slot; prefill starts after it."""
        n, entry = self.prefixes.lookup(req.prompt_ids)
        if entry is None:
            return
        for layer, (k, v) in enumerate(zip(entry.keys, entry.values)):
            self.cache.keys[layer][req.slot, :, :n].copy_(k[:, :n])
            self.cache.values[layer][req.slot, :, :n].copy_(v[:, :n])
        req.prefilled = req.stats.cached_input_token_count = n

    def _prefill_some(self) -> None:
        """Prefill waiting prompts, in admission order: one chunk's worth of tokens while
        others decode (then their next step runs), everything when nobody is decoding."""
        budget = self.prefill_chunk
        for req in [r for r in self._active.values() if r.prefilled < len(r.prompt_ids)]:
            if not req.prefix_checked:
                req.prefix_checked = True
                self._reuse_prefix(req)
            while req.prefilled < len(req.prompt_ids):
                if budget <= 0 and any(r.first_token_at for r in self._active.values()):
                    return
                n = min(len(req.prompt_ids) - req.prefilled, self.prefill_chunk)
                try:
                    logits = self._prefill(req, n)
                    if req.prefilled < len(req.prompt_ids):
                        budget -= n
                        continue
                    token = self.sampler.sample(logits, [req.slot], [0])
                    self.prefixes.store(req.prompt_ids, [k[req.slot] for k in self.cache.keys],
                                        [v[req.slot] for v in self.cache.values])
                except Exception as exc:  # this request only: the others' caches are untouched
                    self._fail(req, GenerationError(f"prefill failed: {type(exc).__name__}: {exc}"))
                    break
                budget -= n
                req.first_token_at = time.perf_counter()
                req.stats.time_to_first_token = req.first_token_at - req.submitted_at
                req.position = len(req.prompt_ids)
                self.sampler.observe([req.slot], token)
                self._accept(req, int(token.item()))

    def _step(self) -> None:
        decoding = {slot: req for slot, req in self._active.items() if req.first_token_at}
        n = next(b for b in self._buckets if b > max(decoding))
        ids = [0] * n
        pos = [0] * n  # free rows write a throwaway key at position 0 of their free slot
        for slot, req in self._active.items():
            if slot < n:  # a row still prefilling: the throwaway key goes where its next chunk will write
                ids[slot], pos[slot] = (req.last_token, req.position) if req.first_token_at else (0, req.prefilled)
        rows = sorted(decoding)
        longest = max(req.position for req in decoding.values()) + 1  # the new token's too
        span = next(s for s in self._spans if s >= longest)
        self.peak_batch = max(self.peak_batch, len(rows))
        self.decode_steps += 1
        try:
            logits = self._decode(
                torch.tensor(ids, dtype=torch.long, device=self.device)[:, None],
                torch.tensor(pos, dtype=torch.long, device=self.device),
                span,
            )
            live = logits[rows] if len(rows) < n else logits
            tokens = self.sampler.sample(live, rows, [self._active[s].stats.output_token_count for s in rows])
            self.sampler.observe(rows, tokens)
            picked = tokens.tolist()
        except Exception as exc:
            for slot in rows:
                self._fail(self._active[slot], GenerationError(f"decode step failed: {type(exc).__name__}: {exc}"))
            return
        for slot, token in zip(rows, picked):
            req = self._active[slot]
            req.stats.batch_size_max = max(req.stats.batch_size_max, len(rows))
            req.position += 1
            self._accept(req, token)

    def _accept(self, req: _Request, token: int) -> None:
        """Record one sampled token: emit its text, or end the request."""
        now = time.perf_counter()
        req.stats.output_token_count += 1
        req.stats.decode_seconds = now - req.first_token_at
        req.last_token = token
        req.stream.token_ids.append(token)
        if token in self.eos_ids:
            self._finish(req, "stop")
            return
        check = req.stats.output_token_count >= req.params.min_new_tokens
        text, stopped = req.matcher.feed(req.decoder.push(token), check=check)
        if text:
            req.stream._push(text)
        if stopped:
            self._finish(req, "stop", flush=False)
        elif req.stats.output_token_count >= req.max_new_tokens:
            self._finish(req, "length")

    def _finish(self, req: _Request, reason: str, *, flush: bool = True) -> None:
        if flush and reason != "canceled":
            text, stopped = req.matcher.feed(req.decoder.flush())
            text += "" if stopped else req.matcher.flush()
            if text:
                req.stream._push(text)
        req.stats.finish_reason = reason
        self._release(req)
        req.stream._push(_END)

    def _fail(self, req: _Request, exc: BaseException) -> None:
        req.stats.finish_reason = "error"
        self._release(req)
        req.stream._push(exc)

    def _release(self, req: _Request) -> None:
        if req.slot >= 0 and self._active.get(req.slot) is req:
            del self._active[req.slot]
            self.sampler.release(req.slot)
