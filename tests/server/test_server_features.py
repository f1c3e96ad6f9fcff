"""Server features beyond the conformance goldens: SSE, webhook delivery rules, uploads,
user healthchecks, metrics, train mode, the discovery document and the CLI entry."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cogkit.server.prediction import Prediction
from cogkit.server.sse import SUBSCRIBER_BUFFER, EventStream
from tests.fixtures.server.harness import Receiver, free_port
from tests.fixtures.server.robust_fixtures import project, receiver, start  # noqa: F401

ASYNC = {"Prefer": "respond-async"}


def _sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if name:
            events.append((name, data))
    return events


# ----------------------------------------------------------------------------- SSE


def test_sse_streams_start_output_log_metric_completed(start) -> None:
    srv = start("streamer.py:Predictor")
    r = srv.client.post(
        "/predictions", json={"input": {"count": 3}}, headers={"Accept": "text/event-stream"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(r.text)
    names = [n for n, _ in events]
    assert names[0] == "start" and names[-1] == "completed"
    assert [d for n, d in events if n == "output"] == [
        {"chunk": "t0 ", "index": 0},
        {"chunk": "t1 ", "index": 1},
        {"chunk": "t2 ", "index": 2},
    ]
    assert {"source": "stdout", "data": "streaming starts\n"} in [d for n, d in events if n == "log"]
    assert [d["value"] for n, d in events if n == "metric" and d["name"] == "timing.tokens"] == [1, 1, 1]
    final = events[-1][1]
    assert final["status"] == "succeeded"
    assert final["output"] == ["t0 ", "t1 ", "t2 "]
    assert final["metrics"]["timing"] == {"tokens": 3}
    assert final["metrics"]["note"] == "finished"


def test_sse_reattach_with_put_replays_the_stream(start) -> None:
    srv = start("streamer.py:Predictor")
    r = srv.client.put("/predictions/s1", json={"input": {"count": 4, "sleep": 0.2}}, headers=ASYNC)
    assert r.status_code == 202
    time.sleep(0.5)
    r = srv.client.put(
        "/predictions/s1", json={"input": {"count": 4, "sleep": 0.2}}, headers={"Accept": "text/event-stream"}
    )
    events = _sse_events(r.text)
    assert [d["chunk"] for n, d in events if n == "output"] == ["t0 ", "t1 ", "t2 ", "t3 "]
    assert events[0][0] == "start" and events[-1][0] == "completed"


def test_sse_replay_of_a_history_larger_than_the_subscriber_buffer_is_complete() -> None:
    stream = EventStream(history=SUBSCRIBER_BUFFER + 500)
    for i in range(SUBSCRIBER_BUFFER + 100):
        stream.publish("output", {"chunk": i, "index": i})
    stream.publish("completed", {"status": "succeeded"})
    sub = stream.subscribe(replay=True)
    frames = []
    while (frame := sub.queue.get_nowait()) is not None:
        frames.append(frame)
    assert len(frames) == SUBSCRIBER_BUFFER + 101
    assert frames[-1].startswith(b"event: completed")


def test_sse_lagging_subscriber_gets_an_error_counting_what_it_missed() -> None:
    stream = EventStream(history=0)
    sub = stream.subscribe(replay=False)
    for i in range(SUBSCRIBER_BUFFER + 1):
        stream.publish("output", {"chunk": i, "index": i})
    frames = []
    while (frame := sub.queue.get_nowait()) is not None:
        frames.append(frame)
    assert sub not in stream.subscribers
    error = json.loads(frames[-1].split(b"data: ", 1)[1])
    assert error["error"] == "SSE stream lagged; events were dropped"
    assert len(frames) - 1 + error["skipped"] == SUBSCRIBER_BUFFER + 1  # delivered + skipped = published


def test_sse_refused_without_streaming_and_on_trainings(start) -> None:
    srv = start("sleeper.py:Predictor")
    r = srv.client.post("/predictions", json={"input": {}}, headers={"Accept": "text/event-stream"})
    assert r.status_code == 406
    assert "@cog.streaming" in r.json()["error"]
    r = srv.client.post("/trainings", json={"input": {}}, headers={"Accept": "text/event-stream"})
    assert r.status_code == 406
    assert r.json() == {"error": "Training endpoints do not support streaming responses."}


# ----------------------------------------------------------------------------- webhooks


def test_terminal_webhook_is_retried_and_carries_token_and_trace(start) -> None:
    recv = Receiver(fail_rate=0.6, seed=3)
    try:
        srv = start("sleeper.py:Predictor", env={"WEBHOOK_AUTH_TOKEN": "tok-123"})
        trace = {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=abc",
        }
        for i in range(5):
            r = srv.client.post(
                "/predictions",
                json={"input": {"text": f"w{i}"}, "webhook": recv.url(f"/webhook/w{i}"), "webhook_events_filter": ["completed"]},
                headers={**ASYNC, **trace},
            )
            assert r.status_code == 202
            srv.wait_not_busy()
        for i in range(5):
            recv.wait_terminal(f"w{i}", timeout=30)
            hooks = recv.hooks(f"w{i}")
            assert [h["body"]["status"] for h in hooks] == ["succeeded"]
            headers = hooks[0]["headers"]
            assert headers["authorization"] == "Bearer tok-123"
            assert headers["traceparent"] == trace["traceparent"]
            assert headers["tracestate"] == "vendor=abc"
        assert recv.refused > 0  # some first attempts were refused and retried
    finally:
        recv.close()


def test_a_bad_trace_header_does_not_stop_webhooks(start, receiver: Receiver) -> None:
    srv = start("sleeper.py:Predictor")
    r = srv.client.post(
        "/predictions",
        json={"input": {"text": "traced"}, "webhook": receiver.url("/webhook/tr")},
        headers={**ASYNC, "tracestate": b"v=\xe9", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    assert r.status_code == 202
    receiver.wait_terminal("tr", timeout=10)
    hooks = receiver.hooks("tr")
    assert hooks[0]["body"]["status"] == "processing"  # the start webhook went out too
    assert hooks[-1]["body"]["output"] == "traced"
    assert "tracestate" not in hooks[-1]["headers"]  # not valid trace context: dropped
    assert hooks[-1]["headers"]["traceparent"].startswith("00-0af7")


def test_logs_webhooks_are_throttled_but_none_lost(start, receiver: Receiver) -> None:
    srv = start("sleeper.py:Predictor", env={"COG_THROTTLE_RESPONSE_INTERVAL": "0.5"})
    srv.client.post(
        "/predictions",
        json={"input": {"seconds": 2}, "webhook": receiver.url("/webhook/t"), "webhook_events_filter": ["logs", "completed"]},
        headers=ASYNC,
    )
    bodies = receiver.wait_terminal("t", timeout=20)
    logs_events = bodies[:-1]
    # 20 log lines in 2 s, at most one webhook per 0.5 s (+1 trailing)
    assert 2 <= len(logs_events) <= 6, [b["logs"] for b in logs_events]
    assert bodies[-1]["logs"].count("tick") == 20
    # each webhook carries the logs so far, growing
    seen = [b["logs"] for b in logs_events]
    assert seen == sorted(seen, key=len)


def test_webhook_events_follow_the_filter_and_end_with_the_terminal(start, receiver: Receiver) -> None:
    srv = start("streamer.py:Predictor")
    srv.client.post(
        "/predictions",
        json={"input": {"count": 3}, "webhook": receiver.url("/webhook/all")},
        headers=ASYNC,
    )
    bodies = receiver.wait_terminal("all")
    assert bodies[-1]["status"] == "succeeded"
    assert all(b["status"] == "processing" for b in bodies[:-1])
    outputs = [b.get("output") for b in bodies[:-1] if b.get("output")]
    assert outputs[-1] == ["t0 ", "t1 ", "t2 "]
    assert bodies[-1]["metrics"]["timing"]["tokens"] == 3
    for key in ("input", "created_at", "started_at", "completed_at"):  # D4 envelope
        assert key in bodies[-1]


# ----------------------------------------------------------------------------- files


def test_iterator_files_are_uploaded_as_they_are_yielded(start, receiver: Receiver) -> None:
    srv = start("files_out.py:Predictor", "--upload-url", receiver.url("/upload/"))
    srv.client.post(
        "/predictions",
        json={"input": {"count": 3, "size": 8, "sleep": 0.3}, "webhook": receiver.url("/webhook/up"), "webhook_events_filter": ["output", "completed"]},
        headers=ASYNC,
    )
    bodies = receiver.wait_terminal("up", timeout=20)
    urls = [receiver.url(f"/uploaded/part_{i}.bin") for i in range(3)]
    assert bodies[-1]["output"] == urls
    assert [b["output"] for b in bodies[:-1]] == [urls[:1], urls[:2], urls[:3]]
    assert sorted(u["path"] for u in receiver.uploads) == [f"/upload/part_{i}.bin" for i in range(3)]
    assert receiver.uploaded["part_1.bin"] == b"B" * 8
    assert all(u["content_type"] == "application/octet-stream" for u in receiver.uploads)


def test_file_output_without_upload_url_is_a_data_url(start) -> None:
    srv = start("big_file.py:Predictor")
    out = srv.predict({"size": 300_000}).json()["output"]
    head, _, b64 = out.partition(",")
    assert head == "data:application/octet-stream;base64"
    assert base64.b64decode(b64) == b"\x01" * 300_000


def test_failed_upload_fails_the_prediction_with_a_clear_error(start, receiver: Receiver) -> None:
    port = free_port()  # nothing listens there
    srv = start("big_file.py:Predictor", "--upload-url", f"http://127.0.0.1:{port}/up/")
    body = srv.predict({"size": 10}).json()
    assert body["status"] == "failed"
    assert "failed to upload out.bin" in body["error"]


def test_file_inputs_by_data_url_and_http_url(start, project: Path) -> None:
    recv = Receiver(files={"in.txt": ("text/plain", b"hello file\n")})
    try:
        (project / "reader.py").write_text(
            "from cogkit import BasePredictor, Path\n"
            "class Predictor(BasePredictor):\n"
            "    def predict(self, f: Path) -> str:\n"
            "        return f.name.rsplit('.', 1)[-1] + ':' + open(f).read()\n"
        )
        srv = start("reader.py:Predictor")
        data = "data:text/plain;base64," + base64.b64encode(b"from data\n").decode()
        assert srv.predict({"f": data}).json()["output"] == "txt:from data\n"
        assert srv.predict({"f": recv.url("/files/in.txt")}).json()["output"] == "txt:hello file\n"
        body = srv.predict({"f": recv.url("/files/missing.txt")}).json()
        assert body["status"] == "failed"
        assert body["error"].startswith("Input validation error: 404 Client Error")
    finally:
        recv.close()


# ----------------------------------------------------------------------------- health, metrics, train


def test_user_healthcheck_makes_health_unhealthy(start, tmp_path: Path) -> None:
    flag = tmp_path / "health"
    flag.write_text("ok")
    srv = start("health.py:Predictor", env={"HEALTH_FILE": str(flag)})
    assert srv.health()["status"] == "READY"
    flag.write_text("false")
    h = srv.health()
    assert h["status"] == "UNHEALTHY"
    assert h["user_healthcheck_error"] == "Healthcheck failed: user-defined healthcheck returned False"
    flag.write_text("raise")
    assert srv.health()["user_healthcheck_error"] == "Healthcheck failed: database unreachable"
    assert srv.predict({}).json()["status"] == "succeeded"  # UNHEALTHY still serves
    flag.write_text("ok")
    assert srv.health()["status"] == "READY"


def test_metrics_are_merged_with_predict_time(start) -> None:
    srv = start("metrics_model.py:Predictor")
    body = srv.predict({"n": 3}).json()
    assert body["metrics"]["steps"] == 3
    assert body["metrics"]["timing"] == {"chunks": [3, 3, 3]}
    assert body["metrics"]["model"] == "tiny"
    assert isinstance(body["metrics"]["predict_time"], float)


def test_train_mode_serves_trainings(start) -> None:
    srv = start("trainer.py:train", "--x-mode", "train")
    index = srv.client.get("/").json()
    assert index["trainings_url"] == "/trainings"
    assert index["trainings_idempotent_url"] == "/trainings/{training_id}"
    assert index["cog_version"] == "0.23.1"
    assert srv.client.post("/trainings", json={"input": {"epochs": 2}}).json()["output"] == "trained 2 epochs"
    assert srv.client.post("/predictions", json={"input": {}}).json()["output"] == "trained 3 epochs"
    r = srv.client.put("/trainings/a", json={"id": "b", "input": {}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"] == "training ID must match the ID supplied in the URL"
    schema = srv.client.get("/openapi.json").json()
    assert "TrainingInput" in schema["components"]["schemas"]


def test_bad_envelope_fields_are_422_naming_the_field(start) -> None:
    srv = start("sleeper.py:Predictor")
    cases = [
        ({"input": {}, "webhook": "ftp://x"}, ["body", "webhook"]),
        ({"input": {}, "webhook": "http://[bad/hook"}, ["body", "webhook"]),
        ({"input": {}, "webhook": "http://x:99999/hook"}, ["body", "webhook"]),
        ({"input": {}, "webhook": "http://x/a\u0000b"}, ["body", "webhook"]),
        ({"input": {}, "webhook_events_filter": ["sometimes"]}, ["body", "webhook_events_filter"]),
        ({"input": {}, "id": 5}, ["body", "id"]),
        ({"input": {}, "context": {"a": 1}}, ["body", "context"]),
        ([1, 2], ["body"]),
    ]
    for body, loc in cases:
        r = srv.client.post("/predictions", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"] == loc


def test_cogkit_serve_cli_runs_the_same_server(project: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cogkit", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if c.get("/health-check").json()["status"] == "READY":
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            # cog.yaml's predictor (sleeper.py) is served
            assert c.post("/predictions", json={"input": {"text": "cli"}}).json()["output"] == "cli"
            assert c.post("/shutdown").status_code == 200
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sha_of_uploaded_png_matches(start, receiver: Receiver) -> None:
    srv = start("files_out.py:Predictor", "--upload-url", receiver.url("/upload"))
    out = srv.predict({"count": 1, "size": 1000}).json()["output"]
    assert out == [receiver.url("/uploaded/part_0.bin")]
    assert hashlib.sha256(receiver.uploaded["part_0.bin"]).hexdigest() == receiver.uploads[0]["sha256"]
    assert receiver.uploads[0]["size"] == 1000


def test_unreadable_yielded_file_fails_and_stops_the_prediction(start, project: Path) -> None:
    (project / "ghost.py").write_text(
        "import time\n"
        "from typing import Iterator\n"
        "from cogkit import BasePredictor, Path\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self, ghost: bool = True) -> Iterator[Path]:\n"
        "        if ghost:\n"
        "            yield Path('/nonexistent/ghost.bin')\n"
        "            time.sleep(30)\n"
        "        yield Path(__file__)\n"
    )
    srv = start("ghost.py:Predictor")
    body = srv.predict({"ghost": True}).json()
    assert body["status"] == "failed"
    assert body["error"].startswith("FileNotFoundError") and "ghost.bin" in body["error"]
    # the predictor was stopped with it: the next prediction gets the worker at once
    again = srv.predict({"ghost": False}).json()
    assert again["status"] == "succeeded", again


def test_failed_upload_of_a_yielded_file_fails_and_stops_the_prediction(start) -> None:
    port = free_port()  # nothing listens there
    srv = start("files_out.py:Predictor", "--upload-url", f"http://127.0.0.1:{port}/up/")
    body = srv.predict({"count": 50, "size": 8, "sleep": 0.2}).json()
    assert body["status"] == "failed"
    assert "failed to upload part_0.bin" in body["error"]
    srv.wait_status(("READY",), timeout=10)  # the worker was told to stop; its slot is free
    assert srv.predict({"count": 0}).json()["status"] == "succeeded"


def test_a_prediction_that_fails_before_it_started_is_terminal() -> None:
    pred = Prediction("early", {})
    pred.finish("failed", error="could not start")
    assert pred.status == "failed" and pred.terminal and pred.done.is_set()
    body = pred.body()
    assert body["status"] == "failed" and body["error"] == "could not start"
    assert body["started_at"] is not None and body["completed_at"] is not None
