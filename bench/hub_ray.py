#!/usr/bin/env python3
"""cogkit hub's Ray Serve backend against its local backend, in one run.

Starts a one-node Ray cluster (``ray start --head``, 127.0.0.1, ``--cpus`` CPUs) and two hubs
on SQLite: ``--backend local`` and ``--backend ray`` on that cluster, then:

  a) latency: N sequential ``hello`` predictions (``Prefer: wait``) alternating local and
     Ray, after warm-ups: p50/p99 of each and the p50 Ray adds;
  b) throughput: the CPU-bound ``burn`` fixture (``--seconds`` of busy work per prediction)
     on the Ray hub, once as a deployment (``/v1/deployments``) of 1 replica and once of 2
     (min = max), each fed by
     ``--clients`` concurrent clients for ``--per-client`` predictions: predictions/s and the
     2-over-1 ratio (target >= 1.7 on 2 cores).

    python bench/hub_ray.py --n 200 --clients 4 --per-client 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from hub import TOKEN, start, stop, wait_up  # bench/ is on sys.path when a script in it runs
from server_vs_cog import free_port, pct

REPO = Path(__file__).resolve().parent.parent
HELLO = REPO.parent / "shared" / "conformance" / "cog-0.23.1" / "predictors" / "hello"
BURN = REPO / "tests" / "fixtures" / "hub" / "burn"
RAY = Path(sys.executable).parent / "ray"


def config(ray: bool) -> str:
    # replicas reserve a share of the node's CPUs, so that all four fit on 2 at once
    text = f"models:\n  acme/hello:\n    path: {HELLO}\n    cpus: 0.1\n"
    if ray:
        text += f"  acme/burn:\n    path: {BURN}\n    cpus: 0.5\n    max_instances: 2\n"
    return text


def hub(work: Path, name: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    data = work / f"hub-{name}"
    data.mkdir()
    (data / "hub.yaml").write_text(config(bool(extra)))
    proc = start([sys.executable, "-m", "cogkit", "hub", "--port", str(port), "--data-dir", str(data),
                  "--token", TOKEN, "--config", str(data / "hub.yaml"), *extra], work, work / f"hub-{name}.log")
    return proc, f"http://127.0.0.1:{port}"


def sequential(local: str, ray: str, n: int) -> dict:
    times: dict[str, list[float]] = {"local": [], "ray": []}
    headers = {"Authorization": f"Bearer {TOKEN}", "Prefer": "wait"}
    with httpx.Client(timeout=120, headers=headers) as c:
        def call(base: str, i: int) -> None:
            r = c.post(base + "/v1/models/acme/hello/predictions", json={"input": {"text": f"t{i}"}})
            assert r.status_code == 201 and r.json()["status"] == "succeeded", r.text

        for i in range(20):
            call(local, i)
            call(ray, i)
        for i in range(n):  # interleaved, alternating which goes first
            order = (("local", local), ("ray", ray))
            for name, base in order if i % 2 == 0 else reversed(order):
                t = time.perf_counter()
                call(base, i)
                times[name].append((time.perf_counter() - t) * 1000)
    out = {name: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for name, v in times.items()}
    out["added_p50_ms"] = out["ray"]["p50_ms"] - out["local"]["p50_ms"]
    return out


def throughput(base: str, replicas: int, clients: int, per_client: int, seconds: float) -> dict:
    """A deployment of acme/burn with min = max = ``replicas``, warmed up, then loaded."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=60"}
    done: list[str] = []
    errors: list[str] = []
    name = f"burn-{replicas}"
    with httpx.Client(timeout=300, headers=headers) as c:
        vid = c.get(f"{base}/v1/models/acme/burn").json()["latest_version"]["id"]
        r = c.post(f"{base}/v1/deployments", json={"name": name, "model": "acme/burn", "version": vid,
                                                   "hardware": "cpu", "min_instances": replicas,
                                                   "max_instances": replicas})
        assert r.status_code in (200, 201), r.text
        owner = r.json()["owner"]
        url = f"{base}/v1/deployments/{owner}/{name}/predictions"
        for _ in range(2 * replicas):  # warm: every replica up and past its first prediction
            assert c.post(url, json={"input": {"seconds": 0.05}}).json()["status"] == "succeeded"

    def run() -> None:
        with httpx.Client(timeout=300, headers=headers) as c:
            for _ in range(per_client):
                r = c.post(url, json={"input": {"seconds": seconds}})
                body = r.json()
                if body.get("status") != "succeeded":  # past Prefer: wait, read it until it ends
                    while body.get("status") in ("starting", "processing"):
                        time.sleep(0.1)
                        body = c.get(f"{base}/v1/predictions/{body['id']}").json()
                (done if body.get("status") == "succeeded" else errors).append(body.get("id", r.text[:100]))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    return {"deployment": name, "replicas": replicas, "predictions": len(done), "failed": len(errors), "seconds": round(elapsed, 2),
            "per_s": len(done) / elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="sequential predictions per backend")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--per-client", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per burn prediction")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray node")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ray-", dir="/tmp"))
    rport = free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    subprocess.run([str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={rport}",
                    f"--num-cpus={args.cpus}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
                    f"--temp-dir={work / 'ray'}"], check=True, capture_output=True, env=env)
    procs = []
    try:
        local, local_url = hub(work, "local", [])
        procs.append(local)
        ray, ray_url = hub(work, "ray", ["--backend", "ray", "--ray-address", f"127.0.0.1:{rport}"])
        procs.append(ray)
        wait_up(local_url, "/health-check")
        wait_up(ray_url, "/health-check", timeout=300)
        seq = sequential(local_url, ray_url, args.n)
        runs = {f"{n}_replicas": throughput(ray_url, n, args.clients, args.per_client, args.seconds) for n in (1, 2)}
        result = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "ray_cpus": args.cpus, "sequential": seq, "throughput": runs,
            "ratio_2_over_1": runs["2_replicas"]["per_s"] / runs["1_replicas"]["per_s"],
        }
    finally:
        for proc in procs:
            stop(proc)
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nRay adds p50 {seq['added_p50_ms']:.2f} ms (local {seq['local']['p50_ms']:.2f} ms, ray "
          f"{seq['ray']['p50_ms']:.2f} ms); burn throughput 1 replica {runs['1_replicas']['per_s']:.2f}/s, 2 replicas "
          f"{runs['2_replicas']['per_s']:.2f}/s: ratio {result['ratio_2_over_1']:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
