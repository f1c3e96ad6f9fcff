#!/usr/bin/env python3
"""cogkit's Cog server at a git ref against the working tree: the sequential sync POST
latency of the ``hello`` conformance fixture, both servers up at once, measured in
alternating rounds so both see the same machine load. For changes that must add nothing
to the prediction hot path (e.g. the playground's routes).

    python bench/server_ab.py --baseline f7fd125 --rounds 9 --n 300
    python bench/server_ab.py --baseline f7fd125 --fixture concat_iterator --input '{"count": 200}'

The second form times a prediction of 200 yielded items (each one an event the server
folds in): the per-event path rather than the per-request one. Prints the per-round p50s and the median ratio (working tree / baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("COGKIT_SHARED_DIR", REPO.parent / "shared")) / "conformance/cog-0.23.1/predictors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(source: Path, project: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(source), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen([sys.executable, "-m", "cogkit.server", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health-check", timeout=1).json().get("status") == "READY":
                return proc, url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server from {source} did not become READY")


def p50(client: httpx.Client, url: str, n: int, body: dict | None) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        r = client.post(url + "/predictions", json=body or {"input": {"text": f"n{i}"}})
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="git ref of the baseline")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--n", type=int, default=300, help="requests per server per round")
    ap.add_argument("--fixture", default="hello", help="a predictor of the Cog conformance set")
    ap.add_argument("--input", default=None, help="the input object as JSON (hello: a new text per request)")
    args = ap.parse_args()
    body = {"input": json.loads(args.input)} if args.input else None
    tmp = Path(tempfile.mkdtemp(prefix="cogkit-ab-"))
    base_src = tmp / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base_src), args.baseline],
                   check=True, capture_output=True)
    procs = []
    try:
        servers = {}
        for name, src in (("baseline", base_src), ("working tree", REPO)):
            project = tmp / f"project-{name.replace(' ', '-')}"
            shutil.copytree(FIXTURES / args.fixture, project)
            proc, url = start(src, project)
            procs.append(proc)
            servers[name] = url
        results: dict[str, list[float]] = {name: [] for name in servers}
        with httpx.Client(timeout=60) as client:
            for url in servers.values():
                p50(client, url, 50, body)  # warm-up
            for r in range(args.rounds):
                order = list(servers) if r % 2 == 0 else list(reversed(servers))
                for name in order:
                    results[name].append(p50(client, servers[name], args.n, body))
        for name, values in results.items():
            print(f"{name:>13}: p50 per round (ms) " + " ".join(f"{v:.3f}" for v in values)
                  + f"  median {statistics.median(values):.3f}")
        ratio = statistics.median(results["working tree"]) / statistics.median(results["baseline"])
        print(f"ratio working tree / baseline (median of round p50s): {ratio:.3f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_src)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
