"""bench/gpu_check.py (the GPU-only code paths on tiny models, a first device call)
runs end to end on the CPU with --cpu, and refuses to pretend without a GPU."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_every_check_passes_on_the_cpu():
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--cpu"], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for name in ("fp8", "llama", "flux", "sdxl", "hotswap"):
        assert f"PASS {name}:" in proc.stdout
    assert "5 of 5 checks passed or skipped" in proc.stdout


def test_without_cuda_it_asks_for_cpu_and_checks_names():
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    proc = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "no CUDA device: use --cpu" in proc.stdout
    bad = subprocess.run([sys.executable, "bench/gpu_check.py", "--cpu", "--only", "fp8,vae"], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--only: unknown check(s) vae" in bad.stderr
