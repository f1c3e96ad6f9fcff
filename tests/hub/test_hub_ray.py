"""``cogkit hub --backend ray`` on a real Ray cluster: ``ray start --head`` bound to
127.0.0.1 with 2 CPUs, started here and stopped at the end. The official Python client
runs predictions; tokens stream through Ray; the deployment scales 1 -> 2 -> 1 under
load; a killed replica fails its prediction, is replaced, and nothing is lost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import replicate

from tests.hub.conftest import CONFORMANCE, FIXTURES, HubProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RAY = Path(sys.executable).parent / "ray"
IDLE = 4  # seconds: the burn model's idle_timeout (Ray's downscale delay)
# Replicas reserve CPUs from the cluster's 2: the light models a tenth each, so that
# burn's two replicas always find room
CONFIG = f"""\
models:
  acme/hello:
    path: {CONFORMANCE / "hello"}
    cpus: 0.1
  acme/image:
    path: {CONFORMANCE / "path_output"}
    cpus: 0.1
  acme/concat:
    path: {CONFORMANCE / "concat_iterator"}
    cpus: 0.1
  acme/bad-setup:
    path: {FIXTURES / "bad_setup"}
    cpus: 0.1
  acme/burn:
    path: {FIXTURES / "burn"}
    min_instances: 1
    max_instances: 2
    idle_timeout: {IDLE}
    cpus: 0.5
"""


class RayHead:
    """A one-node Ray cluster of our own (2 CPUs, 127.0.0.1)."""

    def __init__(self) -> None:
        if not RAY.exists():
            pytest.fail(f"{RAY} not found: install the ray extra (pip install -e '.[ray]'); "
                        "these tests need a real Ray cluster")
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
        proc = subprocess.run(
            [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}", "--num-cpus=2",
             "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.tmp}"],
            capture_output=True, text=True, env=env, timeout=180)
        if proc.returncode != 0:
            pytest.fail(f"ray start failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(self.tmp, ignore_errors=True)


def replicas(app_prefix: str = "ServeReplica:cogkit-") -> list[int]:
    """Pids of the replica actors of the hub's Serve applications (Ray names their processes)."""
    out = subprocess.run(["pgrep", "-f", app_prefix], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if int(p) != os.getpid()]


def burn_replicas(hub: HubProcess) -> list[int]:
    vid = hub.client().get("/v1/models/acme/burn").json()["latest_version"]["id"]
    return replicas(f"ServeReplica:cogkit-{vid}:")


def wait_for(what: str, check, timeout: float, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def ray_head():
    head = RayHead()
    yield head
    head.stop()


@pytest.fixture(scope="module")
def ray_hub(ray_head, tmp_path_factory):
    data = tmp_path_factory.mktemp("hub-ray")
    hub = HubProcess(data, None, {}, config=CONFIG, extra=["--backend", "ray", "--ray-address", ray_head.address])
    hub.start(timeout=180)
    hub.created = []  # every prediction the tests create, to check none is lost
    yield hub
    hub.stop(timeout=60)


@pytest.fixture()
def client(ray_hub) -> replicate.Client:
    return replicate.Client(api_token=ray_hub.token, base_url=ray_hub.url, timeout=120)


def _create(hub: HubProcess, model: str, model_input: dict, wait: bool = False) -> dict:
    headers = {"Prefer": "wait=60"} if wait else {}
    r = hub.client().post(f"/v1/models/{model}/predictions", json={"input": model_input}, headers=headers)
    assert r.status_code in (200, 201), r.text
    hub.created.append(r.json()["id"])
    return r.json()


def _get(hub: HubProcess, pid: str) -> dict:
    return hub.client().get(f"/v1/predictions/{pid}").json()


def test_python_client_runs_predictions_on_ray(client, ray_hub):
    assert client.run("acme/hello", input={"text": "ray"}) == "hello ray"
    out = client.run("acme/image", input={"width": 3, "height": 2})  # a file output, uploaded to the hub
    assert out.read().startswith(b"\x89PNG\r\n\x1a\n")
    ray_hub.created += [p.id for p in client.predictions.list().results]
    assert replicas("ServeReplica:cogkit-"), "no Ray Serve replica process runs the models"


def test_token_stream_arrives_in_pieces_through_ray(client):
    arrivals: list[tuple[float, str]] = []
    t0 = time.monotonic()
    for event in client.stream("acme/concat", input={"count": 12, "sleep": 0.1}):
        if event.event.value == "output":
            arrivals.append((time.monotonic() - t0, str(event)))
    assert "".join(text for _, text in arrivals) == "".join(f"tok{i} " for i in range(12))
    # pieces, not one lump at the end: the first token long before the last
    assert arrivals[-1][0] - arrivals[0][0] > 0.5, arrivals
    assert len({round(t, 1) for t, _ in arrivals}) > 3, arrivals


def test_cancel_reaches_the_replica(ray_hub):
    p = _create(ray_hub, "acme/concat", {"count": 400, "sleep": 0.05})
    wait_for("the prediction to run", lambda: _get(ray_hub, p["id"])["status"] == "processing", 120)
    t0 = time.monotonic()
    assert ray_hub.client().post(f"/v1/predictions/{p['id']}/cancel").status_code == 200
    done = wait_for("canceled", lambda: (lambda b: b if b["status"] in ("succeeded", "failed", "canceled") else None)(
        _get(ray_hub, p["id"])), 30)
    assert done["status"] == "canceled", done
    # the replica stopped the model: the next prediction runs at once, not after 20 s of tokens
    q = _create(ray_hub, "acme/concat", {"count": 3}, wait=True)
    assert q["status"] == "succeeded" and time.monotonic() - t0 < 15, q


def test_a_model_whose_setup_fails_fails_its_prediction_with_the_reason(ray_hub):
    p = _create(ray_hub, "acme/bad-setup", {})
    done = wait_for("the prediction to fail", lambda: (lambda b: b if b["status"] not in ("starting", "processing")
                                                       else None)(_get(ray_hub, p["id"])), 300)
    assert done["status"] == "failed", done
    assert "Ray could not start a replica" in done["error"] and "weights are missing" in done["error"], done["error"]
    assert "loading weights" in done["error"]  # the setup logs come with it


def test_scales_from_one_to_two_replicas_and_back(ray_hub):
    wait_for("the burn model's min_instances replica", lambda: len(burn_replicas(ray_hub)) == 1, 120)
    stop = threading.Event()
    errors: list[str] = []

    def client_loop() -> None:
        with ray_hub.client() as c:
            while not stop.is_set():
                r = c.post("/v1/models/acme/burn/predictions", json={"input": {"seconds": 0.5}},
                           headers={"Prefer": "wait=60"})
                if r.status_code not in (200, 201):
                    errors.append(r.text)
                    return
                ray_hub.created.append(r.json()["id"])

    threads = [threading.Thread(target=client_loop) for _ in range(8)]
    for th in threads:
        th.start()
    try:
        wait_for("a second replica under 8 concurrent clients", lambda: len(burn_replicas(ray_hub)) == 2, 120)
    finally:
        stop.set()
        for th in threads:
            th.join(120)
    assert not errors, errors[:3]
    # idle: back down to min_instances after the downscale delay (IDLE s) and Ray's graceful stop
    wait_for("scale down to one replica after idle", lambda: len(burn_replicas(ray_hub)) == 1, IDLE + 90)


def test_killed_replica_fails_its_prediction_and_is_replaced(ray_hub):
    [victim] = wait_for("one burn replica", lambda: (lambda r: r if len(r) == 1 else None)(burn_replicas(ray_hub)), 120)
    p = _create(ray_hub, "acme/burn", {"seconds": 60})
    wait_for("the prediction to run", lambda: _get(ray_hub, p["id"])["status"] == "processing", 120)
    os.kill(victim, signal.SIGKILL)
    failed = wait_for("the prediction to fail", lambda: (lambda b: b if b["status"] != "processing" else None)(
        _get(ray_hub, p["id"])), 60)
    assert failed["status"] == "failed", failed
    assert "replica" in failed["error"] and "died" in failed["error"], failed["error"]
    new = wait_for("a replacement replica", lambda: [r for r in burn_replicas(ray_hub) if r != victim], 120)
    assert victim not in new
    q = _create(ray_hub, "acme/burn", {"seconds": 0.1}, wait=True)
    if q["status"] != "succeeded":
        q = wait_for("the next prediction", lambda: (lambda b: b if b["status"] not in ("starting", "processing")
                                                     else None)(_get(ray_hub, q["id"])), 120)
    assert q["status"] == "succeeded", (q.get("error"), q.get("logs"))


def test_deployments_run_on_ray_and_delete_removes_their_replicas(ray_hub):
    c = ray_hub.client()
    vid = c.get("/v1/models/acme/hello").json()["latest_version"]["id"]
    r = c.post("/v1/deployments", json={"name": "hello-dep", "model": "acme/hello", "version": vid,
                                        "hardware": "cpu", "min_instances": 1, "max_instances": 1})
    assert r.status_code == 201, r.text
    owner = r.json()["owner"]
    mine = f"ServeReplica:cogkit-{vid}_{owner}_hello-dep:"
    wait_for("the deployment's min_instances replica", lambda: len(replicas(mine)) == 1, 120)

    def run(text: str) -> None:
        r = c.post(f"/v1/deployments/{owner}/hello-dep/predictions", json={"input": {"text": text}},
                   headers={"Prefer": "wait=60"})
        ray_hub.created.append(r.json()["id"])
        assert r.json()["output"] == f"hello {text}", r.text

    run("dep")
    # a new release: the retired pool must not delete the application its successor updated
    assert c.patch(f"/v1/deployments/{owner}/hello-dep", json={"max_instances": 2}).status_code == 200
    run("again")
    time.sleep(3)
    assert len(replicas(mine)) == 1
    run("still")
    assert c.delete(f"/v1/deployments/{owner}/hello-dep").status_code == 204
    wait_for("the deleted deployment's replica to stop", lambda: not replicas(mine), 60)


def test_nothing_is_lost_in_the_database(ray_hub):
    seen: dict[str, str] = {}
    with ray_hub.client() as c:
        url = "/v1/predictions"
        while url:
            page = c.get(url).json()
            seen.update({p["id"]: p["status"] for p in page["results"]})
            url = page["next"] and httpx.URL(page["next"]).raw_path.decode()
    missing = [pid for pid in ray_hub.created if pid not in seen]
    assert not missing, f"{len(missing)} predictions are not in the database"
    stuck = {pid: s for pid, s in seen.items() if s not in ("succeeded", "failed", "canceled")}
    assert not stuck, stuck
