"""What the GPU benchmarks (bench/gpu_*.py) share.

Importing it puts the checkout first on sys.path (the benches run from a plain
checkout on the device machine) and keeps huggingface_hub offline (that machine has
no network; every bench builds random weights). Then:

* ``make_log(name)``: a ``log(msg)`` that prefixes the bench's name and the seconds
  since it started; ``log.start`` is that start (perf_counter).
* ``add_common_args(parser, runs=, runs_help=)``: the diffusion benches' options:
  --tiny, --no-compile, --compile-backend, --compile-mode, --budget-s, --runs, --json.
* ``plan_or_refuse(tiny, log)``: cogkit.ml.device's plan and the card's name, or None
  (with the reason logged) for a full-size run without CUDA.
* ``over_budget(log, budget_s, what)``: True (logged) once ``budget_s`` seconds are
  spent, so a run fits a short device slot.
* ``print_table(header, rows)``: a Markdown table for bench/RESULTS.md.
* ``write_json(path, results)``: the results file (--json), when a path is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class Log:
    def __init__(self, name: str, stream: Any = None) -> None:
        self.name, self.stream, self.start = name, stream, time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.start:6.1f}s] {msg}", file=self.stream or sys.stdout,
              flush=True)


def make_log(name: str, stream: Any = None) -> Log:
    """``stream``: default stdout (sys.stdout at call time)."""
    return Log(name, stream)


def add_common_args(parser: argparse.ArgumentParser, *, runs: int | None, runs_help: str) -> None:
    parser.add_argument("--tiny", action="store_true", help="tiny random configs (CPU smoke test)")
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no new case after this many seconds")
    parser.add_argument("--runs", type=int, default=runs, help=runs_help)
    parser.add_argument("--json", help="also write the results here")


def plan_or_refuse(tiny: bool, log: Callable[[str], None]) -> tuple[Any, str] | None:
    import torch

    from cogkit.ml.device import plan_device

    plan = plan_device()
    if plan.device != "cuda" and not tiny:
        log("no CUDA device: the full-size run needs a GPU (use --tiny for a CPU smoke test)")
        return None
    return plan, torch.cuda.get_device_name(0) if plan.device == "cuda" else "CPU"


def over_budget(log: Log, budget_s: float, what: str) -> bool:
    if time.perf_counter() - log.start <= budget_s:
        return False
    log(f"budget of {budget_s:.0f}s spent: skipping {what}")
    return True


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join("" if v is None else str(v) for v in row) + " |")


def write_json(path: str | None, results: Any) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
