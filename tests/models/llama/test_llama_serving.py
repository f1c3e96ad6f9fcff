"""models/llama end to end: ``cogkit predict`` and ``python -m cogkit.server`` (JSON,
SSE, concurrent requests batched by the async predictor, cancel, errors), on the
tiny random Llama given as COG_WEIGHTS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tests.fixtures.server.harness import ServerProcess, copy_fixture  # noqa: E402
from tests.tiny_models import tiny_llama_dir  # noqa: E402,F401

pytestmark = pytest.mark.slow

LLAMA = Path(__file__).resolve().parents[3] / "models" / "llama"
PROMPT = "tell me a story about a dragon"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_fixture(LLAMA, tmp_path_factory.mktemp("llama-project"), "llama")


@pytest.fixture(scope="module")
def reference_text(tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()

    def greedy(prompt: str, n: int) -> str:
        msgs = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": prompt}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=n, do_sample=False)
        return tok.decode(out[0, len(ids):], skip_special_tokens=True)

    return greedy


@pytest.fixture(scope="module")
def server(project, tiny_llama_dir):
    srv = ServerProcess(project, env={"COG_WEIGHTS": str(tiny_llama_dir), "HF_HUB_OFFLINE": "1"}, ready_timeout=120)
    yield srv
    srv.stop()


# --------------------------------------------------------------------------- cogkit predict


def cogkit_predict(project: Path, weights: Path, *inputs: str) -> subprocess.CompletedProcess:
    args: list[str] = []
    for item in inputs:
        args += ["-i", item]
    env = {**os.environ, "COG_WEIGHTS": str(weights), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cogkit", "predict", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=180,
    )


def test_cogkit_predict_streams_the_greedy_text(project, tiny_llama_dir, reference_text) -> None:
    done = cogkit_predict(project, tiny_llama_dir, f"prompt={PROMPT}", "temperature=0", "max_new_tokens=24",
                          "log_performance_metrics=true")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == reference_text(PROMPT, 24)
    assert "output tokens: 24" in done.stderr


# ----------------------------------------------------------------------------------- server


def test_json_prediction_output_and_metrics(server, reference_text) -> None:
    body = server.predict({"prompt": PROMPT, "temperature": 0, "max_new_tokens": 24}).json()
    assert body["status"] == "succeeded", body
    assert isinstance(body["output"], list) and len(body["output"]) > 1
    assert "".join(body["output"]) == reference_text(PROMPT, 24)
    metrics = body["metrics"]
    assert metrics["output_token_count"] == 24 and metrics["input_token_count"] > 10
    assert metrics["time_to_first_token"] > 0 and metrics["tokens_per_second"] > 0


def sse_events(response: httpx.Response) -> list[tuple[str, Any]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: ") and name:
            events.append((name, json.loads(line[len("data: "):])))
    return events


def test_sse_streams_token_by_token(server, reference_text) -> None:
    payload = {"input": {"prompt": PROMPT, "temperature": 0, "max_new_tokens": 30}}
    with server.client.stream("POST", "/predictions", json=payload, headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    chunks = [data["chunk"] for name, data in events if name == "output"]
    assert len(chunks) > 10  # one event per token (or per completed character)
    assert "".join(chunks) == reference_text(PROMPT, 30)
    assert events[-1][0] == "completed" and events[-1][1]["status"] == "succeeded"
    metric_names = {data["name"] for name, data in events if name == "metric"}
    assert {"input_token_count", "output_token_count", "time_to_first_token"} <= metric_names


def test_four_concurrent_requests_with_different_settings_are_batched(server) -> None:
    requests = [
        {"prompt": PROMPT, "temperature": 0, "min_new_tokens": 400, "max_new_tokens": 400},
        {"prompt": "hello, how are you?", "temperature": 0, "repetition_penalty": 1.3, "min_new_tokens": 380, "max_new_tokens": 380},
        {"prompt": "what is your name", "temperature": 0.9, "top_k": 30, "seed": 8, "min_new_tokens": 400, "max_new_tokens": 400},
        {"prompt": "once upon a time", "temperature": 1.2, "top_p": 0.8, "seed": 2, "frequency_penalty": 0.5, "min_new_tokens": 390, "max_new_tokens": 390},
    ]
    requests = [{**r, "log_performance_metrics": True} for r in requests]
    solo = [server.predict(r).json() for r in requests]
    assert all(b["status"] == "succeeded" for b in solo), solo
    results: list[Any] = [None] * 4
    barrier = threading.Barrier(4)

    def call(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            barrier.wait()
            results[i] = c.post("/predictions", json={"input": requests[i]}).json()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert all(r is not None and r["status"] == "succeeded" for r in results), results
    assert ["".join(r["output"]) for r in results] == ["".join(b["output"]) for b in solo]
    batch_sizes = [int(re.search(r"batched with up to (\d+)", r["logs"]).group(1)) for r in results]
    assert max(batch_sizes) == 4, batch_sizes


def test_cancel_a_running_prediction(server) -> None:
    r = server.client.post(
        "/predictions",
        json={"input": {"prompt": PROMPT, "temperature": 0, "min_new_tokens": 460, "max_new_tokens": 460}},
        headers={"Prefer": "respond-async"},
    )
    pid = r.json()["id"]
    assert server.client.post(f"/predictions/{pid}/cancel").status_code == 200
    server.wait_not_busy(timeout=30)
    body = server.predict({"prompt": "hello", "temperature": 0, "max_new_tokens": 5}).json()
    assert body["status"] == "succeeded" and body["metrics"]["output_token_count"] == 5


def test_errors_are_reported_per_prediction(server) -> None:
    r = server.predict({"prompt": "hi", "temperature": 6})
    assert r.status_code == 422 and "temperature" in r.text
    body = server.predict({"prompt": "hi", "min_new_tokens": 10, "max_new_tokens": 4}).json()
    assert body["status"] == "failed"
    assert "min_new_tokens (10) must not be greater than max_new_tokens (4)" in body["error"]
    body = server.predict({"prompt": "dragon " * 600}).json()
    assert body["status"] == "failed" and "context window is 512 tokens" in body["error"]
    assert server.predict({"prompt": "hi", "temperature": 0, "max_new_tokens": 3}).json()["status"] == "succeeded"
