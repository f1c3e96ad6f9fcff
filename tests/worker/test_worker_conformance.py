"""The 8 Cog 0.23.1 conformance fixtures, run through the Worker and compared with the goldens.

Each golden sync prediction (HTTP 200) is replayed: its input is prepared the way the
server does (cogkit.files turns data/http URLs into FileInput markers), run through a
real Worker, and the terminal status, output (file outputs as data URLs) and error text
(without the server's "Prediction failed: " prefixes) must match what Cog returned.
Request validation (422s) and uploads belong to other tests.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cogkit import files
from cogkit.openapi import Interface
from cogkit.worker.inputs import prepare_inputs
from cogkit.worker.protocol import Canceled, Done, Failed, FileOutput
from tests import conformance_fixtures
from tests.worker.test_worker import Worker, collect, predict, rest, run, started, wait_for_log

FIXTURES = [pytest.param(n, marks=pytest.mark.slow) if n == "slow" else n for n in conformance_fixtures.NAMES]
_ERROR_PREFIX = "Prediction failed: Prediction failed: "
# Served for the golden's http-URL file inputs (content fixed by the capture script).
INPUT_TXT = b"hello from the anchor file server\n"


def _golden_sync_exchanges(conformance_dir: Path, name: str) -> list[dict[str, Any]]:
    doc = json.loads((conformance_dir / "golden" / f"{name}.exchanges.json").read_text())
    out = []
    for run_ in doc["runs"]:
        if run_["variant"] != "main":
            continue
        for ex in run_["exchanges"]:
            req = ex.get("request") or {}
            body = req.get("body")
            if (
                req.get("method") in ("POST", "PUT")
                and req.get("path", "").startswith("/predictions")
                and not req.get("headers", {}).get("Prefer")
                and isinstance(body, dict)
                and "input" in body
                and ex["response"]["status"] == 200
                and ex["response"]["body"].get("status") != "canceled"  # needs a cancel: tested below
                and not str(ex["response"]["body"].get("error", "")).startswith("Input validation error")
            ):
                out.append(ex)
    return out


def _normalise(value: Any) -> Any:
    """FileOutput -> data URL, long data URLs shortened the way the goldens are."""
    if isinstance(value, FileOutput):
        url = files.data_url(value.path)
        if len(url) > 300:
            head, _, b64 = url.partition(",")
            raw = base64.b64decode(b64)
            return f"{head},<base64 of {len(raw)} bytes sha256:{hashlib.sha256(raw).hexdigest()[:16]}>"
        return url
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


class _Files(http.server.BaseHTTPRequestHandler):
    content: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802
        data = self.content.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def file_server(conformance_dir: Path) -> Iterator[int]:
    png_url = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAD0lEQVR4nGNgaPgPQhAKACX2Bf2gcp/LAAAAAElFTkSuQmCC"
    _Files.content = {"/files/input.txt": INPUT_TXT, "/files/input.png": files.decode_data_url(png_url)[1]}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize("name", FIXTURES)
def test_golden_predictions_through_the_worker(
    name: str, conformance_dir: Path, file_server: int, tmp_path: Path
) -> None:
    exchanges = _golden_sync_exchanges(conformance_dir, name)
    assert exchanges, f"no golden sync predictions for {name}"

    async def main() -> None:
        w = await started("predict.py:Predictor", project_dir=conformance_dir / "predictors" / name)
        assert w.state == "READY", w.setup.logs
        assert w.loaded is not None
        known = set(w.loaded.schema["components"]["schemas"]["Input"]["properties"])
        for i, ex in enumerate(exchanges):
            raw = json.dumps(ex["request"]["body"]["input"]).replace("<receiver_port>", str(file_server))
            inputs = {k: v for k, v in json.loads(raw).items() if k in known}  # the server drops unknown keys
            prepared = await prepare_inputs(inputs, Interface.of(w.loaded.schema).file_inputs, tmp_path / f"in{i}")
            r = await predict(w, f"{name}-{i}", prepared)
            want = ex["response"]["body"]
            label = f"{name}/{ex['name']}"
            status = {Done: "succeeded", Failed: "failed", Canceled: "canceled"}[type(r.terminal)]
            assert status == want["status"], (label, r.terminal, r.logs)
            if isinstance(r.terminal, Done):
                output = r.outputs if w.loaded.output_iterator else r.terminal.output
                assert _normalise(output) == want["output"], label
            if isinstance(r.terminal, Failed):
                assert want["error"].startswith(_ERROR_PREFIX)
                assert r.terminal.error == want["error"][len(_ERROR_PREFIX) :], label
            if want.get("logs"):
                assert r.logs == want["logs"], label
        await w.shutdown()

    run(main(), timeout=60)


def test_predict_raises_logs_its_output_and_traceback(conformance_dir: Path) -> None:
    async def main() -> None:
        w = await started("predict.py:Predictor", project_dir=conformance_dir / "predictors" / "predict_raises")
        r = await predict(w, "x", {"text": "boom"})
        assert isinstance(r.terminal, Failed)
        assert r.logs.startswith("about to raise\nTraceback (most recent call last):\n")
        assert r.logs.endswith("ValueError: predict failed on purpose: boom\n")
        await w.shutdown()

    run(main())


@pytest.mark.slow
def test_slow_fixture_setup_logs_and_cancel(conformance_dir: Path) -> None:
    async def main() -> None:
        w = Worker("predict.py:Predictor", conformance_dir / "predictors" / "slow")
        await w.start()
        assert w.state == "STARTING"  # setup (2 s) runs after start() returned
        setup = await w.wait_ready()
        assert setup.logs == "slow setup: starting\nslow setup: done\n"
        h = await w.predict("slow-1", {"seconds": 20})
        seen: list[Any] = []
        await wait_for_log(h, "working 0", seen)
        assert await w.cancel("slow-1")
        r = await rest(h, seen)
        assert isinstance(r.terminal, Canceled)
        r2 = await collect(await w.predict("slow-2", {"seconds": 0.15}))
        assert isinstance(r2.terminal, Done) and r2.terminal.output == "slept 0.15"
        await w.shutdown()

    run(main())
