"""The curl examples of README.md's "Serving over HTTP" section work as written.

The section's shell block runs in a fresh folder (it starts with ``cogkit init``), with
two substitutions so it can run anywhere: a free port instead of 5000 and a local
webhook receiver instead of example.com."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.server.harness import REPO, Receiver, free_port

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def _section_script() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Serving over HTTP", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "no bash block in the Serving over HTTP section"
    return block.group(1)


def test_readme_curl_examples_work(tmp_path: Path) -> None:
    recv = Receiver()
    try:
        port = free_port()
        script = _section_script()
        assert "localhost:5000" in script and "https://example.com/webhook" in script
        script = script.replace("5000", str(port)).replace("https://example.com/webhook", recv.url("/webhook/readme"))
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        proc = subprocess.run(
            ["bash", "-c", "set -e\n" + script + "\nwait\n"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout
        bodies = [json.loads(line) for line in re.findall(r"^\{.*\}$", out.replace("}{", "}\n{"), re.M)]
        sync = next(b for b in bodies if b.get("status") == "succeeded" and b.get("input", {}).get("text") == "hello")
        assert sync["output"].startswith("data:text/plain;base64,")
        invalid = next(b for b in bodies if "detail" in b)
        assert invalid["detail"][0]["loc"] == ["body", "input", "repeat"]
        assert any(b.get("status") == "starting" for b in bodies)  # the async 202
        assert any(b.get("id") == "my-id" and b.get("status") == "succeeded" for b in bodies)
        assert any(b.get("openapi") == "3.0.2" for b in bodies)
        assert any(b.get("cog_version") == "0.23.1" for b in bodies)
        hooks = recv.wait_terminal("readme", timeout=10)
        assert hooks[-1]["status"] == "succeeded"
    finally:
        recv.close()
