"""A webhook receiver for the hub tests: a real HTTP server in a thread that records every
request (headers and the raw body) and can answer the first N requests with 500."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer.lock:
                    failing = outer.fail_first > 0
                    if failing:
                        outer.fail_first -= 1
                    outer.calls.append({"headers": dict(self.headers.items()), "body": body.decode(),
                                        "path": self.path, "failed": failing})
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> list[dict[str, Any]]:
        """The calls answered 200, with their JSON bodies parsed."""
        with self.lock:
            return [dict(c, json=json.loads(c["body"])) for c in self.calls if not c["failed"]]

    def wait_for(self, predicate, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.delivered()
            if predicate(calls):
                return calls
            time.sleep(0.05)
        raise AssertionError(f"webhooks not as expected after {timeout} s: {[c['json'].get('status') for c in self.delivered()]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
