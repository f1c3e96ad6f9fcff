"""README.md's "Scaling out" section runs as written: a Ray head on this machine, the hub on
it with ``--backend ray`` serving examples/gradient, one prediction over curl, then both
stopped (the ports are free ones instead of 6379 and 8000)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub.conftest import REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _section(title: str) -> str:
    return (REPO / "README.md").read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_readme_ray_section(tmp_path: Path) -> None:
    [script] = re.findall(r"```bash\n(.*?)```", _section("Scaling out"), re.S)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    script = script.replace("6379", str(free_port())).replace("8000", str(free_port()))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    env.pop("COGKIT_HUB_TOKEN", None)
    proc = subprocess.run(["bash", "-c", f"set -e\n{script}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    answer = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index('{"id"'):])[0]
    assert answer["status"] == "succeeded", answer
    assert answer["output"].startswith("data:image/png;base64,")
