"""Crash test: a model server killed mid-prediction, the hub stopped (SIGTERM) and killed
(SIGKILL) mid-queue and started again. Every accepted prediction ends terminal, every
terminal webhook arrives (at least once, through a receiver that fails its first
deliveries), and nothing is lost."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.hub.conftest import CONFORMANCE, HubProcess
from tests.hub.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TERMINAL = {"succeeded", "failed", "canceled"}
CONFIG = f"""
models:
  acme/slow:
    path: {CONFORMANCE / "slow"}
    max_instances: 1
"""


def _create(c, seconds: float, hook: str) -> str:
    r = c.post("/v1/models/acme/slow/predictions", json={"input": {"seconds": seconds}, "webhook": hook,
                                                         "webhook_events_filter": ["completed"]})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _wait_status(c, pid: str, wanted: set[str], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = c.get(f"/v1/predictions/{pid}").json()
        if p["status"] in wanted:
            return p
        time.sleep(0.1)
    raise AssertionError(f"{pid} still {p['status']} after {timeout} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_crashes_and_restarts_lose_nothing(tmp_path, db, db_url_for):
    receiver = Receiver(fail_first=3)  # the first deliveries fail: the outbox retries them
    hub = HubProcess(tmp_path / "hub", db_url_for(db), {}, config=CONFIG).start()
    ids: list[str] = []
    try:
        with hub.client() as c:
            # 1. the model server dies mid-prediction: that prediction fails clearly, the queue goes on
            a = _create(c, 30, receiver.url)
            ids.append(a)
            _wait_status(c, a, {"processing"})
            queued = [_create(c, 0.2, receiver.url) for _ in range(2)]
            ids += queued
            servers = hub.children()
            assert len(servers) == 1
            os.killpg(servers[0], signal.SIGKILL)
            failed = _wait_status(c, a, TERMINAL)
            assert failed["status"] == "failed"
            assert "model server stopped" in failed["error"]
            for pid in queued:
                p = _wait_status(c, pid, TERMINAL)
                assert p["status"] == "succeeded", p["error"]

            # 2. SIGTERM mid-queue: the running one is failed cleanly, queued ones wait in the database
            d = _create(c, 30, receiver.url)
            ids.append(d)
            _wait_status(c, d, {"processing"})
            waiting = [_create(c, 0.2, receiver.url) for _ in range(3)]
            ids += waiting
            servers = hub.children()
        took = hub.stop(signal.SIGTERM)
        assert took < 15, f"the hub took {took:.1f} s to stop"
        assert not any(_alive(p) for p in servers), "a model server outlived the hub"

        hub.start()
        with hub.client() as c:
            stopped = _wait_status(c, d, TERMINAL)
            assert stopped["status"] == "failed" and "shut down" in stopped["error"]
            for pid in waiting:
                p = _wait_status(c, pid, TERMINAL)
                assert p["status"] == "succeeded", p["error"]

            # 3. SIGKILL mid-prediction: at the next start it is failed, the queue runs
            e = _create(c, 30, receiver.url)
            ids.append(e)
            _wait_status(c, e, {"processing"})
            more = [_create(c, 0.2, receiver.url) for _ in range(2)]
            ids += more
            servers = hub.children()
        hub.stop(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in servers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in servers), "a model server outlived a killed hub"

        hub.start()
        with hub.client() as c:
            killed = _wait_status(c, e, TERMINAL)
            assert killed["status"] == "failed" and "restarted" in killed["error"]
            for pid in more:
                p = _wait_status(c, pid, TERMINAL)
                assert p["status"] == "succeeded", p["error"]
            # nothing accepted is left behind
            listed = {p["id"]: p["status"] for p in c.get("/v1/predictions").json()["results"]}
            assert all(listed[pid] in TERMINAL for pid in ids)

        # every terminal webhook arrived, signed, at least once
        calls = receiver.wait_for(lambda cs: {x["json"]["id"] for x in cs if x["json"]["status"] in TERMINAL} >= set(ids),
                                  timeout=60)
        ids_seen = {x["json"]["id"] for x in calls}
        assert set(ids) <= ids_seen
        assert all(x["headers"].get("webhook-signature", "").startswith("v1,") for x in calls)
        assert any(x["failed"] for x in receiver.calls)  # retries happened
    finally:
        hub.stop(signal.SIGKILL)
        receiver.close()
