"""Input files (data URLs, http URLs from a local server, plain paths) and output naming."""

import asyncio
import base64
import functools
import http.server
import threading
import time
from pathlib import Path

import pytest

from cogkit import files
from cogkit.openapi import Interface
from cogkit.worker import inputs as worker_inputs
from cogkit.worker.protocol import FileInput

DOC = {
    "components": {
        "schemas": {
            "Input": {
                "properties": {
                    "image": {"type": "string", "format": "uri"},
                    "files": {"type": "array", "items": {"type": "string", "format": "uri"}},
                    "text": {"type": "string"},
                }
            }
        }
    }
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/slow"):
            time.sleep(3)
        super().do_GET()


@pytest.fixture()
def server(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "photo.png").write_bytes(b"\x89PNG fake")
    (root / "my file.txt").write_text("hello")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _prepare(inputs: dict, workdir: Path) -> dict:
    return asyncio.run(worker_inputs.prepare_inputs(inputs, Interface.of(DOC).file_inputs, workdir))


def test_data_url_and_http_inputs(server: str, tmp_path: Path) -> None:
    png = "data:image/png;base64," + base64.b64encode(b"abc").decode()
    out = _prepare({"image": png, "files": [f"{server}/photo.png", f"{server}/my%20file.txt", "data:,plain%20text"], "text": "http://x"}, tmp_path)
    img = out["image"]
    assert isinstance(img, FileInput) and img.kind == "data" and Path(img.path).read_bytes() == b"abc"
    assert img.path.endswith("file.png")
    a, b, c = out["files"]
    assert a.kind == "http" and Path(a.path).name == "photo.png" and Path(a.path).read_bytes() == b"\x89PNG fake"
    assert Path(b.path).name == "my file.txt" and Path(b.path).read_text() == "hello"
    assert Path(c.path).read_bytes() == b"plain text"
    assert out["text"] == "http://x"  # a str input that looks like a URL is never fetched


def test_http_error_and_other_schemes(server: str, tmp_path: Path) -> None:
    with pytest.raises(files.InputFileError, match=r"^404 Client Error: .* for url: http://127\.0\.0\.1:\d+/missing\.png$"):
        _prepare({"image": f"{server}/missing.png"}, tmp_path)
    # other schemes are refused, naming the input (Cog passes them on as paths that fail in predict)
    with pytest.raises(files.InputFileError, match=r"^file: URLs are not allowed") as info:
        _prepare({"image": "file:///etc/passwd"}, tmp_path)
    assert info.value.loc == ["image"]
    with pytest.raises(files.InputFileError, match=r"^file: URLs are not allowed") as info:
        _prepare({"files": ["/local/path.png", "file:///etc/passwd"]}, tmp_path)
    assert info.value.loc == ["files", 1] and info.value.field == "files.1"
    # a plain path or another scheme is passed through, never dereferenced, as Cog 0.23.1 does
    out = _prepare({"files": ["/local/path.png", "ftp://host/x.png"]}, tmp_path)
    assert [f.kind for f in out["files"]] == ["local", "local"]


def test_a_failed_download_stops_the_others(server: str, tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(files.InputFileError, match="404"):
            await worker_inputs.prepare_inputs({"image": f"{server}/missing.png", "files": [f"{server}/slow/photo.png"]}, Interface.of(DOC).file_inputs, tmp_path)
        # the slow download was canceled, not left running into a folder about to be removed
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    asyncio.run(main())


def test_unparseable_and_unreachable_urls_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(files.InputFileError, match="could not fetch"):
        _prepare({"image": "http://exa\u0000mple..com/x.png"}, tmp_path)
    with pytest.raises(files.InputFileError, match="could not fetch"):
        _prepare({"image": "http://127.0.0.1:9/x.png"}, tmp_path)  # nothing listens on port 9


def test_size_cap_and_timeout(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_INPUT_BYTES", 4)
    with pytest.raises(files.InputFileError, match="larger than the 4-byte"):
        _prepare({"image": f"{server}/photo.png"}, tmp_path)
    with pytest.raises(files.InputFileError, match="larger than"):
        _prepare({"image": "data:;base64," + base64.b64encode(b"12345").decode()}, tmp_path)
    monkeypatch.setattr(files, "MAX_INPUT_BYTES", 1 << 20)
    monkeypatch.setattr(files, "FETCH_TIMEOUT", 0.5)
    with pytest.raises(files.InputFileError, match="timed out"):
        _prepare({"image": f"{server}/slow/photo.png"}, tmp_path)


def test_urlpath_fetches_under_the_same_limits(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cog.types.URLPath (the SDK's blocking fetch) shares the input download's rules, and
    works from inside a running event loop (an async predictor)."""
    from cogkit import URLPath

    path = URLPath(f"{server}/photo.png", "photo.png").convert()
    assert path.read_bytes() == b"\x89PNG fake" and path.suffix == ".png"

    async def inside_a_loop() -> bytes:
        return URLPath(f"{server}/my%20file.txt", "my file.txt").convert().read_bytes()

    assert asyncio.run(inside_a_loop()) == b"hello"
    with pytest.raises(files.InputFileError, match="^404 Client Error"):
        URLPath(f"{server}/missing.png", "missing.png").convert()
    with pytest.raises(files.InputFileError, match="only http, https and data URLs"):
        files.fetch_to("file:///etc/passwd", tmp_path / "x")
    monkeypatch.setattr(files, "MAX_INPUT_BYTES", 4)
    with pytest.raises(files.InputFileError, match="larger than the 4-byte"):
        URLPath(f"{server}/photo.png", "photo.png").convert()


def test_bad_data_url(tmp_path: Path) -> None:
    with pytest.raises(files.InputFileError, match="invalid data URL"):
        _prepare({"image": "data:image/png;base64"}, tmp_path)


def test_filenames_follow_cog_rules() -> None:
    assert files.filename_from_url("http://h/a/b%20c+d.png?x=1") == "b c d.png"
    assert files.safe_filename("../../etc/passwd") == ".._.._etc_passwd"
    long = files.safe_filename("x" * 300 + ".safetensors")
    assert len(long.encode()) <= 200 and long.endswith("~.safetensors")
    assert files.safe_filename("") == "file"


def test_output_files_named_after_output_keys_stay_in_the_output_folder(tmp_path: Path) -> None:
    from cogkit.cli.outputs import write_files
    from cogkit.worker.protocol import FileOutput

    src = tmp_path / "src.txt"
    src.write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    shown, written = write_files({"x/../../../escaped": FileOutput(str(src)), "a/b": [FileOutput(str(src))]}, str(out))
    assert [p.parent for p in written] == [out, out]
    assert shown == {"x/../../../escaped": str(out / "output.x_.._.._.._escaped.txt"), "a/b": [str(out / "output.a_b.0.txt")]}


def test_redact_url_drops_userinfo_query_and_fragment() -> None:
    assert files.redact_url("https://user:pw@host:8443/a/b.bin?X-Amz-Signature=s#frag") == "https://host:8443/a/b.bin"
    assert files.redact_url("https://host/plain.bin") == "https://host/plain.bin"
    assert files.redact_url("http://[::1") == "<an unreadable URL>"
