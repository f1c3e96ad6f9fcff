"""The SDXL benchmarks run (tiny configs on CPU): bench/gpu_sdxl.py --tiny and
bench/sdxl_overhead.py --quick. Figures are not asserted; see bench/RESULTS.md."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COGKIT_DEVICE": "cpu"}


@pytest.mark.slow
def test_gpu_sdxl_tiny_runs_every_case(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "bench/gpu_sdxl.py", "--tiny", "--compile-backend", "eager", "--runs", "1", "--json", str(out)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    got = {(r["variant"], r["case"].split()[0]) for r in res["runs"] if "median_ms" in r}
    assert got == {(v, c) for v in ("eager", "compiled") for c in ("sdxl", "turbo", "lcm")}
    assert all(r["median_ms"] > 0 and r["it_per_s"] > 0 for r in res["runs"])
    assert "| compiled | sdxl 128^2 30 steps CFG |" in proc.stdout


def test_gpu_sdxl_full_size_refuses_without_gpu():
    proc = subprocess.run([sys.executable, "bench/gpu_sdxl.py"], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "needs a GPU" in proc.stdout
