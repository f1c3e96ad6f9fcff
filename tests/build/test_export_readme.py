"""README.md's "Deploying on Kubernetes" commands run as written and print the manifests
they promise."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_readme_export_commands():
    section = (REPO / "README.md").read_text().split("## Deploying on Kubernetes", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```bash\n(.*?)```", section, re.S)
    kinds = []
    for line in block.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "cogkit"
        proc = subprocess.run([sys.executable, "-m", "cogkit", *argv[1:]], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        kinds.append([doc["kind"] for doc in yaml.safe_load_all(proc.stdout)])
    assert kinds == [["InferenceService"], ["Deployment", "Service"]]
