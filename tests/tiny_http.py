"""A tiny real HTTP file server for tests that fetch over http(s) (LoRAs, weights)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Iterator


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep stderr to what the code under test logs
        pass


@contextlib.contextmanager
def serve_folder(folder: str | os.PathLike[str]) -> Iterator[str]:
    """Serve the files of ``folder`` on a free 127.0.0.1 port; yields the base URL
    (``http://127.0.0.1:<port>``) and stops the server afterwards."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=os.fspath(folder)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
