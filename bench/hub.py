#!/usr/bin/env python3
"""cogkit hub's added latency over calling the same ``cogkit serve`` directly.

Starts a ``cogkit serve`` of the conformance ``hello`` predictor and a ``cogkit hub`` serving
the same project (on SQLite by default, or ``--db postgresql://...``), then, in one run:

  a) sequential: N predictions alternating direct (``POST /predictions``, sync) and through the
     hub (``POST /v1/models/acme/hello/predictions`` with ``Prefer: wait``), each on its own
     keep-alive connection, after warm-ups: p50/p99 of each and the added p50/p99;
  b) 8 concurrent clients x M predictions through the hub (``Prefer: wait``): succeeded/s, and
     that every one of them is ``succeeded`` in the database afterwards (0 lost).

Target: <= 3 ms added at p50 on SQLite.

    python bench/hub.py --n 400 --clients 8 --per-client 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from server_vs_cog import free_port, pct  # bench/ is on sys.path when a script in it runs

REPO = Path(__file__).resolve().parent.parent
HELLO = REPO.parent / "shared" / "conformance" / "cog-0.23.1" / "predictors" / "hello"
TOKEN = "bench-token"


def wait_up(url: str, path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + path, timeout=2)
            if r.status_code == 200 and r.json().get("status") == "READY":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not up after {timeout} s")


def start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("COGKIT_HUB_TOKEN", None)
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def sequential(direct: str, hub: str, n: int) -> dict:
    times: dict[str, list[float]] = {"direct": [], "hub": []}
    headers = {"Authorization": f"Bearer {TOKEN}", "Prefer": "wait"}
    with httpx.Client(timeout=60) as dc, httpx.Client(timeout=60, headers=headers) as hc:
        def call_direct(i: int) -> None:
            r = dc.post(direct + "/predictions", json={"input": {"text": f"d{i}"}})
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text

        def call_hub(i: int) -> None:
            r = hc.post(hub + "/v1/models/acme/hello/predictions", json={"input": {"text": f"h{i}"}})
            assert r.status_code == 201 and r.json()["status"] == "succeeded", r.text

        for i in range(30):
            call_direct(i)
            call_hub(i)
        for i in range(n):  # interleaved, alternating which goes first
            order = (("direct", call_direct), ("hub", call_hub))
            for name, fn in order if i % 2 == 0 else reversed(order):
                t = time.perf_counter()
                fn(i)
                times[name].append((time.perf_counter() - t) * 1000)
    out = {name: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for name, v in times.items()}
    out["added_p50_ms"] = out["hub"]["p50_ms"] - out["direct"]["p50_ms"]
    out["added_p99_ms"] = out["hub"]["p99_ms"] - out["direct"]["p99_ms"]
    return out


def concurrent(hub: str, clients: int, per_client: int) -> dict:
    ids: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {TOKEN}", "Prefer": "wait"}

    def run(k: int) -> None:
        with httpx.Client(timeout=120, headers=headers) as c:
            for i in range(per_client):
                try:
                    r = c.post(hub + "/v1/models/acme/hello/predictions", json={"input": {"text": f"c{k}-{i}"}})
                    with lock:
                        if r.status_code == 201:
                            ids.append(r.json()["id"])
                        else:
                            errors.append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    # every accepted prediction must end succeeded, as the database says
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        statuses = [c.get(f"{hub}/v1/predictions/{pid}").json()["status"] for pid in ids]
    succeeded = sum(s == "succeeded" for s in statuses)
    return {"clients": clients, "requests": clients * per_client, "accepted": len(ids), "errors": len(errors),
            "succeeded": succeeded, "lost": clients * per_client - succeeded, "per_s": succeeded / elapsed,
            "first_errors": errors[:3]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="sequential predictions per side")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=50)
    ap.add_argument("--db", default=None, help="database URL for the hub (default: SQLite in a temp dir)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    dport, hport = free_port(), free_port()
    direct = start([sys.executable, "-m", "cogkit.server", "--host", "127.0.0.1", "--port", str(dport)], HELLO,
                   work / "direct.log")
    hub_cmd = [sys.executable, "-m", "cogkit", "hub", "--port", str(hport), "--data-dir", str(work / "hub"),
               "--token", TOKEN, "--model", f"acme/hello={HELLO}"]
    if args.db:
        hub_cmd += ["--db", args.db]
    hub = start(hub_cmd, work, work / "hub.log")
    try:
        direct_url, hub_url = f"http://127.0.0.1:{dport}", f"http://127.0.0.1:{hport}"
        wait_up(direct_url, "/health-check")
        wait_up(hub_url, "/health-check")
        result = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "db": "postgresql" if args.db else "sqlite",
            "sequential": sequential(direct_url, hub_url, args.n),
            "concurrent": concurrent(hub_url, args.clients, args.per_client),
        }
    finally:
        stop(hub)
        stop(direct)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    seq = result["sequential"]
    print(f"\nadded by the hub: p50 {seq['added_p50_ms']:.2f} ms, p99 {seq['added_p99_ms']:.2f} ms "
          f"(direct p50 {seq['direct']['p50_ms']:.2f} ms, hub p50 {seq['hub']['p50_ms']:.2f} ms); "
          f"{result['concurrent']['clients']} clients: {result['concurrent']['per_s']:.0f}/s, "
          f"lost {result['concurrent']['lost']}", file=sys.stderr)
    return 0 if result["concurrent"]["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
