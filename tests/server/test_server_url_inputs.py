"""URL inputs on a real ``cogkit serve``, from a 127.0.0.1 origin that serves a slow, a huge
(streamed, never stored) and a redirecting URL: each failing download fails its prediction
with the reason (Cog 0.23.1's answer), the server stays READY, and nothing is left on disk."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.server.robust_fixtures import project, receiver, start  # noqa: F401

pytestmark = pytest.mark.timeout(180)

READER = (
    "from cogkit import BasePredictor, Path\n"
    "class Predictor(BasePredictor):\n"
    "    def predict(self, f: Path) -> str:\n"
    "        return f.name + ':' + str(f.stat().st_size)\n"
)
HUGE = 64 << 20  # bytes the huge URL would send; the cap in these tests is 1 MiB


class Origin(http.server.BaseHTTPRequestHandler):
    served: dict[str, int] = {}  # bytes sent per path

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/ok/photo.png":
            self._send(b"\x89PNG" + b"x" * 96)
        elif path == "/huge.bin":  # no Content-Length: the cap must stop the stream itself
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"z" * 65536
            sent = 0
            try:
                while sent < HUGE:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    sent += len(block)
                    Origin.served[path] = sent
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client hung up, as it should
        elif path == "/slow.bin":  # headers at once, then a byte every 3 s
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"s")
                    self.wfile.flush()
                    time.sleep(3)
            except OSError:
                pass
        elif path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif path == "/to-ok":
            self._redirect("/ok/photo.png")
        elif path == "/loop":
            self._redirect("/loop")
        elif path == "/..%2F..%2F.hidden":
            self._send(b"secret")
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture()
def origin() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def reader(start, project: Path, tmp_path: Path):  # noqa: F811
    (project / "reader.py").write_text(READER)
    tmp = tmp_path / "server-tmp"
    tmp.mkdir()
    srv = start("reader.py:Predictor", env={"COGKIT_MAX_INPUT_BYTES": str(1 << 20), "COGKIT_INPUT_FETCH_TIMEOUT": "1",
                                            "COGKIT_INPUT_FETCH_DEADLINE": "5", "TMPDIR": str(tmp)})
    srv.tmp = tmp
    return srv


def _refused(srv, value: str) -> str:
    """Cog 0.23.1's answer to a file input that cannot be fetched: 200, failed, the reason."""
    r = srv.predict({"f": value})
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    assert srv.health()["status"] == "READY"
    return r.json()["error"]


def _stored_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def test_good_and_redirected_urls_download(reader, origin):
    assert reader.predict({"f": f"{origin}/ok/photo.png"}).json()["output"] == "photo.png:100"
    assert reader.predict({"f": f"{origin}/to-ok"}).json()["output"] == "to-ok:100"  # named from the URL asked for


def test_a_huge_url_is_cut_off_at_the_cap_and_not_kept(reader, origin):
    msg = _refused(reader, f"{origin}/huge.bin")
    assert "larger than the 1048576-byte input limit" in msg
    assert Origin.served["/huge.bin"] < HUGE  # the stream was cut off, not read to the end
    assert _stored_bytes(reader.tmp) == 0  # and what had arrived is gone


def test_a_slow_url_times_out(reader, origin):
    t0 = time.monotonic()
    msg = _refused(reader, f"{origin}/slow.bin")
    assert "timed out" in msg or "did not arrive within" in msg, msg
    assert time.monotonic() - t0 < 30


def test_redirects_only_to_http_and_not_for_ever(reader, origin):
    assert "redirects to a URL that is not http(s)" in _refused(reader, f"{origin}/to-file")
    assert "more than 5 redirects" in _refused(reader, f"{origin}/loop")


def test_file_urls_are_refused(reader):
    assert "file: URLs are not allowed" in _refused(reader, "file:///etc/passwd")


def test_unsafe_names_from_the_url_are_made_safe(reader, origin):
    out = reader.predict({"f": f"{origin}/..%2F..%2F.hidden"}).json()["output"]
    name = out.split(":")[0]
    assert "/" not in name and not name.startswith(".") and name.endswith("hidden"), out


def test_an_async_prediction_with_a_failing_url_fails_naming_the_input(reader, origin, receiver):  # noqa: F811
    # accepted before the download (respond-async): it ends failed, with the same reason
    r = reader.client.put("/predictions/async-url", json={"input": {"f": f"{origin}/missing.png"},
                                                          "webhook": receiver.url("/webhook/a")},
                          headers={"Prefer": "respond-async"})
    assert r.status_code == 202
    final = receiver.wait_terminal("a")[-1]
    assert final["status"] == "failed"
    assert final["error"].startswith("Input validation error: 404 Client Error"), final["error"]
