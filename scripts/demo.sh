#!/usr/bin/env bash
# The main job, on a fresh machine: install cogkit with the model extras into .venv, then run
# one prediction of the repository's default model (FLUX.1-schnell, cog.yaml at the top) through
# the real diffusers pipeline -- offline on a CPU, so with tiny random weights built locally
# (the picture is noise; the code path is the production one). Writes output.0.webp.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0   # the CPU build; an unpinned torch pulls GBs of CUDA wheels
.venv/bin/pip install -q -e '.[models]'   # the tiny-weights builder is in the package (cogkit.ml.tiny): no test extras
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
.venv/bin/python models/flux/make_tiny_weights.py .cache/tiny-flux
.venv/bin/cogkit predict --weights .cache/tiny-flux -i prompt="a red fox in the snow" -i seed=42 -o output.webp
