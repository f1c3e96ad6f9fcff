"""README.md's "The web playground" section runs as written: the shell block in a fresh
folder (a free port instead of 5000), then the page it points at opened in Chromium and
run once, while the block's server is still up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.fixtures.server.harness import REPO, free_port

MARK = "README-BLOCK-DONE"


def _block() -> str:
    section = (REPO / "README.md").read_text().split("## The web playground", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```bash\n(.*?)```", section, re.S)
    assert found, "no bash block in the web playground section"
    return found.group(1)


def test_readme_playground_block(tmp_path: Path, open_page) -> None:
    port = free_port()
    script = _block()
    assert "localhost:5000" in script
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen(["bash", "-c", f"set -e\n{script.replace('5000', str(port))}\necho {MARK}\nwait\n"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == MARK:
                break
        out = "".join(lines)
        assert MARK in out, out
        assert re.search(r"<title>.+</title>", out), out
        page = open_page(f"http://localhost:{port}/")
        page.wait_for_selector("#form")
        page.fill("#input-text", "from the README")
        page.click("#run")
        page.wait_for_selector("#status.succeeded")
        assert page.locator("#output").inner_text().strip() != ""
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
