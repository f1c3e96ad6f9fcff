"""models/llama in-process: every input, validation errors, metrics, and concurrent
async predictions batched together."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from cogkit import scope as scope_mod  # noqa: E402
from cogkit.input import MISSING  # noqa: E402
from cogkit.signature import inspect_predictor  # noqa: E402
from tests.tiny_models import tiny_llama_dir  # noqa: E402,F401

PREDICT_PY = Path(__file__).resolve().parents[3] / "models" / "llama" / "predict.py"


def load_predictor_class() -> type:
    spec = importlib.util.spec_from_file_location("cogkit_models_llama_predict", PREDICT_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Predictor


@pytest.fixture(scope="module")
def predictor(tiny_llama_dir):
    p = load_predictor_class()()
    p.setup(weights=str(tiny_llama_dir))
    yield p
    p.engine.close()


@pytest.fixture(scope="module")
def tok(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def reference(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


def defaults() -> dict[str, Any]:
    info = inspect_predictor(load_predictor_class())
    return {f.name: (None if f.default is MISSING else f.default) for f in info.inputs}


async def collect(predictor, metrics: dict | None = None, **inputs: Any) -> list[str]:
    args = {**defaults(), **inputs}
    with scope_mod.scope() as sc:
        parts = [p async for p in predictor.predict(**args)]
        if metrics is not None:
            metrics.update(sc.metrics.snapshot())
    return parts


def predict(predictor, metrics: dict | None = None, **inputs: Any) -> str:
    return "".join(asyncio.run(collect(predictor, metrics, **inputs)))


def greedy_reference(reference, tok, prompt: str, system: str = "You are a helpful assistant.", n: int = 128, **kw) -> str:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": prompt})
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        out = reference.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=n, do_sample=False, **kw,
        )
    return tok.decode(out[0, len(ids):], skip_special_tokens=True)


# ------------------------------------------------------------------------------- schema


def test_schema_inputs_and_streaming_output() -> None:
    info = inspect_predictor(load_predictor_class())
    names = [f.name for f in info.inputs]
    assert names == [
        "prompt", "system_prompt", "prompt_template", "max_new_tokens", "max_tokens", "min_new_tokens",
        "temperature", "top_p", "top_k", "repetition_penalty", "presence_penalty", "frequency_penalty",
        "stop_sequences", "seed", "log_performance_metrics",
    ]
    assert info.is_async and info.is_generator and info.streaming
    assert info.output.iterator and info.output.concatenate
    d = defaults()
    assert (d["temperature"], d["top_p"], d["top_k"], d["max_new_tokens"], d["min_new_tokens"]) == (0.7, 0.95, -1, 128, -1)


# ---------------------------------------------------------------------------- each input


def test_greedy_prediction_equals_transformers(predictor, reference, tok) -> None:
    out = predict(predictor, prompt="tell me a story", temperature=0.0, max_new_tokens=40)
    assert out == greedy_reference(reference, tok, "tell me a story", n=40)


def test_system_prompt_and_prompt_template(predictor, reference, tok, capfd) -> None:
    out = predict(predictor, prompt="hello", system_prompt="be brief", temperature=0.0, max_new_tokens=20)
    assert out == greedy_reference(reference, tok, "hello", "be brief", n=20)
    assert "<|system|>\\nbe brief<|end|>" in capfd.readouterr().err  # the formatted prompt is logged
    out = predict(predictor, prompt="hello", system_prompt="", temperature=0.0, max_new_tokens=20)
    assert out == greedy_reference(reference, tok, "hello", "", n=20)
    predict(predictor, prompt="hello", system_prompt="sys", prompt_template="[{system_prompt}] Q: {prompt} A:",
            temperature=0.0, max_new_tokens=4)
    assert "Formatted prompt: '[sys] Q: hello A:'" in capfd.readouterr().err


def test_max_new_tokens_and_its_alias(predictor) -> None:
    m: dict = {}
    predict(predictor, m, prompt="hello", temperature=0.0, max_new_tokens=7)
    assert m["output_token_count"] == 7
    predict(predictor, m, prompt="hello", temperature=0.0, max_tokens=5)
    assert m["output_token_count"] == 5
    predict(predictor, m, prompt="hello", temperature=0.0, max_tokens=9, max_new_tokens=9)
    assert m["output_token_count"] == 9
    with pytest.raises(ValueError, match=r"max_tokens \(5\) and max_new_tokens \(9\) disagree"):
        predict(predictor, prompt="hello", max_tokens=5, max_new_tokens=9)


def test_min_new_tokens_validation(predictor) -> None:
    with pytest.raises(ValueError, match=r"min_new_tokens \(10\) must not be greater than max_new_tokens \(4\)"):
        predict(predictor, prompt="hello", min_new_tokens=10, max_new_tokens=4)
    m: dict = {}
    predict(predictor, m, prompt="hello", temperature=0.0, min_new_tokens=6, max_new_tokens=6)
    assert m["output_token_count"] == 6


def test_sampling_inputs_change_the_output(predictor) -> None:
    base = dict(prompt="tell me a story about a dragon", max_new_tokens=30, seed=3)
    greedy = predict(predictor, **{**base, "temperature": 0.0})
    sampled = predict(predictor, **{**base, "temperature": 1.0, "top_p": 1.0})
    assert sampled != greedy
    assert predict(predictor, **{**base, "temperature": 1.0, "top_k": 1}) == greedy
    assert predict(predictor, **{**base, "temperature": 1.0, "top_p": 0.0}) == greedy
    assert predict(predictor, **{**base, "temperature": 5.0, "top_p": 1.0}) != sampled
    assert predict(predictor, **{**base, "temperature": 0.0, "top_k": 0}) == greedy  # 0 means off, like -1


def test_penalties(predictor, reference, tok) -> None:
    base = dict(prompt="tell me a story about a dragon", max_new_tokens=40, temperature=0.0)
    plain = predict(predictor, **base)
    rep = predict(predictor, **base, repetition_penalty=1.5)
    assert rep == greedy_reference(reference, tok, base["prompt"], n=40, repetition_penalty=1.5)
    assert rep != plain
    freq = predict(predictor, **base, frequency_penalty=2.0)
    pres = predict(predictor, **base, presence_penalty=2.0)
    assert freq != plain and pres != plain

    def repeats(text: str) -> int:
        words = text.split()
        return len(words) - len(set(words))

    assert repeats(freq) < repeats(plain) and repeats(pres) < repeats(plain)


def test_stop_sequences(predictor) -> None:
    base = dict(prompt="tell me a story about a dragon", max_new_tokens=40, temperature=0.0)
    full = predict(predictor, **base)
    words = full.split()
    stop = words[3][-2:] + " " + words[4][:2]  # spans at least two tokens
    m: dict = {}
    out = predict(predictor, m, **base, stop_sequences=f"nothing-like-this, {stop}")
    assert out == full[: full.index(stop)] and stop not in out
    assert m["output_token_count"] < 40


def test_seed(predictor, capfd) -> None:
    base = dict(prompt="once upon a time", max_new_tokens=30, temperature=1.0, top_p=1.0)
    a = predict(predictor, **base, seed=1234)
    assert predict(predictor, **base, seed=1234) == a
    assert predict(predictor, **base, seed=4321) != a
    capfd.readouterr()
    predict(predictor, **base)
    assert "Using seed:" in capfd.readouterr().err  # a random seed is logged so the run can be repeated


def test_metrics_and_log_performance_metrics(predictor, capfd) -> None:
    m: dict = {}
    predict(predictor, m, prompt="hello", temperature=0.0, max_new_tokens=12)
    assert m["output_token_count"] == 12 and m["input_token_count"] > 5
    assert 0 < m["time_to_first_token"] < 10 and m["tokens_per_second"] > 0
    assert "tokens per second" not in capfd.readouterr().err
    predict(predictor, prompt="hello", temperature=0.0, max_new_tokens=12, log_performance_metrics=True)
    err = capfd.readouterr().err
    assert "output tokens: 12" in err and "time to first token:" in err and "tokens per second:" in err


def test_prompt_longer_than_the_context_window(predictor) -> None:
    with pytest.raises(ValueError, match=r"prompt: is \d+ tokens after formatting, but the context window is 512 tokens"):
        predict(predictor, prompt="dragon " * 600)


def test_max_new_tokens_is_capped_to_the_context_window(predictor, capfd) -> None:
    m: dict = {}
    predict(predictor, m, prompt="dragon " * 450, temperature=0.0, max_new_tokens=100)
    assert "capped to" in capfd.readouterr().err
    assert m["input_token_count"] + m["output_token_count"] <= 512
    with pytest.raises(ValueError, match=r"min_new_tokens \(100\) \+ the prompt .* exceed the context window"):
        predict(predictor, prompt="dragon " * 450, min_new_tokens=100, max_new_tokens=100)


def test_bad_prompt_template(predictor) -> None:
    with pytest.raises(ValueError, match=r"prompt_template: unknown placeholder\(s\) \{question\}"):
        predict(predictor, prompt="x", prompt_template="{question}")


def test_streaming_yields_many_deltas(predictor) -> None:
    parts = asyncio.run(collect(predictor, prompt="tell me a story", temperature=0.0, max_new_tokens=30))
    assert len(parts) > 10 and all(isinstance(p, str) for p in parts)


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_predictions_are_batched_and_match_solo_runs(predictor) -> None:
    requests = [
        dict(prompt="tell me a story about a dragon", temperature=0.0, max_new_tokens=25),
        dict(prompt="hello, how are you?", temperature=0.0, repetition_penalty=1.4, max_new_tokens=18),
        dict(prompt="what is your name", temperature=0.9, top_k=30, seed=8, max_new_tokens=30),
        dict(prompt="once upon a time", temperature=0.0, stop_sequences="king", max_new_tokens=20),
    ]
    solo = [predict(predictor, **r) for r in requests]

    async def together() -> list[str]:
        results = await asyncio.gather(*(collect(predictor, **r) for r in requests))
        return ["".join(parts) for parts in results]

    predictor.engine.peak_batch = 0
    assert asyncio.run(together()) == solo
    assert predictor.engine.peak_batch == 4


def test_cancelled_prediction_frees_its_slot(predictor) -> None:
    async def cancel_midway() -> None:
        args = {**defaults(), "prompt": "tell me a story", "temperature": 0.0, "max_new_tokens": 400}
        gen = predictor.predict(**args)
        await gen.__anext__()
        await gen.aclose()  # what the worker does when a prediction is canceled

    asyncio.run(cancel_midway())
    deadline = time.monotonic() + 5
    while predictor.engine._active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not predictor.engine._active


def test_setup_reads_cog_weights(tiny_llama_dir, monkeypatch) -> None:
    monkeypatch.setenv("COG_WEIGHTS", str(tiny_llama_dir))
    monkeypatch.setenv("COG_MAX_CONCURRENCY", "2")
    p = load_predictor_class()()
    p.setup()
    try:
        assert p.engine.slots == 2
        assert predict(p, prompt="hello", temperature=0.0, max_new_tokens=3)
    finally:
        p.engine.close()


def test_no_weights_means_the_default_which_offline_fails_at_once(monkeypatch) -> None:
    from cogkit.ml.weights import WeightsError

    monkeypatch.delenv("COG_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = load_predictor_class()()
    with pytest.raises(WeightsError, match="Hugging Face repo 'meta-llama/Llama-3.1-8B-Instruct' is not in the "
                                           "local cache and HF_HUB_OFFLINE=1 forbids downloading it"):
        p.setup()  # before any device or model work
    assert not hasattr(p, "engine")


def test_setup_with_a_bad_weights_folder_fails_clearly(tmp_path) -> None:
    p = load_predictor_class()()
    with pytest.raises(Exception, match="not a transformers causal-LM folder .*missing config.json"):
        p.setup(weights=str(tmp_path))
