"""bench/gpu_llama.py runs end to end with --tiny on the CPU (fp8 weight-only included,
through the dequantizing path), so it is ready for a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[3] / "bench" / "gpu_llama.py"


@pytest.mark.slow
def test_gpu_llama_bench_tiny(tmp_path: Path) -> None:
    out = tmp_path / "llama.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--tiny", "--fp8", "on", "--runs", "2", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and [c["label"] for c in results["cases"]] == ["fp32", "fp8 weights"]
    for case in results["cases"]:
        for mode in ("batch1_greedy", "batch1_sampled"):
            assert case[mode]["decode_tok_s"] > 0 and case[mode]["ttft_ms"] > 0
        conc = case["concurrent4"]
        assert conc["total_tok_s"] > 0 and conc["batch"] == 4


@pytest.mark.slow
def test_gpu_llama_bench_fp8_only(tmp_path: Path) -> None:
    """--fp8 only: the fp8 case alone, so the two cases fit two short device calls."""
    out = tmp_path / "llama.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--tiny", "--fp8", "only", "--runs", "1", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [c["label"] for c in results["cases"]] == ["fp8 weights"]
    assert results["cases"][0]["concurrent4"]["batch"] == 4
