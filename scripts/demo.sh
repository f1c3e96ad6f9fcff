#!/usr/bin/env bash
# The main job, on a fresh machine: install cogkit into .venv, then run one prediction of the
# repository's default model (cog.yaml at the top) and write the result to output.png.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e .
.venv/bin/cogkit predict -i start='#0f2027' -i end='#2c5364' -i width=512 -i height=256 -o output.png
echo "Wrote $(pwd)/output.png"
