"""bench/gpu_train.py runs (tiny models on the CPU) and its full-size run refuses
without a GPU rather than trying to fit a 12 B transformer in RAM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_tiny_run_reports_both_trainers(tmp_path) -> None:
    out = tmp_path / "train.json"
    proc = subprocess.run([sys.executable, "bench/gpu_train.py", "--tiny", "--steps", "4", "--json", str(out)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [r["model"] for r in results] == ["flux", "sdxl"]
    assert all(r["median_step_s"] > 0 and r["peak_rss_mb"] > 0 for r in results)
    assert proc.stdout.strip().splitlines()[-1].startswith("sdxl steps/s: ")  # the figure is the last line


def test_full_size_refuses_without_gpu() -> None:
    proc = subprocess.run([sys.executable, "bench/gpu_train.py", "--models", "flux"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "needs a GPU" in proc.stderr
