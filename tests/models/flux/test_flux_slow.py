"""Slow FLUX checks: the one torch.compile test (tiny transformer on the CPU), the
predictor through `cogkit predict` with weights written by make_tiny_weights.py,
and bench/gpu_flux.py --tiny."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny_models import flux_fp8_cache, tiny_flux_schnell  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[3]
FLUX_DIR = REPO / "models" / "flux"
sys.path.insert(0, str(FLUX_DIR))

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("flux_fp8_cache")]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.update(extra)
    return env


@pytest.mark.timeout(900)
def test_go_fast_compiled_with_dynamic_sizes(tiny_flux_schnell, tmp_path, monkeypatch) -> None:
    """The only compile test in CI (a CPU compile of the tiny blocks takes 25-80 s):
    fp8 + regional compile gives the uncompiled fp8 numbers, and other sizes reuse the
    dynamic graph instead of recompiling per size."""
    import torch
    from flux_engine import FluxEngine, Request

    monkeypatch.setenv("COGKIT_COMPILE_CACHE", str(tmp_path / "compile"))
    monkeypatch.setenv("COGKIT_FLUX_COMPILE", "0")
    plain = FluxEngine(tiny_flux_schnell)
    monkeypatch.setenv("COGKIT_FLUX_COMPILE", "1")
    compiled = FluxEngine(tiny_flux_schnell, warmup="none")
    assert compiled.compiled and not plain.compiled

    def both(**kw):
        req = dict(prompt="a cat", megapixels="0.25", num_inference_steps=2, seed=4, go_fast=True, **kw)
        a = compiled.generate(Request(**req))
        b = plain.generate(Request(**req))
        for x, y in zip(a, b):
            assert x.size == y.size
            assert np.abs(np.asarray(x, dtype=np.int16) - np.asarray(y, dtype=np.int16)).max() <= 1

    both(aspect_ratio="1:1")
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    both(aspect_ratio="16:9")
    both(aspect_ratio="9:21")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # no recompile for new sizes
    # (Batches > 1 compile one more dynamic graph, warmed up at setup on a GPU; left out
    # here to keep this test to one compile.)


@pytest.mark.timeout(600)
def test_cogkit_predict_with_tiny_weights_from_the_script(tmp_path) -> None:
    weights = tmp_path / "tiny-flux"
    made = subprocess.run([sys.executable, str(FLUX_DIR / "make_tiny_weights.py"), str(weights)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert (weights / "model_index.json").is_file()
    cogkit = Path(sys.executable).parent / "cogkit"
    out = tmp_path / "out.webp"
    env = _env(COG_WEIGHTS=str(weights), COGKIT_FLUX_FP8_CACHE=str(tmp_path / "fp8"))
    run = subprocess.run([str(cogkit), "predict", "-i", "prompt=a red fox", "-i", "megapixels=0.25",
                          "-i", "num_outputs=2", "-i", "seed=7", "-o", str(out)],
                         cwd=FLUX_DIR, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout + run.stderr
    written = sorted(tmp_path.glob("out*.webp"))
    assert len(written) == 2, run.stdout + run.stderr
    for path in written:
        with Image.open(path) as img:
            assert img.format == "WEBP" and img.size == (512, 512)
    assert "FLUX.1-schnell" in run.stderr and "[progress] denoising" not in run.stdout

    bad = subprocess.run([str(cogkit), "predict", "-i", "prompt=a red fox", "-i", "num_inference_steps=9"],
                         cwd=FLUX_DIR, env=env, capture_output=True, text=True, timeout=400)
    assert bad.returncode != 0
    assert "num_inference_steps: FLUX.1-schnell runs 1 to 4 steps, got 9" in bad.stdout + bad.stderr


@pytest.mark.timeout(600)
def test_bench_runs_with_a_tiny_config(tmp_path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_flux.py"), "--tiny", "--no-compile", "--reps", "1",
         "--dev-steps", "4", "--size", "256", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        env=_env(), capture_output=True, text=True, timeout=550)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["cases"]) == {f"{v}/{m}" for v in ("schnell", "dev") for m in ("eager", "compiled", "fp8-compiled")}
    for case in result["cases"].values():
        assert case["median_s"] > 0 and case["it_per_s"] > 0
    assert result["cases"]["schnell/fp8-compiled"]["go_fast"]["fp8"] is True
    assert result["cases"]["schnell/compiled"]["go_fast"]["fp8"] is False
    assert result["boot_cold"]["fp8"] == "quantised" and result["boot_warm"]["fp8"] == "loaded"
    assert result["boot_warm"]["to_ready_s"] > 0


@pytest.mark.timeout(300)
def test_bench_budget_skips_cases_and_keeps_the_json(tmp_path) -> None:
    """--budget-s: no case starts once it is spent (a device slot is short); what was
    skipped, and why, is in the JSON."""
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_flux.py"), "--tiny", "--no-compile", "--budget-s", "0",
         "--workdir", str(tmp_path / "work"), "--json", str(out)],
        env=_env(), capture_output=True, text=True, timeout=250)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["cases"] == {f"{v}/{m}": {"skipped": "time budget"}
                               for v in ("schnell", "dev") for m in ("eager", "compiled", "fp8-compiled")}
    assert result["boot_skipped"] == "time budget" and "boot_cold" not in result
    assert not (tmp_path / "work" / "weights").exists()
    assert "budget of 0s spent: skipping mode eager" in run.stderr
