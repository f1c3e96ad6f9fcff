"""cog.yaml ``weights:`` staged by cogkit build: local, file://, http(s) (a real server on
127.0.0.1, with the cache and the limits) and hf:// (a real Hugging Face cache layout
on disk, read by huggingface_hub with no network); include/exclude; path traversal
refused; one COPY layer per entry, before the code."""

from __future__ import annotations

import http.server
import io
import os
import re
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogkit.build import weights_download
from cogkit.build.builders import BuildError
from cogkit.build.managed_weights import check_target, safe_relative, selected, stage_managed_weights
from cogkit.build.pipeline import BuildOptions, prepare_context
from cogkit.config import load_config

PREDICT_PY = "from cog import BasePredictor\n\nclass Predictor(BasePredictor):\n    def predict(self) -> str:\n        return 'x'\n"


class _Origin(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    hits: list[tuple[str, int]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Origin

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path in ("/trickle", "/no-length"):
            self._without_limits(path)
            return
        if path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        body = self.server.files.get(path)
        if body is None:
            self.server.hits.append((path, 404))
            self.send_error(404)
            return
        etag = f'"{hash(body) & 0xffffffff:x}"'
        if self.headers.get("If-None-Match") == etag:
            self.server.hits.append((path, 304))
            self.send_response(304)
            self.end_headers()
            return
        self.server.hits.append((path, 200))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)

    def _without_limits(self, path: str) -> None:
        """/trickle: a byte every 0.2 s (never a read timeout); /no-length: 3 MiB with no
        Content-Length (the connection's end delimits it)."""
        self.send_response(200)
        if path == "/trickle":
            self.send_header("Content-Length", "100")
        self.end_headers()
        try:
            if path == "/no-length":
                self.wfile.write(b"n" * (3 << 20))
                return
            for _ in range(100):
                self.wfile.write(b"t")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the client gave up, as it should
            pass


@pytest.fixture
def origin() -> Iterator[_Origin]:
    server = _Origin(("127.0.0.1", 0), _Handler)
    server.files, server.hits = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(origin: _Origin, path: str) -> str:
    return f"http://127.0.0.1:{origin.server_address[1]}{path}"


def _project(root: Path, weights_yaml: str, files: dict[str, bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "predict.py").write_text(PREDICT_PY)
    (root / "cog.yaml").write_text('build:\n  python_version: "3.11"\nrun: "predict.py:Predictor"\nweights:\n'
                                   + textwrap.indent(textwrap.dedent(weights_yaml), "  "))
    for rel, data in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _stage(project: Path, dest: Path) -> list:
    return stage_managed_weights(load_config(project), dest)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_local_file_and_http_sources_land_at_target_in_their_own_layer(tmp_path: Path, origin: _Origin) -> None:
    origin.files["/models/lora.safetensors"] = b"L" * 3000
    project = _project(tmp_path / "p", f"""
        - name: base
          target: /src/weights/base
          source:
            - uri: weights/
              include: ["*.bin", "tokenizer/*"]
              exclude: ["*-draft.bin"]
            - uri: {_url(origin, "/models/lora.safetensors")}
        - name: extra
          target: /opt/extra
          source: {{uri: notes.txt}}
        """, {"weights/model.bin": b"M" * 100, "weights/model-draft.bin": b"D", "weights/README.md": b"r",
              "weights/tokenizer/vocab.json": b"{}", "notes.txt": b"n"})
    messages: list[str] = []
    prepare_context(load_config(project), tmp_path / "ctx", BuildOptions(), log=messages.append)
    ctx = tmp_path / "ctx"
    assert _tree(ctx / "managed-weights" / "base") == {
        "lora.safetensors": b"L" * 3000, "model.bin": b"M" * 100, "tokenizer/vocab.json": b"{}"}
    assert _tree(ctx / "managed-weights" / "extra") == {"notes.txt": b"n"}
    # The files a weights entry took are in its layer only; the rest of the folder stays code.
    src = _tree(ctx / "src")
    assert "weights/model.bin" not in src and "notes.txt" not in src and "weights/tokenizer/vocab.json" not in src
    assert src["weights/model-draft.bin"] == b"D" and src["weights/README.md"] == b"r"
    # A local file is hard-linked into the context, never copied.
    assert (ctx / "managed-weights/base/model.bin").stat().st_ino == (project / "weights/model.bin").stat().st_ino
    dockerfile = (ctx / "Dockerfile").read_text()
    copies = [ln for ln in dockerfile.splitlines() if ln.startswith("COPY ")]
    assert copies[-3:] == ['COPY ["managed-weights/base/", "/src/weights/base/"]',
                           'COPY ["managed-weights/extra/", "/opt/extra/"]', "COPY src/ /src/"]
    assert any(m == "weights base: 3 file(s), 0.0 MB -> /src/weights/base (own layer)" for m in messages)
    assert not any("not fetched" in m for m in messages)


def test_http_download_is_cached_and_revalidated(tmp_path: Path, origin: _Origin) -> None:
    origin.files["/w.bin"] = b"v1" * 1000
    project = _project(tmp_path / "p", f"- name: w\n  target: /w\n  source: {{uri: {_url(origin, '/w.bin')}}}\n")
    _stage(project, tmp_path / "a")
    _stage(project, tmp_path / "b")  # unchanged: a 304, nothing downloaded again
    assert origin.hits == [("/w.bin", 200), ("/w.bin", 304)]
    assert (tmp_path / "b/managed-weights/w/w.bin").read_bytes() == b"v1" * 1000
    origin.files["/w.bin"] = b"v2"
    _stage(project, tmp_path / "c")  # changed on the server: fetched again
    assert origin.hits[-1] == ("/w.bin", 200)
    assert (tmp_path / "c/managed-weights/w/w.bin").read_bytes() == b"v2"


def test_http_failures_name_the_field_and_the_reason(tmp_path: Path, origin: _Origin,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    origin.files["/big.bin"] = b"x" * 5000
    cases = {
        "/missing.bin": r"weights\[0\]\.source\.uri: could not fetch http://127\.0\.0\.1:\d+/missing\.bin: "
                        r"404 Client Error: Not Found",
        "/to-file": r"it redirects to a URL that is not http\(s\)",
        "/big.bin": r"/big\.bin is larger than the 4096-byte limit \(COGKIT_MAX_WEIGHTS_BYTES\)",
    }
    monkeypatch.setenv("COGKIT_MAX_WEIGHTS_BYTES", "4096")
    for i, (path, pattern) in enumerate(cases.items()):
        project = _project(tmp_path / f"p{i}", f"- name: w\n  target: /w\n  source: {{uri: {_url(origin, path)}}}\n")
        with pytest.raises(BuildError, match=pattern):
            _stage(project, tmp_path / f"ctx{i}")


def _partials(project: Path) -> list[Path]:
    return list((project / ".cog").rglob("*.partial"))


def test_a_trickling_server_is_stopped_by_the_deadline(tmp_path: Path, origin: _Origin,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A byte every 0.2 s never trips the read timeout; only the whole-download deadline stops it.
    monkeypatch.setenv("COGKIT_WEIGHTS_FETCH_DEADLINE", "1")
    project = _project(tmp_path / "p", f"- name: w\n  target: /w\n  source: {{uri: {_url(origin, '/trickle')}}}\n")
    started = time.monotonic()
    with pytest.raises(BuildError, match=r"weights\[0\]\.source\.uri: could not fetch .*/trickle: .*did not arrive "
                                         r"within 1 s \(COGKIT_WEIGHTS_FETCH_DEADLINE\)"):
        _stage(project, tmp_path / "ctx")
    assert time.monotonic() - started < 8
    assert (project / ".cog/weights-cache").is_dir() and not _partials(project)


def test_a_body_without_content_length_is_capped_mid_stream(tmp_path: Path, origin: _Origin,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 MiB with no Content-Length against a 1.5 MiB cap: refused after the first MiB is written.
    monkeypatch.setenv("COGKIT_MAX_WEIGHTS_BYTES", str(3 << 19))
    project = _project(tmp_path / "p", f"- name: w\n  target: /w\n  source: {{uri: {_url(origin, '/no-length')}}}\n")
    with pytest.raises(BuildError, match=r"weights\[0\]\.source\.uri: .*/no-length is larger than the 1572864-byte "
                                         r"limit \(COGKIT_MAX_WEIGHTS_BYTES\)"):
        _stage(project, tmp_path / "ctx")
    assert (project / ".cog/weights-cache").is_dir() and not _partials(project)


def test_a_url_named_meta_json_keeps_its_data_apart_from_the_record(tmp_path: Path, origin: _Origin) -> None:
    origin.files["/meta.json"] = b'{"weights": true}'
    project = _project(tmp_path / "p", f"- name: w\n  target: /w\n  source: {{uri: {_url(origin, '/meta.json')}}}\n")
    _stage(project, tmp_path / "a")
    _stage(project, tmp_path / "b")  # the record survived: revalidated, not fetched again
    assert origin.hits == [("/meta.json", 200), ("/meta.json", 304)]
    assert (tmp_path / "b/managed-weights/w/meta.json").read_bytes() == b'{"weights": true}'


def test_credentials_in_urls_stay_out_of_messages_records_and_labels(tmp_path: Path, origin: _Origin) -> None:
    origin.files["/w.bin"] = b"w"
    port = origin.server_address[1]
    good = f"http://user:hunter2@127.0.0.1:{port}/w.bin?X-Amz-Signature=s3cret"
    project = _project(tmp_path / "p", f"- name: w\n  target: /w\n  source: {{uri: '{good}'}}\n")
    prepare_context(load_config(project), tmp_path / "ctx", BuildOptions(), log=lambda m: None)
    on_disk = b"".join(p.read_bytes() for p in (project / ".cog/weights-cache").rglob("meta.json"))
    assert b"127.0.0.1" in on_disk and b"hunter2" not in on_disk and b"s3cret" not in on_disk
    dockerfile = (tmp_path / "ctx" / "Dockerfile").read_text()
    assert "run.cog.config" in dockerfile and "hunter2" not in dockerfile and "s3cret" not in dockerfile
    bad = _project(tmp_path / "q", f"- name: w\n  target: /w\n  source: {{uri: '{good.replace('w.bin', 'gone')}'}}\n")
    with pytest.raises(BuildError) as err:
        _stage(bad, tmp_path / "ctx2")
    assert f"could not fetch http://127.0.0.1:{port}/gone: 404" in str(err.value)
    assert "hunter2" not in str(err.value) and "s3cret" not in str(err.value)


@pytest.mark.parametrize("name, value", [("COGKIT_MAX_WEIGHTS_BYTES", "20GB"),
                                         ("COGKIT_WEIGHTS_FETCH_DEADLINE", "-1")])
def test_bad_limit_settings_are_clear_errors(tmp_path: Path, origin: _Origin, monkeypatch: pytest.MonkeyPatch,
                                            name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    project = _project(tmp_path / "p", f"- name: w\n  target: /w\n  source: {{uri: {_url(origin, '/w.bin')}}}\n")
    with pytest.raises(BuildError, match=re.escape(f"weights[0].source.uri: could not fetch") + ".*"
                       + re.escape(f"{name}={value!r} must be")):
        _stage(project, tmp_path / "ctx")


def test_disk_errors_name_the_entry_and_the_path(tmp_path: Path, origin: _Origin) -> None:
    origin.files["/w.bin"] = b"w"
    project = _project(tmp_path / "p", f"- name: w\n  target: /w\n  source: {{uri: {_url(origin, '/w.bin')}}}\n")
    (project / ".cog").mkdir()
    (project / ".cog" / "weights-cache").write_text("a file where the cache folder goes")
    with pytest.raises(BuildError, match=r"weights\[0\]\.source\.uri: .*cannot create .*weights-cache"):
        _stage(project, tmp_path / "ctx")
    local = _project(tmp_path / "l", "- name: w\n  target: /w\n  source: {uri: w.bin}\n", {"w.bin": b"w"})
    (tmp_path / "ctx-l" / "managed-weights").mkdir(parents=True)
    (tmp_path / "ctx-l" / "managed-weights" / "w").write_text("a file where the folder goes")
    with pytest.raises(BuildError, match=r"weights\[0\]\.source: cannot stage .*w\.bin as .*managed-weights/w/w\.bin"):
        _stage(local, tmp_path / "ctx-l")


def test_the_project_as_a_source_skips_git_cog_and_the_context(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", "- name: w\n  target: /w\n  source: {uri: '.', include: ['*.bin']}\n",
                       {"model.bin": b"m", ".git/objects/x.bin": b"g", ".cog/weights-cache/old.bin": b"c"})
    _stage(project, project / ".cog" / "build")
    _stage(project, project / "ctx")  # a context inside the project (not under .cog) is not walked either
    assert _tree(project / "ctx/managed-weights/w") == {"model.bin": b"m"}


def test_an_empty_source_list_is_refused(tmp_path: Path) -> None:
    from cogkit.exceptions import ConfigError

    project = _project(tmp_path / "p", "- name: w\n  target: /w\n  source: []\n")
    with pytest.raises(ConfigError, match=re.escape("weights[0].source") + ".*empty"):
        load_config(project)


@pytest.mark.parametrize("target, message", [
    ("/src/../etc", "must be an absolute path in the container without '..'"),
    ("/", "the root folder cannot be a weights target"),
])
def test_targets_that_escape_are_refused(tmp_path: Path, target: str, message: str) -> None:
    project = _project(tmp_path / "p", f"- name: w\n  target: {target!r}\n  source: {{uri: w.bin}}\n", {"w.bin": b"w"})
    with pytest.raises(BuildError, match=re.escape(f"weights[0].target: ") + ".*" + re.escape(message)):
        _stage(project, tmp_path / "ctx")


def test_sources_outside_the_rules_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"o")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "w.bin").write_bytes(b"w")
    cases = [
        ("../outside.bin", "is outside the project; use file:///absolute/path"),
        ("ftp://example.com/w.bin", "ftp:// is not a weights source"),
        ("file://host/x", "a file:// URL names a path on this machine"),
        ("missing/", "no such file or folder"),
        ("hf://owner/repo/../../x", "the path in the repository would escape it"),
        ("linked/", "is a symlinked folder, which is not followed"),
    ]
    for i, (uri, message) in enumerate(cases):
        project = _project(tmp_path / f"p{i}", f"- name: w\n  target: /w\n  source: {{uri: {uri!r}}}\n")
        (project / "linked").mkdir()
        (project / "linked" / "sub").symlink_to(tmp_path / "real")
        with pytest.raises(BuildError, match=re.escape(message)):
            _stage(project, tmp_path / f"ctx{i}")
    # file:// and absolute paths name this machine's files, anywhere.
    project = _project(tmp_path / "abs", f"- name: w\n  target: /w\n  source:\n    - uri: {outside.as_uri()}\n"
                                         f"    - uri: {tmp_path / 'real'}\n")
    _stage(project, tmp_path / "ctx-abs")
    assert _tree(tmp_path / "ctx-abs/managed-weights/w") == {"outside.bin": b"o", "w.bin": b"w"}


def test_entry_conflicts_and_empty_matches_are_refused(tmp_path: Path) -> None:
    files = {"a/w.bin": b"1", "b/w.bin": b"2"}
    cases = [
        ("- name: x\n  target: /w\n  source: {uri: a}\n- name: y\n  target: /w/\n  source: {uri: b}\n",
         "weights[1].target: /w is already the target of weights 'x'"),
        ("- name: x\n  target: /w\n  source: [{uri: a}, {uri: b}]\n",
         "weights[0].source[1]: 'w.bin' also comes from another source of weights 'x'"),
        ("- name: x\n  target: /w\n  source: {uri: a, include: ['*.safetensors']}\n",
         "weights[0].source: no file of 'a' matched include/exclude"),
    ]
    for i, (yaml_text, message) in enumerate(cases):
        project = _project(tmp_path / f"p{i}", yaml_text, files)
        with pytest.raises(BuildError, match=re.escape(message)):
            _stage(project, tmp_path / f"ctx{i}")


def test_symlinked_files_are_staged_as_their_contents(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", "- name: w\n  target: /w\n  source: {uri: ws}\n", {"blob": b"B"})
    (project / "ws").mkdir()
    (project / "ws" / "model.bin").symlink_to(project / "blob")
    _stage(project, tmp_path / "ctx")
    staged = tmp_path / "ctx/managed-weights/w/model.bin"
    assert not staged.is_symlink() and staged.read_bytes() == b"B"


def _hf_cache(root: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """The Hugging Face hub cache layout: blobs, a snapshot of symlinks to them, refs/main."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    for rel, data in files.items():
        blob = repo / "blobs" / f"{abs(hash(data)):x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_hf_sources_come_from_the_local_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hf"
    _hf_cache(cache, "acme/tiny", {"config.json": b"{}", "unet/model.safetensors": b"U", "notes.md": b"#"})
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    project = _project(tmp_path / "p", """
        - name: tiny
          target: /src/tiny
          source: {uri: "hf://acme/tiny", exclude: ["*.md"]}
        - name: unet
          target: /src/unet
          source: {uri: "hf://acme/tiny/unet"}
        """)
    _stage(project, tmp_path / "ctx")
    assert _tree(tmp_path / "ctx/managed-weights/tiny") == {"config.json": b"{}", "unet/model.safetensors": b"U"}
    assert _tree(tmp_path / "ctx/managed-weights/unet") == {"model.safetensors": b"U"}
    assert not (tmp_path / "ctx/managed-weights/tiny/config.json").is_symlink()

    missing = _project(tmp_path / "q", "- name: m\n  target: /m\n  source: {uri: 'hf://acme/absent'}\n")
    with pytest.raises(BuildError, match=r"weights\[0\]\.source\.uri: acme/absent is not in the local Hugging Face "
                                         r"cache .*`hf download acme/absent`"):
        _stage(missing, tmp_path / "ctx-missing")


@pytest.mark.parametrize("rel, ok", [("a/b.bin", True), ("../x", False), ("a/../../x", False), ("/etc/x", False),
                                     ("", False), ("a//b", False), ("a\\b", False), ("./a", False)])
def test_safe_relative(rel: str, ok: bool) -> None:
    assert safe_relative(rel) is ok


def test_check_target_normalizes() -> None:
    assert check_target("/src/weights/", "k") == "/src/weights"
    assert check_target("/a//b/./c", "k") == "/a/b/c"


@pytest.mark.parametrize("rel, include, exclude, keep", [
    ("unet/model.bin", [], [], True),
    ("unet/model.bin", ["*.bin"], [], True),  # a pattern without / matches the name too
    ("unet/model.bin", ["unet/*"], [], True),
    ("vae/model.bin", ["unet/*"], [], False),
    ("unet/model.bin", ["*.bin"], ["unet/*"], False),  # exclude wins
    ("model.fp16.bin", [], ["*.fp16.*"], False),
])
def test_include_exclude(rel: str, include: list[str], exclude: list[str], keep: bool) -> None:
    assert selected(rel, include, exclude) is keep


def test_progress_bar_draws_on_a_terminal() -> None:
    from rich.console import Console

    out = io.StringIO()
    bar = weights_download.Progress("model.bin", live=True, console=Console(file=out, force_terminal=True, width=100))
    bar.total(2 << 20)
    bar.advance(1 << 20)
    bar.close()
    assert "model.bin" in out.getvalue()
    silent = weights_download.Progress("model.bin", live=False)
    silent.advance(1)
    silent.close()
