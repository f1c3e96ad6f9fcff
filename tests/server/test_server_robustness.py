"""The server under failure: crashes, cancel, client disconnects, shutdown, secrets, capacity.

Every test starts a real ``python -m cogkit.server`` (own process group, killed in
teardown) on a free 127.0.0.1 port, with a predictor from tests/fixtures/server/robust.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server.harness import Receiver, ServerProcess
from tests.fixtures.server.robust_fixtures import project, receiver, start  # noqa: F401

ASYNC = {"Prefer": "respond-async"}


# ----------------------------------------------------------------------------- crashes


@pytest.mark.parametrize("mode", ["exit", "segfault"])
def test_crashing_predictor_fails_that_prediction_and_the_worker_restarts(start, mode: str) -> None:
    srv = start("crashy.py:Predictor")
    first = srv.predict({"mode": "ok"}).json()
    assert first["status"] == "succeeded"
    r = srv.predict({"mode": mode})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "failed"
    assert body["error"].startswith("Worker crashed")
    srv.wait_status(("READY",), timeout=30)
    again = srv.predict({"mode": "ok"}).json()
    assert again["status"] == "succeeded"
    assert again["output"] != first["output"]  # a new child process (its pid is in the output)


def test_sys_exit_and_exceptions_fail_only_the_prediction(start) -> None:
    srv = start("crashy.py:Predictor")
    for mode in ("raise", "sysexit"):
        body = srv.predict({"mode": mode}).json()
        assert body["status"] == "failed", body
        assert body["error"].startswith("Prediction failed: Prediction failed: ")
        assert f"mode {mode}\n" in body["logs"]
    assert srv.predict({"mode": "ok"}).json()["status"] == "succeeded"


def test_defunct_when_the_worker_cannot_be_restarted(start, tmp_path: Path) -> None:
    srv = start("fragile.py:Predictor", env={"FRAGILE_MARKER": str(tmp_path / "marker")})
    body = srv.predict({"crash": True}).json()
    assert body["status"] == "failed"
    health = srv.wait_status(("DEFUNCT",), timeout=30)
    assert "second setup fails on purpose" in health["setup"]["logs"]
    r = srv.predict({})
    assert r.status_code == 503
    assert r.json()["status"] == "failed"


def test_setup_failure_is_reported_and_predictions_get_503(start) -> None:
    srv = start("bad_setup.py:Predictor", wait=False)
    health = srv.wait_status(("SETUP_FAILED",), timeout=30)
    assert health["setup"]["status"] == "failed"
    assert "ValueError: weights are missing" in health["setup"]["logs"]
    assert "loading weights" in health["setup"]["logs"]
    r = srv.predict({})
    assert r.status_code == 503
    assert r.json() == {
        "error": "Setup has not finished yet. Wait until it has finished, or GET /health-check for status.",
        "status": "failed",
    }
    assert srv.client.get("/openapi.json").status_code == 503


# ----------------------------------------------------------------------------- cancel


def _time_cancel(srv: ServerProcess, pid: str) -> float:
    """Seconds from the cancel request to the prediction's terminal response."""
    result: dict = {}

    def run() -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            result["r"] = c.put(f"/predictions/{pid}", json={"input": {"seconds": 30}})
            result["t"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 10
    while srv.health()["status"] != "BUSY" and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    t0 = time.monotonic()
    assert srv.client.post(f"/predictions/{pid}/cancel").json() == {}
    t.join(30)
    assert result["r"].json()["status"] == "canceled"
    return result["t"] - t0


@pytest.mark.parametrize("ref", ["sleeper.py:Predictor", "sleeper_async.py:Predictor"])
def test_cancel_takes_effect_within_a_second(start, ref: str) -> None:
    srv = start(ref)
    elapsed = _time_cancel(srv, "to-cancel")
    assert elapsed < 1.0, f"cancel took {elapsed:.2f}s"
    assert srv.client.post("/predictions/to-cancel/cancel").status_code == 404
    srv.wait_status(("READY",), timeout=5)
    assert srv.predict({"seconds": 0}).json()["status"] == "succeeded"


def test_async_prediction_cancel_sends_canceled_webhook(start, receiver: Receiver) -> None:
    srv = start("sleeper.py:Predictor")
    r = srv.client.put(
        "/predictions/c1",
        json={"input": {"seconds": 30}, "webhook": receiver.url("/webhook/c1")},
        headers=ASYNC,
    )
    assert r.status_code == 202
    time.sleep(0.5)
    assert srv.client.post("/predictions/c1/cancel").status_code == 200
    bodies = receiver.wait_terminal("c1", timeout=10)
    assert bodies[-1]["status"] == "canceled"
    assert bodies[-1]["logs"].startswith("tick 0\n")
    assert "predict_time" in bodies[-1]["metrics"]


def test_cancel_stops_a_prediction_still_fetching_its_input_file(start, project: Path, receiver: Receiver) -> None:
    (project / "reader.py").write_text(
        "from cogkit import BasePredictor, Path\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self, f: Path) -> str:\n"
        "        return open(f).read()\n"
    )
    # a file server that sends its headers, then one byte a second: never a timeout, never done
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"x")
                except OSError:
                    return
                stop.wait(0.5)

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    try:
        srv = start("reader.py:Predictor")
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow.txt"
        r = srv.client.put(
            "/predictions/fetching", json={"input": {"f": url}, "webhook": receiver.url("/webhook/fetching")}, headers=ASYNC
        )
        assert r.status_code == 202
        time.sleep(1.0)
        t0 = time.monotonic()
        assert srv.client.post("/predictions/fetching/cancel").json() == {}
        assert receiver.wait_terminal("fetching", timeout=5)[-1]["status"] == "canceled"
        assert time.monotonic() - t0 < 1.5
        srv.wait_status(("READY",), timeout=5)
    finally:
        stop.set()
        listener.close()
        server.join(5)


def test_client_disconnect_cancels_a_sync_prediction(start, receiver: Receiver) -> None:
    srv = start("sleeper.py:Predictor")
    body = json.dumps({"input": {"seconds": 30}, "webhook": receiver.url("/webhook/gone")}).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(
        b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    srv.wait_status(("BUSY",), timeout=10)
    sock.close()
    bodies = receiver.wait_terminal("gone", timeout=10)
    assert bodies[-1]["status"] == "canceled"
    srv.wait_status(("READY",), timeout=5)


# ----------------------------------------------------------------------------- capacity


def test_sequential_client_never_gets_409(start) -> None:
    srv = start("sleeper.py:Predictor")
    statuses = [srv.predict({"text": str(i)}).status_code for i in range(200)]
    assert statuses == [200] * 200


def test_busy_server_answers_409_and_health_says_busy(start) -> None:
    srv = start("sleeper.py:Predictor")
    assert srv.client.put("/predictions/long", json={"input": {"seconds": 30}}, headers=ASYNC).status_code == 202
    srv.wait_status(("BUSY",), timeout=5)
    for headers in ({}, ASYNC):
        r = srv.client.post("/predictions", json={"input": {}}, headers=headers)
        assert r.status_code == 409
        assert r.json() == {"error": "At capacity - all prediction slots busy", "status": "failed"}
    srv.client.post("/predictions/long/cancel")


def test_async_predictor_runs_concurrently_up_to_its_limit(start) -> None:
    srv = start("sleeper_async.py:Predictor")
    for i in range(4):
        r = srv.client.put(f"/predictions/a{i}", json={"input": {"seconds": 30}}, headers=ASYNC)
        assert r.status_code == 202
    assert srv.health()["status"] == "BUSY"
    assert srv.client.post("/predictions", json={"input": {}}).status_code == 409
    for i in range(4):
        assert srv.client.post(f"/predictions/a{i}/cancel").status_code == 200
    srv.wait_status(("READY",), timeout=10)


def test_cog_max_concurrency_env_is_honoured(start) -> None:
    srv = start("sleeper_async.py:Predictor", env={"COG_MAX_CONCURRENCY": "2"})
    for i in range(2):
        assert srv.client.put(f"/predictions/m{i}", json={"input": {"seconds": 30}}, headers=ASYNC).status_code == 202
    assert srv.client.post("/predictions", json={"input": {}}).status_code == 409
    for i in range(2):
        srv.client.post(f"/predictions/m{i}/cancel")


def test_queue_accepts_waiting_predictions_instead_of_409(start, receiver: Receiver) -> None:
    srv = start("sleeper.py:Predictor", "--queue", "2")
    for i in range(3):
        r = srv.client.post(
            "/predictions",
            json={
                "id": f"q{i}",
                "input": {"seconds": 2.0 if i == 0 else 0.2, "text": f"q{i}"},
                "webhook": receiver.url(f"/webhook/q{i}"),
            },
            headers=ASYNC,
        )
        assert r.status_code == 202, r.text
    r = srv.client.post("/predictions", json={"input": {}}, headers=ASYNC)
    assert r.status_code == 409
    # a queued prediction can be canceled before it starts
    assert srv.client.post("/predictions/q2/cancel").status_code == 200
    assert receiver.wait_terminal("q0")[-1]["output"] == "q0"
    assert receiver.wait_terminal("q1")[-1]["output"] == "q1"
    canceled = receiver.wait_terminal("q2")
    assert [b["status"] for b in canceled] == ["canceled"]
    # a sync request waits in the queue too
    assert srv.predict({"seconds": 0.2}).json()["status"] == "succeeded"


# ----------------------------------------------------------------------------- shutdown


def test_sigterm_cancels_in_flight_work_and_delivers_its_webhook(start, receiver: Receiver) -> None:
    srv = start("sleeper.py:Predictor", env={"COGKIT_SHUTDOWN_GRACE": "0"})
    r = srv.client.put(
        "/predictions/s1", json={"input": {"seconds": 60}, "webhook": receiver.url("/webhook/s1")}, headers=ASYNC
    )
    assert r.status_code == 202
    time.sleep(0.5)
    os.kill(srv.proc.pid, signal.SIGTERM)
    assert srv.proc.wait(30) == 0
    bodies = receiver.wait_terminal("s1", timeout=1)
    assert bodies[-1]["status"] == "canceled"


def test_sigterm_lets_short_work_finish(start, receiver: Receiver) -> None:
    srv = start("sleeper.py:Predictor")
    srv.client.put(
        "/predictions/f1",
        json={"input": {"seconds": 1, "text": "finished"}, "webhook": receiver.url("/webhook/f1")},
        headers=ASYNC,
    )
    time.sleep(0.2)
    os.kill(srv.proc.pid, signal.SIGTERM)
    assert srv.proc.wait(30) == 0
    assert receiver.wait_terminal("f1", timeout=1)[-1]["output"] == "finished"


def test_await_explicit_shutdown_ignores_sigterm(start) -> None:
    srv = start("sleeper.py:Predictor", "--await-explicit-shutdown", "true")
    os.kill(srv.proc.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert srv.proc.poll() is None
    assert srv.predict({}).json()["status"] == "succeeded"
    assert srv.client.post("/shutdown").json() == {}
    assert srv.proc.wait(30) == 0


# ----------------------------------------------------------------------------- secrets


def test_secrets_never_appear_in_responses_webhooks_or_logs(start, receiver: Receiver) -> None:
    secret = "sk-very-secret-value-1234"
    srv = start("secretive.py:Predictor", env={"COG_LOG_LEVEL": "debug"})
    r = srv.predict({"api_key": secret, "text": "a"})
    assert r.json()["output"] == f"a:{len(secret)}"
    assert r.json()["input"] == {"text": "a"}  # writeOnly in the schema: never echoed
    assert secret not in r.text
    r = srv.client.post(
        "/predictions",
        json={"input": {"api_key": secret}, "webhook": receiver.url("/webhook/sec")},
        headers=ASYNC,
    )
    assert secret not in r.text
    receiver.wait_terminal("sec")
    for hook in receiver.hooks("sec"):
        assert secret not in json.dumps(hook["body"])
        assert "api_key" not in hook["body"]["input"]
    r = srv.client.put("/predictions/idem", json={"input": {"api_key": 5}})
    assert r.status_code == 422 and secret not in r.text
    assert r.json()["detail"][0]["msg"] == '"**********" is not of type "string"'
    r = srv.client.post("/predictions", json={"input": {"api_key": secret, "text": 7}})
    assert r.status_code == 422 and secret not in r.text
    srv.stop()
    assert secret not in srv.log_path.read_text()
