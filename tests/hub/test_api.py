"""The hub's HTTP API directly (httpx): error shapes and status codes for client mistakes,
the shapes the clients depend on (reference §11), limits and capability URLs."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

pytestmark = pytest.mark.timeout(300)

PROBLEM = "application/problem+json"


@pytest.fixture()
def api(hub):
    with hub.client() as c:
        yield c


def _problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and isinstance(body["detail"], str)
    return body


def test_every_v1_route_needs_the_token(hub):
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/predictions"), ("GET", "/v1/predictions"),
                         ("GET", "/v1/files"), ("GET", "/v1/webhooks/default/secret"), ("GET", "/v1/account")]:
        r = httpx.request(method, hub.url + path)
        body = _problem(r, 401)
        assert body["title"] == "Unauthenticated"
        r = httpx.request(method, hub.url + path, headers={"Authorization": "Bearer nope"})
        _problem(r, 401)
    # the older "Token" scheme works too
    assert httpx.get(hub.url + "/v1/account", headers={"Authorization": f"Token {hub.token}"}).status_code == 200


def test_token_never_echoed(hub):
    r = httpx.get(hub.url + "/v1/models", headers={"Authorization": "Bearer my-secret-guess"})
    assert "my-secret-guess" not in r.text and hub.token not in r.text


def test_malformed_json_is_400(api):
    _problem(api.post("/v1/models/acme/hello/predictions", content=b"{not json"), 400)


def test_not_an_object_is_422(api):
    _problem(api.post("/v1/models/acme/hello/predictions", content=b"[1, 2]"), 422)


def test_unknown_model_and_version_are_404(api):
    _problem(api.post("/v1/models/acme/nope/predictions", json={"input": {}}), 404)
    _problem(api.get("/v1/models/acme/nope"), 404)
    _problem(api.post("/v1/predictions", json={"version": "0" * 64, "input": {}}), 404)
    _problem(api.get("/v1/predictions/doesnotexist"), 404)
    _problem(api.get("/v1/no/such/route"), 404)


def test_invalid_inputs_name_the_field_and_rule(api):
    body = _problem(api.post("/v1/models/acme/concat/predictions", json={"input": {"count": -1}}), 422)
    assert body["invalid_fields"][0]["field"] == "input.count"
    assert "minimum" in body["detail"]
    body = _problem(api.post("/v1/models/acme/filesize/predictions", json={"input": {}}), 422)
    assert body["invalid_fields"] == [{"type": "required", "field": "input.file", "description": "is required"}]
    body = _problem(api.post("/v1/models/acme/hello/predictions", json={"input": {"txt": "x"}}), 422)
    assert body["invalid_fields"][0]["type"] == "additional_property_not_allowed" and "txt" in body["detail"]
    body = _problem(api.post("/v1/models/acme/hello/predictions", json={"input": {}, "surprise": 1}), 422)
    assert body["invalid_fields"][0]["field"] == "surprise"
    body = _problem(api.post("/v1/predictions", json={"input": {}}), 422)
    assert body["invalid_fields"][0]["field"] == "version"
    body = _problem(api.post("/v1/models/acme/hello/predictions",
                             json={"input": {"text": "x"}, "webhook": "ftp://example.com"}), 422)
    assert body["invalid_fields"][0]["field"] == "webhook"
    body = _problem(api.post("/v1/models/acme/hello/predictions",
                             json={"input": {"text": "x"}, "webhook_events_filter": ["begin"]}), 422)
    assert "begin" in body["detail"]


def test_file_inputs_by_url_are_checked_before_queueing(api):
    r = api.post("/v1/models/acme/filesize/predictions", json={"input": {"file": "file:///etc/passwd"}})
    assert "http(s) URL or a data: URL" in _problem(r, 422)["detail"]
    r = api.post("/v1/models/acme/filesize/predictions", json={"input": {"file": "http://127.0.0.1:1/nothing"}})
    body = _problem(r, 422)
    assert body["invalid_fields"][0]["type"] == "unreachable" and "input.file" in body["detail"]
    r = api.post("/v1/models/acme/filesize/predictions", json={"input": {"file": "data:text/plain;base64,@@@"}})
    _problem(r, 422)


def test_a_file_input_by_url_is_fetched_by_the_hub(api):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            data = b"served over http"
            self.send_response(200 if self.path == "/f.txt" else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        r = api.post("/v1/models/acme/filesize/predictions", json={"input": {"file": f"{base}/f.txt"}},
                     headers={"Prefer": "wait"})
        assert r.status_code == 201 and r.json()["output"] == "16:served over http"
        assert r.json()["input"] == {"file": f"{base}/f.txt"}  # echoed as sent
        r = api.post("/v1/models/acme/filesize/predictions", json={"input": {"file": f"{base}/missing"}})
        assert "404" in _problem(r, 422)["detail"]
    finally:
        server.shutdown()


def test_body_over_the_limit_is_413(hub):
    with hub.client() as c:
        r = c.post("/v1/models/acme/hello/predictions", content=b"x" * (33 << 20),
                   headers={"Content-Type": "application/json"})
    _problem(r, 413)


def test_prediction_shape_and_location(api):
    r = api.post("/v1/models/acme/hello/predictions", json={"input": {"text": "shape"}}, headers={"Prefer": "wait=5"})
    assert r.status_code == 201
    p = r.json()
    assert r.headers["location"] == p["urls"]["get"]
    assert p["model"] == "acme/hello" and len(p["version"]) == 64 and p["status"] == "succeeded"
    assert set(p["urls"]) == {"get", "cancel", "stream", "web"} and all(isinstance(v, str) for v in p["urls"].values())
    assert p["error"] is None and p["created_at"].endswith("Z") and p["completed_at"]
    assert p["metrics"]["predict_time"] >= 0 and p["metrics"]["total_time"] >= p["metrics"]["predict_time"]
    assert p["source"] == "api" and p["data_removed"] is False
    again = api.post(p["urls"]["cancel"])  # canceling a finished prediction changes nothing
    assert again.status_code == 200 and again.json()["status"] == "succeeded"


def test_list_pages_are_absolute_urls(api, hub):
    for i in range(4):
        api.post("/v1/models/acme/hello/predictions", json={"input": {"text": str(i)}})
    page = api.get("/v1/predictions").json()
    assert len(page["results"]) == 3 and page["previous"] is None
    assert page["next"].startswith(hub.url + "/v1/predictions?cursor=")
    nxt = api.get(page["next"]).json()
    assert nxt["previous"].startswith(hub.url + "/v1/predictions?cursor=")
    back = api.get(nxt["previous"]).json()
    assert [p["id"] for p in back["results"]] == [p["id"] for p in page["results"]]
    _problem(api.get("/v1/predictions", params={"cursor": "garbage!"}), 400)


def test_query_models_with_either_body(api):
    npm_style = api.request("QUERY", "/v1/models", content=json.dumps("concat"), headers={"Content-Type": "text/plain"})
    py_style = api.request("QUERY", "/v1/models", content="concat", headers={"Content-Type": "text/plain"})
    for r in (npm_style, py_style):
        assert r.status_code == 200 and [m["name"] for m in r.json()["results"]] == ["concat"]


def test_small_shapes(api):
    hw = api.get("/v1/hardware").json()
    assert isinstance(hw, list) and hw[0] == {"sku": "cpu", "name": "CPU"}
    key = api.get("/v1/webhooks/default/secret").json()["key"]
    prefix, _, b64 = key.partition("_")
    assert prefix == "whsec" and "_" not in b64 and len(base64.b64decode(b64, validate=True)) == 24
    acct = api.get("/v1/account").json()
    assert acct["type"] == "user" and isinstance(acct["name"], str)
    assert api.get("/v1/collections").json() == {"next": None, "previous": None, "results": []}


def test_get_with_json_content_type_and_no_body(api):
    # npm sends Content-Type: application/json on every GET
    r = api.get("/v1/models/acme/hello", headers={"Content-Type": "application/json"})
    assert r.status_code == 200


def test_deletes_answer_204(api):
    r = api.post("/v1/files", files={"content": ("a.bin", b"\x00\x01", "application/octet-stream")})
    assert r.status_code == 201
    fid = r.json()["id"]
    assert api.get(f"/v1/files/{fid}/download").content == b"\x00\x01"
    assert api.delete(f"/v1/files/{fid}").status_code == 204
    _problem(api.delete(f"/v1/files/{fid}"), 404)
    assert api.post("/v1/models", json={"owner": "acme", "name": "gone", "visibility": "public",
                                        "hardware": "cpu"}).status_code == 201
    _problem(api.post("/v1/models", json={"owner": "acme", "name": "gone", "visibility": "public",
                                          "hardware": "cpu"}), 409)
    assert api.delete("/v1/models/acme/gone").status_code == 204


def test_files_with_path_traversal_names_are_stored_safely(api, hub):
    r = api.post("/v1/files", files={"content": ("../../etc/evil.txt", b"x", "text/plain")})
    assert r.status_code == 201
    name = r.json()["name"]
    assert "/" not in name and "\\" not in name
    assert api.get(f"/v1/files/{r.json()['id']}/download").content == b"x"
    assert not list((hub.data_dir / "files").glob("*evil*"))  # stored under its id, never its name


def test_output_files_come_back_as_base64_data_uris(api):
    p = api.post("/v1/models/acme/image/predictions", json={"input": {}}, headers={"Prefer": "wait"}).json()
    head, _, data = p["output"].partition(",")
    assert head == "data:image/png;base64"
    assert base64.b64decode(data).startswith(b"\x89PNG")


def test_stream_of_a_failed_prediction(api):
    p = api.post("/v1/models/acme/raises/predictions", json={"input": {"text": "s"}}).json()
    r = httpx.get(p["urls"]["stream"], timeout=30)
    events = [block for block in r.text.split("\n\n") if block.strip()]
    names = [next(line[7:] for line in b.splitlines() if line.startswith("event: ")) for b in events]
    assert names[-2:] == ["error", "done"]
    assert all(b.startswith("id: ") for b in events)
    assert set(names) <= {"output", "logs", "error", "done"}
    assert "predict failed on purpose" in events[-2]


def test_unknown_stream_and_file_keys_are_404(hub):
    _problem(httpx.get(hub.url + "/stream/not-a-key"), 404)
    _problem(httpx.get(hub.url + "/files/aaaaaaaaaaaaaaaaaaaaaaaaaaaa/x.png"), 404)
    _problem(httpx.post(hub.url + "/internal/wrong/events/x", json={}), 404)


def test_web_page_shows_the_prediction_without_the_token(api):
    p = api.post("/v1/models/acme/hello/predictions", json={"input": {"text": "<b>web</b>"}},
                 headers={"Prefer": "wait"}).json()
    r = httpx.get(p["urls"]["web"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "hello &lt;b&gt;web&lt;/b&gt;" in r.text and "<b>web</b>" not in r.text  # escaped
    img = api.post("/v1/models/acme/image/predictions", json={"input": {}}, headers={"Prefer": "wait"}).json()
    assert '<img src="data:image/png;base64,' in httpx.get(img["urls"]["web"]).text


def test_cancel_after_cancels_at_the_deadline(api):
    r = api.post("/v1/models/acme/slow/predictions", json={"input": {"seconds": 20}}, headers={"Cancel-After": "1s"})
    assert r.status_code == 201 and r.json()["deadline"]
    pid = r.json()["id"]
    import time

    deadline = time.monotonic() + 30
    while api.get(f"/v1/predictions/{pid}").json()["status"] not in ("canceled", "failed", "succeeded"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert api.get(f"/v1/predictions/{pid}").json()["status"] == "canceled"  # never "aborted" (reference §5)
    r = api.post("/v1/models/acme/hello/predictions", json={"input": {"text": "x"}}, headers={"Cancel-After": "soon"})
    assert "Cancel-After" in _problem(r, 400)["detail"]
