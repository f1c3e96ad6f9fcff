#!/usr/bin/env bash
# Install cogkit with everything its tests need into .venv, then run the whole suite.
# This is the test command README.md gives and .ci/run executes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first and pinned: the CPU wheel of 2.13.0; an unpinned torch pulls GBs of CUDA wheels.
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[models,hub,test]'
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
exec .venv/bin/python -m pytest -q "$@"
