"""The server's own HTTP/1.1 layer (cogkit/server/http.py) at the socket level:
keep-alive, pipelining, HTTP/1.0, chunked bodies, Expect: 100-continue, bad requests,
oversized bodies, and coglet's parse errors."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.server.harness import FIXTURES, ServerProcess, copy_fixture


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    project = copy_fixture(FIXTURES / "robust", tmp_path_factory.mktemp("http"))
    srv = ServerProcess(project, env={"COG_PREDICT_TYPE_STUB": "sleeper.py:Predictor"})
    yield srv
    srv.stop()


def _exchange(port: int, raw: bytes, *, until_close: bool = True, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        if not until_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def _post(body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (
        b"POST /predictions HTTP/" + version + b"\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        raw = rest[n:]
    return out


def test_pipelined_requests_are_answered_in_order(server: ServerProcess) -> None:
    body = json.dumps({"input": {"text": "a"}}).encode()
    raw = _post(body) + b"GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n" + _post(body.replace(b'"a"', b'"b"'), b"Connection: close\r\n")
    responses = _responses(_exchange(server.port, raw))
    assert [r[0] for r in responses] == [200, 200, 200]
    assert json.loads(responses[0][2])["output"] == "a"
    assert json.loads(responses[1][2])["status"] in ("READY", "BUSY")
    assert json.loads(responses[2][2])["output"] == "b"
    assert responses[2][1]["connection"] == "close"


def test_http_10_gets_an_answer_and_the_connection_closes(server: ServerProcess) -> None:
    raw = _exchange(server.port, _post(json.dumps({"input": {"text": "old"}}).encode(), version=b"1.0"))
    (status, headers, body), = _responses(raw)
    assert status == 200 and json.loads(body)["output"] == "old"
    assert headers["connection"] == "close"


def test_chunked_request_body(server: ServerProcess) -> None:
    body = json.dumps({"input": {"text": "chunky"}}).encode()
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (5, body[:5], len(body) - 5, body[5:])
    raw = (
        b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked
    )
    (status, _, out), = _responses(_exchange(server.port, raw))
    assert status == 200 and json.loads(out)["output"] == "chunky"


def test_expect_100_continue(server: ServerProcess) -> None:
    body = json.dumps({"input": {"text": "x" * 5000}}).encode()
    raw = _exchange(server.port, _post(body, b"Expect: 100-continue\r\nConnection: close\r\n"))
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    (status, _, out), = _responses(raw[len(b"HTTP/1.1 100 Continue\r\n\r\n"):])
    assert status == 200 and json.loads(out)["output"] == "x" * 5000


def test_malformed_request_is_400_and_closed(server: ServerProcess) -> None:
    raw = _exchange(server.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")


def test_oversized_body_is_413(server: ServerProcess) -> None:
    raw = _exchange(
        server.port,
        b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 209715200\r\n\r\n{",
        until_close=False,
    )
    assert raw.startswith(b"HTTP/1.1 413 ")


def test_coglet_error_texts(server: ServerProcess) -> None:
    c = server.client
    r = c.post("/predictions", content=b"notjson", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.text) == (400, "Failed to parse the request body as JSON: expected ident at line 1 column 2")
    r = c.post("/predictions", content=b"", headers={"Content-Type": "application/json"})
    assert r.text == "Failed to parse the request body as JSON: EOF while parsing a value at line 1 column 0"
    r = c.post("/predictions", content=b"{}", headers={"Content-Type": "text/plain"})
    assert (r.status_code, r.text) == (415, "Expected request with `Content-Type: application/json`")
    r = c.get("/predictions/abc")
    assert (r.status_code, r.headers["allow"], r.content) == (405, "PUT", b"")
    assert c.get("/nope").status_code == 404
    assert (c.post("/predictions/abc/cancel").status_code, c.post("/predictions/abc/cancel").json()) == (404, {})


def test_head_is_answered_like_get_without_a_body(server: ServerProcess) -> None:
    raw = _exchange(server.port, b"HEAD /health-check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and rest == b""
    length = int(_responses(head + b"\r\n\r\n")[0][1]["content-length"])
    assert length == len(server.client.get("/health-check").content)
    raw = _exchange(server.port, b"HEAD /predictions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 405 ")


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(_responses(head + b"\r\n\r\n")[0][1]["content-length"])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


def test_keep_alive_connection_serves_many_requests(server: ServerProcess) -> None:
    body = json.dumps({"input": {"text": "k"}}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        for _ in range(20):
            s.sendall(_post(body))
            (status, _, out), = _responses(_read_response(s))
            assert status == 200 and json.loads(out)["output"] == "k"


def test_project_layout_is_untouched(server: ServerProcess) -> None:
    # the server keeps its temporary files out of the project folder
    assert not list(Path(server.project).glob("in-*"))
