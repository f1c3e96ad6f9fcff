"""The official npm client (``replicate`` 1.4.0, tests/hub/node), unchanged but for
``baseUrl``, against a real hub on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).with_name("node")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def npm_results(hub):
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "replicate").is_dir():
        pytest.fail("Node.js and the pinned npm client are needed: apt-get install nodejs npm, then "
                    "npm ci --prefix tests/hub/node (scripts/test.sh does both)")
    proc = subprocess.run([node, "client_check.mjs", hub.url, hub.token], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def value(results: dict, name: str):
    result = results[name]
    assert result["ok"], f"{name}: {result['error']}"
    return result["value"]


def test_run_text(npm_results):
    assert value(npm_results, "run_text") == "hello npm"


def test_run_file_output_saves_like_the_quickstart(npm_results):
    v = value(npm_results, "run_file_quickstart")
    assert v["head"] == "89504e470d0a1a0a"  # a PNG file on disk, not a URL string
    assert v["url"].startswith("data:image/png;base64") and v["type"] == "image/png"


def test_run_list_of_files(npm_results):
    assert value(npm_results, "run_list_of_files") == ["file number 0\n", "file number 1\n"]


def test_run_token_list(npm_results):
    assert value(npm_results, "run_token_list") == ["tok0 ", "tok1 ", "tok2 "]


def test_stream(npm_results):
    events = value(npm_results, "stream")
    assert [d for e, d in events if e == "output"] == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert events[-1] == ["done", "{}"]


def test_predictions_create_wait_get_list(npm_results):
    v = value(npm_results, "predictions")
    assert v["waited"] == [f"hello n{i}" for i in range(5)] and v["got"] == "hello n0"
    assert v["pages"] >= 2 and v["order"] and v["unique"]


def test_cancel(npm_results):
    assert value(npm_results, "cancel") == "canceled"


def test_timed_out_wait_is_starting_and_run_polls_on(npm_results):
    assert value(npm_results, "wait_timeout_starting") == {"status": "starting", "out": "slept 1.5"}


def test_models_and_versions(npm_results):
    v = value(npm_results, "models")
    assert v == {"name": "hello", "count": 1, "same": True, "byVersion": "hello v", "search": ["hello"]}


def test_buffer_input_is_uploaded_through_files(npm_results):
    assert value(npm_results, "buffer_input") == "9:npm bytes"


def test_files(npm_results):
    assert value(npm_results, "files") == {"size": 10, "metadata": {"purpose": "test"}, "listed": True,
                                           "out": "10:hello file"}


def test_progress_from_logs(npm_results):
    seen = value(npm_results, "progress")
    assert seen and seen[-1] == "4/4"


def test_webhook_validates_with_the_clients_function(npm_results):
    v = value(npm_results, "webhook")
    assert v["valid"] is True and v["status"] == "succeeded"
    assert v["tampered"] is not True


def test_wrong_token(npm_results):
    assert value(npm_results, "wrong_token") == {"name": "ApiError", "status": 401, "mentions": True}


def test_invalid_input(npm_results):
    assert value(npm_results, "invalid_input") == {"status": 422, "mentions": True}


def test_account_and_hardware(npm_results):
    assert value(npm_results, "account_hardware")["first"] == "cpu"
