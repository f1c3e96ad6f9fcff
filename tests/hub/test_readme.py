"""README.md's "A self-hosted Replicate" section runs as written: the hub serving
FLUX.1-schnell from models/flux with tiny weights, Replicate's Node.js quickstart (npm
client), the Python version and the curl call, each writing or returning a real WebP.

It runs in a temp folder that links the repository's models/ in, with a free port for 8000
and the pinned npm client (tests/hub/node) linked in for ``npm install``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub.conftest import REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _blocks(lang: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## A self-hosted Replicate", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def test_readme_hub_quickstarts(tmp_path: Path) -> None:
    node_modules = REPO / "tests" / "hub" / "node" / "node_modules"
    if not (node_modules / "replicate").is_dir():
        pytest.fail("the pinned npm client is missing: npm ci --prefix tests/hub/node (scripts/test.sh does it)")
    port = str(free_port())
    (tmp_path / "models").symlink_to(REPO / "models")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("COGKIT_HUB_TOKEN", None)
    subprocess.run([sys.executable, str(REPO / "models" / "flux" / "make_tiny_weights.py"), ".cache/tiny-flux"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    (tmp_path / "quickstart.mjs").write_text(_blocks("js")[0].replace("8000", port))
    (tmp_path / "quickstart.py").write_text(_blocks("python")[0].replace("8000", port))
    script = _blocks("bash")[0]
    assert "npm install replicate@1.4.0 >/dev/null" in script
    script = (script.replace("8000", port)
              .replace("npm install replicate@1.4.0 >/dev/null", f"ln -s {node_modules} node_modules"))
    proc = subprocess.run(["bash", "-c", f"set -e\n{script}\nls -l output_0.webp\nkill %1\nwait\n"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    webp = (tmp_path / "output_0.webp").read_bytes()
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    answer = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])[0]
    assert answer["status"] == "succeeded" and answer["model"] == "black-forest-labs/flux-schnell"
    assert answer["output"][0].startswith("data:image/webp;base64,")
