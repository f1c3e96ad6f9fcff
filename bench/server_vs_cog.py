#!/usr/bin/env python3
"""cogkit's HTTP server against real Cog 0.23.1 (coglet), same fixtures, interleaved.

Cog runs from its own venv (``pip install cog==0.23.1``, see the conformance kit's
README: ``--cog-venv``, default $COG_VENV or $COG_REF_DIR/venv) with the schema file
``cog build`` would bake (written by the kit's make_schema.py, which needs the
cog 0.19.3 venv in $COG_REF_DIR/venv-schemagen). cogkit runs as
``python -m cogkit.server`` from this interpreter. Each fixture is served from its
own copy, on 127.0.0.1 only.

Measured (every loop bounded by count and time), each metric alternating
cog / cogkit per repetition so both see the same machine load:

  a) sequential: N sync POSTs to ``hello`` (after 20 warm-ups): p50/p99 of all
     responses and of the succeeded ones, and how many were (spurious) 409s;
  b) 8 clients x T s against ``hello``: succeeded/s and 409/s;
  c) ``concat_iterator`` with 200 tokens: time to the complete response;
  d) a 1 MiB file output returned as a data URL (bench/fixtures/file_output);
  e) cold start: process spawn to ``/health-check`` READY (``hello``).

Ratios are cogkit / cog of the medians over repetitions. Targets: a) p50 <= 1.0,
b) succeeded/s >= 1.0, c) <= 1.0, d) <= 0.5, e) <= 1.0.

    python bench/server_vs_cog.py --reps 3 --out /tmp/server_vs_cog.json --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_KIT = REPO.parent / "shared" / "conformance" / "cog-0.23.1"
COG_REF_DIR = Path(os.environ.get("COG_REF_DIR", "cog-ref"))
DEFAULT_COG_VENV = Path(os.environ.get("COG_VENV", COG_REF_DIR / "venv"))
SERVERS = ("cog", "cogkit")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(v) - 1)
    return v[f] + (v[c] - v[f]) * (k - f)


class Launcher:
    """Copies fixtures and starts either server on a free port, in its own process group."""

    def __init__(self, kit: Path, cog_venv: Path, workdir: Path) -> None:
        self.kit = kit
        self.cog_venv = cog_venv.resolve()
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._prepared: dict[tuple[str, str], Path] = {}

    def fixture_dir(self, fixture: str) -> Path:
        local = HERE / "fixtures" / fixture
        return local if local.is_dir() else self.kit / "predictors" / fixture

    def prepare(self, server: str, fixture: str) -> Path:
        key = (server, fixture)
        if key in self._prepared:
            return self._prepared[key]
        dest = self.workdir / f"{server}-{fixture}"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(self.fixture_dir(fixture), dest, ignore=shutil.ignore_patterns("__pycache__", ".cog"))
        if server == "cog":  # what `cog build` bakes in: coglet serves and validates with it
            (dest / ".cog").mkdir(exist_ok=True)
            subprocess.run(
                [str(self.cog_venv / "bin" / "python"), str(self.kit / "make_schema.py"), str(dest),
                 "--out", str(dest / ".cog" / "openapi_schema.json")],
                check=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), capture_output=True,
            )
        self._prepared[key] = dest
        return dest

    def start(self, server: str, fixture: str, tag: str = "") -> Server:
        project = self.prepare(server, fixture)
        port = free_port()
        env = dict(os.environ, PORT=str(port), COG_PREDICT_TYPE_STUB="predict.py:Predictor", PYTHONDONTWRITEBYTECODE="1")
        if server == "cog":
            env["PATH"] = f"{self.cog_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # coglet spawns `python`
            cmd = [str(self.cog_venv / "bin" / "python"), "-m", "cog.server.http", "--host", "127.0.0.1"]
        else:
            cmd = [sys.executable, "-m", "cogkit.server", "--host", "127.0.0.1", "--port", str(port)]
        log = open(self.logs / f"{server}-{fixture}{tag}.log", "wb")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return Server(server, fixture, proc, port, t0, log)


class Server:
    def __init__(self, name: str, fixture: str, proc: subprocess.Popen, port: int, t0: float, log) -> None:  # type: ignore[type-arg]
        self.name, self.fixture, self.proc, self.port, self.t0, self._log = name, fixture, proc, port, t0, log
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from spawn to READY."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} {self.fixture} exited ({self.proc.returncode})")
                try:
                    if c.get(self.url + "/health-check").json().get("status") == "READY":
                        return time.monotonic() - self.t0
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.005)
        raise RuntimeError(f"{self.name} {self.fixture} not READY after {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


def settle(client: httpx.Client, url: str) -> None:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and client.get(url + "/health-check").json().get("status") == "BUSY":
        time.sleep(0.01)


# --------------------------------------------------------------------------- measurements


def sequential(url: str, n: int) -> dict:
    all_ms, ok_ms, codes = [], [], {"succeeded": 0, "409": 0, "other": 0}
    with httpx.Client(timeout=60) as c:
        for i in range(20):
            c.post(url + "/predictions", json={"input": {"text": "warm"}})
        settle(c, url)
        for i in range(n):
            t = time.perf_counter()
            r = c.post(url + "/predictions", json={"input": {"text": f"n{i}"}})
            dt = (time.perf_counter() - t) * 1000
            all_ms.append(dt)
            if r.status_code == 200 and r.json().get("status") == "succeeded":
                codes["succeeded"] += 1
                ok_ms.append(dt)
            elif r.status_code == 409:
                codes["409"] += 1
            else:
                codes["other"] += 1
    return {
        "p50_ms": pct(all_ms, 50), "p99_ms": pct(all_ms, 99),
        "succeeded_p50_ms": pct(ok_ms, 50) if ok_ms else None, "succeeded_p99_ms": pct(ok_ms, 99) if ok_ms else None,
        **codes,
    }


def concurrent(url: str, clients: int, seconds: float) -> dict:
    counts = {"succeeded": 0, "409": 0, "other": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def run() -> None:
        local = {"succeeded": 0, "409": 0, "other": 0}
        with httpx.Client(timeout=30) as c:
            while time.monotonic() < stop_at:
                r = c.post(url + "/predictions", json={"input": {"text": "c"}})
                if r.status_code == 200 and r.json().get("status") == "succeeded":
                    local["succeeded"] += 1
                elif r.status_code == 409:
                    local["409"] += 1
                else:
                    local["other"] += 1
        with lock:
            for k, v in local.items():
                counts[k] += v

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    wall = time.perf_counter() - t0
    return {"succeeded_per_s": counts["succeeded"] / wall, "409_per_s": counts["409"] / wall, **counts}


def timed_predictions(url: str, body: dict, reps: int, check) -> dict:  # type: ignore[no-untyped-def]
    times, ok = [], 0
    with httpx.Client(timeout=120) as c:
        c.post(url + "/predictions", json=body)  # warm-up
        for _ in range(reps):
            settle(c, url)
            t = time.perf_counter()
            r = c.post(url + "/predictions", json=body)
            dt = (time.perf_counter() - t) * 1000
            if r.status_code == 200 and check(r.json().get("output")):
                ok += 1
                times.append(dt)
    return {"p50_ms": pct(times, 50) if times else None, "p90_ms": pct(times, 90) if times else None, "correct": ok, "reps": reps}


def _is_mib_data_url(out: object) -> bool:
    if not isinstance(out, str) or not out.startswith("data:"):
        return False
    b64 = out.partition(",")[2]
    return len(b64) * 3 // 4 - b64.count("=") == 1 << 20


# --------------------------------------------------------------------------- driver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", type=Path, default=DEFAULT_KIT, help="the cog-0.23.1 conformance kit")
    ap.add_argument("--cog-venv", type=Path, default=DEFAULT_COG_VENV, help="venv with cog==0.23.1")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each metric per server")
    ap.add_argument("-n", type=int, default=500, help="sequential requests per repetition (a)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of (b) per repetition")
    ap.add_argument("--token-reps", type=int, default=20, help="timed requests per repetition (c, d)")
    ap.add_argument("--cold-runs", type=int, default=5, help="cold starts per server (e)")
    ap.add_argument("--skip", default="", help="comma list of a,b,c,d,e to skip")
    ap.add_argument("--machine-note", default="")
    ap.add_argument("--out", type=Path, help="write all figures as JSON")
    ap.add_argument("--markdown", action="store_true", help="print a RESULTS.md table")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if not (args.cog_venv / "bin" / "python").exists():
        ap.error(f"no cog venv at {args.cog_venv} (pip install cog==0.23.1 there; see the kit's README)")

    workdir = Path(tempfile.mkdtemp(prefix="server-vs-cog-"))
    launcher = Launcher(args.kit, args.cog_venv, workdir)
    results: dict = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "note": args.machine_note, "loadavg_start": os.getloadavg()},
        "runs": {name: {} for name in SERVERS},
    }

    def record(server: str, metric: str, value: dict) -> None:
        results["runs"][server].setdefault(metric, []).append(value)
        print(f"{server:7s} {metric}: {json.dumps(value)}", flush=True)

    def order(rep: int) -> tuple[str, ...]:
        return SERVERS if rep % 2 == 0 else SERVERS[::-1]

    def with_servers(fixture: str, body) -> None:  # type: ignore[no-untyped-def]
        servers = {name: launcher.start(name, fixture) for name in SERVERS}
        try:
            for srv in servers.values():
                srv.wait_ready()
            body(servers)
        finally:
            for srv in servers.values():
                srv.stop()

    try:
        if not {"a", "b"} <= skip:
            def hello(servers: dict[str, Server]) -> None:
                for rep in range(args.reps):
                    for name in order(rep):
                        if "a" not in skip:
                            record(name, "a_sequential", sequential(servers[name].url, args.n))
                    for name in order(rep):
                        if "b" not in skip:
                            record(name, "b_concurrent", concurrent(servers[name].url, args.clients, args.seconds))
            with_servers("hello", hello)
        if "c" not in skip:
            def tokens(servers: dict[str, Server]) -> None:
                body = {"input": {"count": 200, "sleep": 0}}
                for rep in range(args.reps):
                    for name in order(rep):
                        record(name, "c_200_tokens", timed_predictions(
                            servers[name].url, body, args.token_reps, lambda o: isinstance(o, list) and len(o) == 200))
            with_servers("concat_iterator", tokens)
        if "d" not in skip:
            def data_url(servers: dict[str, Server]) -> None:
                body = {"input": {"size": 1 << 20}}
                for rep in range(args.reps):
                    for name in order(rep):
                        record(name, "d_1mib_data_url", timed_predictions(servers[name].url, body, args.token_reps, _is_mib_data_url))
            with_servers("file_output", data_url)
        if "e" not in skip:
            for i in range(args.cold_runs):
                for name in order(i):
                    srv = launcher.start(name, "hello", tag=f"-cold{i}")
                    try:
                        record(name, "e_cold_start", {"ready_s": srv.wait_ready()})
                    finally:
                        srv.stop()
                    time.sleep(0.3)
    finally:
        results["machine"]["loadavg_end"] = os.getloadavg()
        summary = summarize(results)
        results["summary"] = summary
        if args.out:
            args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(summary, indent=1))
        if args.markdown:
            print(markdown(summary, results))
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


# metric -> (key, better, target ratio cogkit/cog)
TARGETS = {
    "a_sequential": ("p50_ms", "lower", 1.0),
    "b_concurrent": ("succeeded_per_s", "higher", 1.0),
    "c_200_tokens": ("p50_ms", "lower", 1.0),
    "d_1mib_data_url": ("p50_ms", "lower", 0.5),
    "e_cold_start": ("ready_s", "lower", 1.0),
}


def summarize(results: dict) -> dict:
    out: dict = {}
    for metric, (key, better, target) in TARGETS.items():
        med = {}
        for name in SERVERS:
            values = [r[key] for r in results["runs"][name].get(metric, []) if r.get(key) is not None]
            med[name] = statistics.median(values) if values else None
        entry: dict = {"key": key, "cog": med["cog"], "cogkit": med["cogkit"], "target": target, "better": better}
        if med["cog"] and med["cogkit"] is not None:
            ratio = med["cogkit"] / med["cog"]
            entry["ratio"] = ratio
            entry["met"] = ratio <= target if better == "lower" else ratio >= target
        out[metric] = entry
    for name in SERVERS:
        runs = results["runs"][name]
        out.setdefault("extra", {})[name] = {
            "a_409_total": sum(r["409"] for r in runs.get("a_sequential", [])),
            "a_requests_total": sum(r["succeeded"] + r["409"] + r["other"] for r in runs.get("a_sequential", [])),
            "a_p99_ms_median": _median([r["p99_ms"] for r in runs.get("a_sequential", [])]),
            "a_succeeded_p50_ms_median": _median([r["succeeded_p50_ms"] for r in runs.get("a_sequential", [])]),
            "b_409_per_s_median": _median([r["409_per_s"] for r in runs.get("b_concurrent", [])]),
        }
    return out


def _median(values: list) -> float | None:  # type: ignore[type-arg]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def markdown(summary: dict, results: dict) -> str:
    labels = {
        "a_sequential": "a) sequential hello, p50 of all responses (ms)",
        "b_concurrent": "b) 8 clients, succeeded/s",
        "c_200_tokens": "c) 200-token ConcatenateIterator, p50 (ms)",
        "d_1mib_data_url": "d) 1 MiB file output as data URL, p50 (ms)",
        "e_cold_start": "e) cold start to READY (s)",
    }
    rows = ["| metric | cog 0.23.1 | cogkit | cogkit/cog | target | met |", "|---|---|---|---|---|---|"]
    for metric, label in labels.items():
        e = summary.get(metric, {})
        if e.get("cog") is None:
            continue
        op = "<=" if e["better"] == "lower" else ">="
        rows.append(f"| {label} | {e['cog']:.3g} | {e['cogkit']:.3g} | {e.get('ratio', float('nan')):.2f} | {op} {e['target']} | {'yes' if e.get('met') else 'no'} |")
    x = summary["extra"]
    rows.append(f"| a) p99 of all responses (ms) | {x['cog']['a_p99_ms_median']:.3g} | {x['cogkit']['a_p99_ms_median']:.3g} | | | |" if x["cog"]["a_p99_ms_median"] else "")
    rows.append(f"| a) p50 of succeeded responses (ms) | {x['cog']['a_succeeded_p50_ms_median']:.3g} | {x['cogkit']['a_succeeded_p50_ms_median']:.3g} | | | |" if x["cog"]["a_succeeded_p50_ms_median"] else "")
    rows.append(f"| a) spurious 409s (all repetitions) | {x['cog']['a_409_total']} / {x['cog']['a_requests_total']} | {x['cogkit']['a_409_total']} / {x['cogkit']['a_requests_total']} | | 0 | |")
    rows.append(f"| b) 409/s | {x['cog']['b_409_per_s_median']:.3g} | {x['cogkit']['b_409_per_s_median']:.3g} | | | |" if x["cog"]["b_409_per_s_median"] is not None else "")
    m = results["machine"]
    head = f"{results['date_utc']}, {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, load average {m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}. {m['note']}"
    return head + "\n\n" + "\n".join(r for r in rows if r)


if __name__ == "__main__":
    sys.exit(main())
