"""Output files from cogkit.handover.output_dir() are cleaned up by the runtime after use;
files a predictor returns from anywhere else are left alone."""

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from cogkit.handover import is_handed_over, output_dir
from tests.fixtures.server.harness import ServerProcess, copy_fixture

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "handover"


def _paths(logs: str) -> tuple[Path, Path]:
    made = re.search(r"handed-over: (\S+)", logs).group(1)  # type: ignore[union-attr]
    kept = re.search(r"kept: (\S+)", logs).group(1)  # type: ignore[union-attr]
    return Path(made), Path(kept)


def test_is_handed_over() -> None:
    folder = output_dir()
    try:
        assert is_handed_over(os.path.join(folder, "a.png"))
        assert not is_handed_over(os.path.join(folder, "sub", "a.png"))
        assert not is_handed_over("/tmp/cogkit-out-elsewhere/../x.png")
        assert not is_handed_over("/etc/passwd")
    finally:
        os.rmdir(folder)


def test_server_deletes_handed_over_outputs_after_encoding(tmp_path: Path) -> None:
    project = copy_fixture(FIXTURE, tmp_path)
    server = ServerProcess(project)
    try:
        for _ in range(3):
            body = httpx.post(f"{server.url}/predictions", json={"input": {"text": "abc"}}, timeout=30).json()
            assert body["status"] == "succeeded", body
            assert body["output"][0] == "data:text/plain;base64,YWJj"
            made, kept = _paths(body["logs"])
            assert not made.exists() and not made.parent.exists()  # file and its folder gone
            assert kept.read_text() == "mine"  # the predictor's own file stays
    finally:
        server.stop()


def test_cli_moves_handed_over_outputs(tmp_path: Path) -> None:
    project = copy_fixture(FIXTURE, tmp_path)
    r = subprocess.run([sys.executable, "-m", "cogkit", "predict", "-i", "text=abc"], cwd=project,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    made, kept = _paths(r.stderr)
    assert (project / "output.0.txt").read_text() == "abc"
    assert (project / "output.1.txt").read_text() == "mine"
    assert not made.parent.exists() and kept.exists()
