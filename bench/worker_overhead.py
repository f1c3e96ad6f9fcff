"""What the worker adds to a prediction: Worker.predict() round trip vs calling predict() directly.

A trivial predictor (str in, str out) is called N times in this process, then N times
sequentially through a Worker (child process, socket round trip, events, slot
accounting; each call waits for the terminal event before the next starts, as a
sequential client does). Reported: medians and p90 of both and the median added.
Also measured: cold start, Worker() spawn -> READY, for the same predictor.

    .venv/bin/python bench/worker_overhead.py [-n 2000] [--cold-runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

PREDICTOR = '''
from cogkit import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.prefix = "hello "

    def predict(self, text: str = Input(description="Text to greet")) -> str:
        return self.prefix + text
'''


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def direct(project: Path, n: int) -> list[float]:
    sys.path.insert(0, str(project))
    from predict import Predictor  # type: ignore[import-not-found]

    p = Predictor()
    p.setup()
    for _ in range(200):
        p.predict(text="world")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        p.predict(text="world")
        times.append(time.perf_counter() - t0)
    return times


async def through_worker(project: Path, n: int) -> list[float]:
    from cogkit.worker.client import Worker
    from cogkit.worker.protocol import Done

    w = Worker("predict.py:Predictor", project)
    await w.start()
    await w.wait_ready()
    times = []
    for i in range(n + 200):
        t0 = time.perf_counter()
        h = await w.predict(f"p{i}", {"text": "world"})
        async for ev in h:
            last = ev
        elapsed = time.perf_counter() - t0
        assert isinstance(last, Done) and last.output == "hello world", last
        if i >= 200:  # warm-up excluded
            times.append(elapsed)
    await w.shutdown()
    return times


async def cold_start(project: Path) -> float:
    from cogkit.worker.client import Worker

    t0 = time.perf_counter()
    w = Worker("predict.py:Predictor", project)
    await w.start()
    await w.wait_ready()
    elapsed = time.perf_counter() - t0
    assert w.state == "READY"
    await w.shutdown()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="timed predictions per side")
    ap.add_argument("--cold-runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "predict.py").write_text(PREDICTOR)
        d = direct(project, args.n)
        w = asyncio.run(through_worker(project, args.n))
        cold = [asyncio.run(cold_start(project)) for _ in range(args.cold_runs)]
    md, mw = statistics.median(d), statistics.median(w)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"direct predict():      median {md * 1e3:.4f} ms  p90 {percentile(d, 0.9) * 1e3:.4f} ms  (n={len(d)})")
    print(f"Worker.predict() trip: median {mw * 1e3:.4f} ms  p90 {percentile(w, 0.9) * 1e3:.4f} ms  (n={len(w)})")
    print(f"added by the worker:   median {(mw - md) * 1e3:.3f} ms")
    print(f"cold start to READY:   median {statistics.median(cold):.3f} s  (min {min(cold):.3f}, max {max(cold):.3f}, runs={len(cold)})")


if __name__ == "__main__":
    main()
