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
.venv/bin/pip install -q -e '.[models,hub,ray,test]'
# SDXL's invisible watermark without its opencv-python requirement (the headless cv2 serves it; see pyproject)
.venv/bin/pip install -q --no-deps invisible-watermark==0.2.0
# The kserve package's client models check `cogkit export kserve` (tests/build/kserve_models_check.py).
# Its own venv: kserve pins protobuf < 7, which ray[serve] in .venv cannot take. The models need only
# six and the kubernetes client; --no-deps leaves out the model server's (numpy, pandas, grpcio-tools, ...).
[ -x .venv-kserve/bin/python ] || "$PY" -m venv .venv-kserve
.venv-kserve/bin/pip install -q kubernetes==37.0.3 six==1.17.0
.venv-kserve/bin/pip install -q --no-deps kserve==0.21.0
# cogkit hub tests: Node.js + npm and PostgreSQL from Debian (when root), the pinned npm client
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  bash scripts/install-hub-tools.sh
fi
if command -v npm >/dev/null; then
  npm ci --prefix tests/hub/node --no-audit --no-fund --loglevel=error >/dev/null
fi
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
exec .venv/bin/python -m pytest -q "$@"
