"""bench/gpu_photomaker.py runs (tiny configs on the CPU, through the predictor's
engine) and refuses the full-size run without a GPU. Figures are not asserted; see
bench/RESULTS.md."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COGKIT_DEVICE": "cpu"}


def test_gpu_photomaker_tiny_runs_every_case(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "bench/gpu_photomaker.py", "--tiny", "--compile-backend", "eager", "--runs", "1",
         "--json", str(out)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    got = {(r["variant"], r["case"]) for r in res["runs"] if "median_ms" in r}
    assert got == {(v, f"128^2 30 steps CFG, {n} ID image(s)") for v in ("eager", "compiled") for n in (1, 4)}
    assert all(r["median_ms"] > 0 and r["it_per_s"] > 0 and r["prompt_id_ms"] > 0 for r in res["runs"])
    assert "PhotoMaker LoRA fused into 64 UNet layers" in proc.stdout
    assert "ID embedding used from step 8 of 30" in proc.stderr  # 20 % of 30 steps: merge after step 6
    assert "| compiled | 128^2 30 steps CFG, 4 ID image(s) |" in proc.stdout


def test_gpu_photomaker_full_size_refuses_without_gpu():
    proc = subprocess.run([sys.executable, "bench/gpu_photomaker.py"], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "needs a GPU" in proc.stdout
