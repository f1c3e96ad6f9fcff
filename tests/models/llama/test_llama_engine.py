"""cogkit.ml.llm_engine on a tiny random Llama: fidelity with transformers' generate,
continuous batching, per-request settings and seeds, stop sequences, EOS/min tokens,
cancellation, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from cogkit.ml.llm_engine import GenerationError, LLMEngine  # noqa: E402
from cogkit.ml.llm_text import build_prompt  # noqa: E402
from cogkit.ml.sampling import SamplingParams  # noqa: E402
from tests.tiny_models import tiny_llama_dir  # noqa: E402,F401

GREEDY = SamplingParams(temperature=0.0)
PROMPTS = ["tell me a story about a dragon", "hello, how are you today?", "what is your name", "once upon a time"]


@pytest.fixture(scope="module")
def tok(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def reference(tiny_llama_dir):
    """Plain transformers model (default attention, DynamicCache) for generate()."""
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    eng = LLMEngine.from_pretrained(tiny_llama_dir, device="cpu", dtype=torch.float32, slots=4)
    yield eng
    eng.close()


def prompt_ids(tok, text: str, system: str = "You are a tiny robot.") -> list[int]:
    return build_prompt(tok, text, system)[0]


def hf_generate(model, ids: list[int], **kwargs) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), **kwargs
        )
    return out[0, len(ids):].tolist()


def run(engine, ids, params=GREEDY, **kwargs):
    stream = engine.submit(ids, params, **kwargs)
    text = stream.text()
    return text, stream.token_ids, stream.stats


# --------------------------------------------------------------------------------- fidelity


@pytest.mark.parametrize("text", PROMPTS)
def test_greedy_equals_transformers_generate(engine, reference, tok, text) -> None:
    ids = prompt_ids(tok, text)
    out, tokens, stats = run(engine, ids, max_new_tokens=32)
    expected = hf_generate(reference, ids, max_new_tokens=32, do_sample=False)
    assert tokens == expected
    assert out == tok.decode(expected, skip_special_tokens=True)
    assert stats.input_token_count == len(ids) and stats.output_token_count == len(expected)


def test_greedy_across_attention_spans_equals_transformers(engine, reference, tok) -> None:
    """A decode step attends over the filled prefix only (a span of 256, then 512 positions of
    the 512-position cache): a context growing past 256 tokens mid-answer gives the tokens
    transformers gives, alone and beside a short request in the same batch."""
    ids = prompt_ids(tok, " ".join(["the dragon flew over the quiet hills"] * 12))[:230]
    assert len(ids) == 230
    expected = hf_generate(reference, ids, max_new_tokens=60, do_sample=False)
    _, tokens, _ = run(engine, ids, max_new_tokens=60)
    assert tokens == expected and len(ids) + len(tokens) > 256 + 8  # it went on past the first span
    short = prompt_ids(tok, PROMPTS[0])
    with engine._cond:
        streams = [engine.submit(ids, GREEDY, max_new_tokens=60), engine.submit(short, GREEDY, max_new_tokens=20)]
    for s in streams:
        s.text()
    assert streams[0].token_ids == expected
    assert streams[1].token_ids == hf_generate(reference, short, max_new_tokens=20, do_sample=False)


@pytest.fixture(scope="module")
def chunky(tiny_llama_dir):
    """Prefill in chunks of 16 tokens (the default, 512, is longer than these prompts)."""
    eng = LLMEngine.from_pretrained(tiny_llama_dir, device="cpu", dtype=torch.float32, slots=4, prefill_chunk=16)
    yield eng
    eng.close()


def test_chunked_prefill_equals_transformers_and_runs_between_decode_steps(chunky, reference, tok) -> None:
    """A 230-token prompt prefilled 16 tokens at a time (each chunk attending over the filled
    prefix) gives transformers' tokens; submitted while another request decodes, its chunks
    alternate with that request's decode steps instead of holding it back for the whole prompt."""
    long_ids = prompt_ids(tok, " ".join(["the dragon flew over the quiet hills"] * 12))[:230]
    short = prompt_ids(tok, PROMPTS[1])
    expected_long = hf_generate(reference, long_ids, max_new_tokens=12, do_sample=False)
    expected_short = hf_generate(reference, short, max_new_tokens=40, do_sample=False)
    assert run(chunky, long_ids, max_new_tokens=12)[1] == expected_long  # alone: chunks back to back

    chunky.prefixes.clear()  # prefill the whole prompt again, not the prefix the first run cached
    seen: list[tuple[int, int]] = []  # (decode steps so far, chunk size) at each chunk of the long prompt
    prefill = chunky._prefill

    def spy(req, n):
        if len(req.prompt_ids) == len(long_ids):
            seen.append((chunky.decode_steps, n))
        return prefill(req, n)

    chunky._prefill = spy
    try:
        first = chunky.submit(short, GREEDY, max_new_tokens=40)
        while not first.token_ids:  # decoding before the long prompt arrives
            time.sleep(0.001)
        second = chunky.submit(long_ids, GREEDY, max_new_tokens=12)
        first.text(), second.text()
    finally:
        chunky._prefill = prefill
    assert first.token_ids == expected_short and second.token_ids == expected_long
    assert [n for _, n in seen] == [16] * 14 + [6]
    steps = [d for d, _ in seen]
    assert all(b > a for a, b in zip(steps, steps[1:])), f"chunks not interleaved with decode steps: {steps}"


def test_a_shared_system_prompt_is_prefilled_once(chunky, reference, tok) -> None:
    """Two requests with the same long system prompt: the second copies the cached prefix (cut
    at a 64-token block) into its slot and prefills only the rest, and still gives
    transformers' tokens; a prompt sharing nothing prefills from position 0."""
    system = "You are a tiny robot who answers in rhymes. " * 12
    first_ids, second_ids = prompt_ids(tok, PROMPTS[0], system), prompt_ids(tok, PROMPTS[3], system)
    shared = next(i for i, (a, b) in enumerate(zip(first_ids, second_ids)) if a != b)
    assert shared > 128
    starts: list[int] = []
    prefill = chunky._prefill

    def spy(req, n):
        starts.append(req.prefilled)
        return prefill(req, n)

    chunky._prefill = spy
    try:
        a = run(chunky, first_ids, max_new_tokens=10)
        starts_a, starts[:] = list(starts), []
        b = run(chunky, second_ids, max_new_tokens=10)
        starts_b, starts[:] = list(starts), []
        c = run(chunky, prompt_ids(tok, PROMPTS[2], "Be brief."), max_new_tokens=4)
    finally:
        chunky._prefill = prefill
    assert a[1] == hf_generate(reference, first_ids, max_new_tokens=10, do_sample=False)
    assert b[1] == hf_generate(reference, second_ids, max_new_tokens=10, do_sample=False)
    assert starts_a[0] == 0 and a[2].cached_input_token_count == 0
    cached = shared // 64 * 64
    assert starts_b[0] == cached == b[2].cached_input_token_count
    assert starts[0] == 0 and c[2].cached_input_token_count == 0


def test_greedy_with_repetition_penalty_equals_transformers(engine, reference, tok) -> None:
    ids = prompt_ids(tok, PROMPTS[0])
    _, tokens, _ = run(engine, ids, SamplingParams(temperature=0.0, repetition_penalty=1.5), max_new_tokens=32)
    assert tokens == hf_generate(reference, ids, max_new_tokens=32, do_sample=False, repetition_penalty=1.5)
    assert tokens != run(engine, ids, max_new_tokens=32)[1]


def test_temperature_zero_is_greedy_whatever_the_filters(engine, tok) -> None:
    ids = prompt_ids(tok, PROMPTS[1])
    greedy = run(engine, ids, max_new_tokens=16)[1]
    assert run(engine, ids, SamplingParams(temperature=0.0, top_k=5, top_p=0.5, seed=3), max_new_tokens=16)[1] == greedy
    # top_k=1 or top_p=0 leave only the most likely token, at any temperature
    assert run(engine, ids, SamplingParams(temperature=1.5, top_k=1, seed=7), max_new_tokens=16)[1] == greedy
    assert run(engine, ids, SamplingParams(temperature=1.5, top_p=0.0, seed=7), max_new_tokens=16)[1] == greedy


# ------------------------------------------------------------------------------ batching


def test_four_concurrent_requests_are_batched_and_match_solo_runs(engine, tok) -> None:
    settings = [
        (PROMPTS[0], GREEDY, 24),
        (PROMPTS[1], SamplingParams(temperature=0.0, repetition_penalty=1.3), 17),
        (PROMPTS[2], SamplingParams(temperature=0.9, top_p=0.9, top_k=20, seed=11), 30),
        (PROMPTS[3], SamplingParams(temperature=1.2, frequency_penalty=0.5, presence_penalty=0.3, seed=5), 9),
    ]
    solo = [run(engine, prompt_ids(tok, p), params, max_new_tokens=n)[:2] for p, params, n in settings]
    engine.peak_batch = 0
    with engine._cond:  # queue all four before the engine thread looks: they start together
        streams = [engine.submit(prompt_ids(tok, p), params, max_new_tokens=n) for p, params, n in settings]
    batched = [(s.text(), s.token_ids) for s in streams]
    assert engine.peak_batch == 4
    assert batched == solo
    assert [len(t) for _, t in batched] == [24, 17, 30, 9]


def test_a_new_request_joins_a_running_batch(engine, tok) -> None:
    long_ids, short_ids = prompt_ids(tok, PROMPTS[0]), prompt_ids(tok, PROMPTS[3])
    solo_long = run(engine, long_ids, max_new_tokens=120)[1]
    solo_short = run(engine, short_ids, SamplingParams(temperature=0.8, seed=1), max_new_tokens=10)[1]
    engine.peak_batch = 0
    first = engine.submit(long_ids, GREEDY, max_new_tokens=120)
    it = iter(first)
    next(it)  # the long request is decoding
    second = engine.submit(short_ids, SamplingParams(temperature=0.8, seed=1), max_new_tokens=10)
    second.text()
    assert len(first.token_ids) < 120  # the short one finished while the long one still ran
    list(it)
    assert engine.peak_batch == 2
    assert first.token_ids == solo_long and second.token_ids == solo_short


def test_more_requests_than_slots_queue_and_all_complete(engine, tok) -> None:
    ids = [prompt_ids(tok, PROMPTS[i % 4]) for i in range(7)]
    solo = [run(engine, x, max_new_tokens=8)[1] for x in ids]
    streams = [engine.submit(x, GREEDY, max_new_tokens=8) for x in ids]
    for s in streams:
        s.text()
    assert [s.token_ids for s in streams] == solo
    assert engine.peak_batch <= engine.slots


def test_async_iteration(engine, tok) -> None:
    ids = prompt_ids(tok, PROMPTS[2])
    expected = run(engine, ids, max_new_tokens=12)[0]

    async def consume() -> list[str]:
        return [d async for d in engine.submit(ids, GREEDY, max_new_tokens=12)]

    parts = asyncio.run(consume())
    assert "".join(parts) == expected and len(parts) > 1


# ---------------------------------------------------------------------------------- seeds


def test_seeded_sampling_is_reproducible(engine, tok) -> None:
    ids = prompt_ids(tok, PROMPTS[0])
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=42)
    a, b = run(engine, ids, params, max_new_tokens=24), run(engine, ids, params, max_new_tokens=24)
    c = run(engine, ids, SamplingParams(temperature=1.0, top_p=0.95, seed=43), max_new_tokens=24)
    assert a[1] == b[1] and a[0] == b[0]
    assert a[1] != c[1]


# -------------------------------------------------------------------------- stops, EOS, limits


def test_stop_sequence_split_across_tokens_is_never_shown(engine, tok) -> None:
    ids = prompt_ids(tok, PROMPTS[0])
    full, tokens, _ = run(engine, ids, max_new_tokens=32)
    # a stop string made of the last two characters of one token and the first two of the next
    texts = [tok.decode(tokens[:i], skip_special_tokens=True) for i in range(len(tokens) + 1)]
    cut = next(
        i for i in range(6, len(tokens) - 1)
        if len(texts[i]) - len(texts[i - 1]) >= 2 and len(texts[i + 1]) - len(texts[i]) >= 2
    )
    stop = texts[cut + 1][len(texts[cut]) - 2 : len(texts[cut]) + 2]
    text, stop_tokens, stats = run(engine, ids, max_new_tokens=32, stop_sequences=["zzz", stop])
    assert text == full[: full.index(stop)]
    assert stop not in text
    assert stats.finish_reason == "stop" and len(stop_tokens) < 32


def test_length_finish_reason(engine, tok) -> None:
    _, tokens, stats = run(engine, prompt_ids(tok, PROMPTS[1]), max_new_tokens=5)
    assert len(tokens) == 5 and stats.finish_reason == "length"
    assert stats.time_to_first_token is not None and stats.time_to_first_token > 0
    assert stats.tokens_per_second is not None and stats.tokens_per_second > 0


@pytest.fixture(scope="module")
def eos_engine(tiny_llama_dir, tok):
    """The tiny model with its <|end|> row copied from a likely token's, so EOS comes early."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    ids = prompt_ids(tok, PROMPTS[0])
    likely = hf_generate(model, ids, max_new_tokens=3, do_sample=False)[2]
    end = tok.convert_tokens_to_ids("<|end|>")
    with torch.no_grad():
        model.lm_head.weight[end] = model.lm_head.weight[likely] * 1.05
    eng = LLMEngine(model, tok, slots=2)
    yield eng, model, ids, end
    eng.close()


def test_eos_ends_generation_and_min_new_tokens_masks_it(eos_engine, tok) -> None:
    eng, model, ids, end = eos_engine
    text, tokens, stats = run(eng, ids, max_new_tokens=32)
    expected = hf_generate(model, ids, max_new_tokens=32, do_sample=False)
    assert tokens == expected and tokens[-1] == end and len(tokens) <= 3
    assert stats.finish_reason == "stop" and text == tok.decode(tokens, skip_special_tokens=True)
    _, tokens, _ = run(eng, ids, SamplingParams(temperature=0.0, min_new_tokens=8), max_new_tokens=32)
    assert tokens == hf_generate(model, ids, max_new_tokens=32, min_new_tokens=8, do_sample=False)
    assert len(tokens) >= 8 and end not in tokens[:7]


def test_requests_that_cannot_fit_are_refused_with_the_rule(engine, tok) -> None:
    ids = prompt_ids(tok, PROMPTS[0])
    with pytest.raises(GenerationError, match="context window of 512 tokens"):
        engine.submit(ids, GREEDY, max_new_tokens=512)
    with pytest.raises(GenerationError, match=r"min_new_tokens \(9\) must not exceed max_new_tokens \(8\)"):
        engine.submit(ids, SamplingParams(min_new_tokens=9), max_new_tokens=8)
    with pytest.raises(ValueError, match="temperature"):
        engine.submit(ids, SamplingParams(temperature=-1), max_new_tokens=8)
    with pytest.raises(GenerationError, match="empty"):
        engine.submit([], GREEDY)


# ------------------------------------------------------------------------ cancel and failures


def test_a_finished_stream_read_again_ends_at_once() -> None:
    """Reading a stream a second time gives nothing (or its error again); it must not
    wait forever for items that never come."""
    from cogkit.ml.llm_engine import _END, GenerationStream

    def read_twice(stream: GenerationStream) -> list[object]:
        out: list[object] = []

        def read() -> None:
            for _ in range(2):
                try:
                    out.append(stream.text())
                except GenerationError as exc:
                    out.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout=5)
        return out

    done = GenerationStream()
    for item in ("a", "b", _END):
        done._push(item)
    assert read_twice(done) == ["ab", ""]
    failed = GenerationStream()
    error = GenerationError("decode step failed")
    for item in ("a", error):
        failed._push(item)
    assert read_twice(failed) == [error, error]


def test_cancel_frees_the_slot(engine, tok) -> None:
    ids = prompt_ids(tok, PROMPTS[0])
    stream = engine.submit(ids, GREEDY, max_new_tokens=400)
    it = iter(stream)
    next(it)
    stream.cancel()
    rest = list(it)
    assert stream.stats.finish_reason == "canceled" and len(stream.token_ids) < 400 and len(rest) < 400
    deadline = time.monotonic() + 5
    while engine._active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine._active
    assert run(engine, ids, max_new_tokens=4)[2].finish_reason == "length"


def test_a_queued_request_can_be_cancelled_before_it_gets_a_slot(engine, tok) -> None:
    ids = prompt_ids(tok, PROMPTS[0])
    busy = [engine.submit(ids, GREEDY, max_new_tokens=150) for _ in range(engine.slots)]
    queued = engine.submit(ids, GREEDY, max_new_tokens=150)
    queued.cancel()
    assert queued.text() == "" and queued.stats.finish_reason == "canceled" and queued.token_ids == []
    assert any(s.stats.finish_reason == "" for s in busy)  # it did not wait for a free slot
    for s in busy:
        s.text()


def test_a_failing_request_does_not_stop_the_engine(engine, tok) -> None:
    bad = engine.submit([1, 10**6], GREEDY, max_new_tokens=4)  # id out of the vocabulary
    with pytest.raises(GenerationError, match="prefill failed"):
        bad.text()
    assert bad.stats.finish_reason == "error"
    _, tokens, stats = run(engine, prompt_ids(tok, PROMPTS[2]), max_new_tokens=6)
    assert len(tokens) == 6 and stats.finish_reason == "length"


def test_an_engine_bug_fails_the_running_requests_and_serving_goes_on(engine, tok) -> None:
    ids = prompt_ids(tok, PROMPTS[2])
    broken = engine.submit(ids, GREEDY, max_new_tokens=6, stop_sequences=[5])  # type: ignore[list-item]
    with pytest.raises(GenerationError, match="engine error: TypeError"):
        broken.text()
    assert not engine._active
    assert run(engine, ids, max_new_tokens=6)[2].finish_reason == "length"


def test_submit_from_many_threads(engine, tok) -> None:
    ids = prompt_ids(tok, PROMPTS[1])
    expected = run(engine, ids, max_new_tokens=10)[1]
    results: list[list[int]] = []

    def client() -> None:
        s = engine.submit(ids, GREEDY, max_new_tokens=10)
        s.text()
        results.append(s.token_ids)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [expected] * 6


# ------------------------------------------------------------------------------ compiled decode


def test_compiled_decode_traces_whole_and_matches_eager(tiny_llama_dir, engine, tok) -> None:
    """The GPU path (torch.compile of the decode step, fullgraph, one graph per batch size)
    traced on the CPU, its graphs run as traced: no graph breaks, no recompiles after the
    warm-up, and the same tokens as the eager engine, alone and batched."""
    import torch._dynamo

    graphs: list[object] = []

    def traced_graph_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = LLMEngine.from_pretrained(
        tiny_llama_dir, device="cpu", dtype=torch.float32, slots=3, compile_decode=True,
        compile_backend=traced_graph_backend,
    )
    try:
        # warm-up traced each (batch size, attention span) once
        assert compiled._buckets == [1, 2, 3] and compiled._spans == [256, 512] and len(graphs) == 6
        requests = [
            (prompt_ids(tok, PROMPTS[0]), GREEDY, 20),
            (prompt_ids(tok, PROMPTS[1]), SamplingParams(temperature=0.9, top_p=0.9, seed=4), 12),
            (prompt_ids(tok, PROMPTS[2]), SamplingParams(temperature=0.0, repetition_penalty=1.2), 16),
        ]
        expected = [run(engine, ids, p, max_new_tokens=n)[1] for ids, p, n in requests]
        alone = [run(compiled, ids, p, max_new_tokens=n)[1] for ids, p, n in requests]
        with compiled._cond:
            streams = [compiled.submit(ids, p, max_new_tokens=n) for ids, p, n in requests]
        for s in streams:
            s.text()
        assert alone == expected
        assert [s.token_ids for s in streams] == expected and compiled.peak_batch == 3
        assert len(graphs) == 6  # nothing was traced again
    finally:
        compiled.close()
        torch._dynamo.reset()
