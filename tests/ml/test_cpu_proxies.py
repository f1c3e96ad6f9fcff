"""The #17 CPU proxies in bench/ run end to end and end on their figure line (the figures
themselves are recorded in bench/RESULTS.md, not asserted here beyond what is exact)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def last_line(script: str, *args: str, timeout: int = 600) -> str:
    proc = subprocess.run([sys.executable, script, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_lora_swaps_recompile_nothing() -> None:
    # dynamo's graph count does not depend on the backend: "eager" skips inductor's minutes of codegen
    assert last_line("bench/lora_swap_recompiles.py", "--backend", "eager") == "recompiles after warm-up: 0"


@pytest.mark.slow
def test_llm_context_scaling_prints_its_ratio() -> None:
    line = last_line("bench/llm_context_scaling.py", "--rounds", "1")  # it checks the tokens against transformers
    assert line.startswith("decode step ratio 8192/256: ")
    float(line.rsplit(" ", 1)[1])
