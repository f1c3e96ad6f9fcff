"""Load without loss: 8 async clients for 60 s against the ``slow`` and ``hello`` fixtures,
webhooks to a local receiver that refuses 20% of deliveries with 503. Every accepted
prediction must end in exactly one terminal state whose webhook was delivered, and
both servers must still be READY afterwards."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server.harness import TERMINAL, Receiver, ServerProcess, copy_fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLIENTS = 8
DURATION = 60.0
DRAIN_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def servers(conformance_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    root = tmp_path_factory.mktemp("soak")
    started: dict[str, ServerProcess] = {}
    try:
        for name in ("hello", "slow"):
            project = copy_fixture(conformance_dir / "predictors" / name, root)
            started[name] = ServerProcess(project, env={"COG_PREDICT_TYPE_STUB": "predict.py:Predictor"})
        yield started
    finally:
        for srv in started.values():
            srv.stop()


def test_soak_every_accepted_prediction_ends_once_with_a_delivered_webhook(servers: dict[str, ServerProcess]) -> None:
    recv = Receiver(fail_rate=0.2, seed=7)
    accepted: dict[str, str] = {}  # prediction id -> fixture
    refused: Counter[tuple[str, int]] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    ids = itertools.count()
    stop_at = time.monotonic() + DURATION

    def client(n: int) -> None:
        with httpx.Client(timeout=30) as c:
            while time.monotonic() < stop_at:
                seq = next(ids)
                fixture = "hello" if seq % 2 else "slow"
                srv = servers[fixture]
                pid = f"soak-{n}-{seq}"
                inputs = {"text": pid} if fixture == "hello" else {"seconds": 0.05}
                body = {"id": pid, "input": inputs, "webhook": recv.url(f"/webhook/{pid}")}
                try:
                    r = c.post(f"{srv.url}/predictions", json=body, headers={"Prefer": "respond-async"})
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{pid}: {exc!r}")
                    continue
                with lock:
                    if r.status_code == 202:
                        accepted[pid] = fixture
                    else:
                        refused[(fixture, r.status_code)] += 1
                if r.status_code == 409:
                    time.sleep(0.005)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(DURATION + 60)
        assert not errors, errors[:10]
        assert {code for _, code in refused} <= {409}, refused
        assert len(accepted) > 100, (len(accepted), refused)

        deadline = time.monotonic() + DRAIN_TIMEOUT
        missing = set(accepted)
        while missing and time.monotonic() < deadline:
            missing = {pid for pid in missing if not any(b.get("status") in TERMINAL for b in recv.bodies(pid))}
            time.sleep(0.2)
        assert not missing, f"{len(missing)} predictions without a delivered terminal webhook: {sorted(missing)[:10]}"

        for pid, fixture in accepted.items():
            bodies = recv.bodies(pid)
            terminal = [b for b in bodies if b.get("status") in TERMINAL]
            assert len(terminal) == 1, (pid, [b.get("status") for b in bodies])
            assert bodies[-1] is terminal[0], (pid, [b.get("status") for b in bodies])
            assert terminal[0]["status"] == "succeeded", terminal[0]
            expected = f"hello {pid}" if fixture == "hello" else "slept 0.05"
            assert terminal[0]["output"] == expected
        with recv.lock:
            stray = set(recv.webhooks) - set(accepted)
        assert not stray, sorted(stray)[:10]
        assert recv.refused > 0
        for srv in servers.values():
            assert srv.health()["status"] == "READY", srv.log()
        print(
            f"soak: accepted {dict(Counter(accepted.values()))}, refused {dict(refused)}, "
            f"{recv.refused} of {recv.attempts} webhook deliveries refused"
        )
    finally:
        recv.close()
