"""Weights resolution: local paths, http(s) downloads from a real local server
(ranged parallel chunks, tar extraction, integrity checks, cache), Hugging Face ids."""

import hashlib
import http.server
import io
import json
import os
import re
import tarfile
import threading
import time

import pytest

from cogkit import progress as lines
from cogkit.ml import weights as W


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        srv = self.server
        name = self.path.split("?")[0].lstrip("/")
        data = srv.files.get(name)
        srv.requests.append((name, self.headers.get("Range")))
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        rng = self.headers.get("Range")
        m = re.match(r"bytes=(\d+)-(\d+)", rng or "")
        if m and srv.ranges:
            start, end = int(m.group(1)), min(int(m.group(2)), len(data) - 1)
            body = data[start : end + 1]
            if srv.short_chunks and start > 0:
                body = body[: len(body) // 2]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.requests, srv.ranges, srv.short_chunks = {}, [], True, False
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _safetensors(n_floats=300_000) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save({"w": np.arange(n_floats, dtype=np.float32)})


def _tar(files: dict[str, bytes], top: str | None = "model") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_local_path_used_in_place(tmp_path):
    (tmp_path / "m").mkdir()
    assert W.resolve_weights(str(tmp_path / "m")) == tmp_path / "m"


def test_precedence_arg_env_default(tmp_path, monkeypatch):
    a, b, c = (tmp_path / n for n in "abc")
    for p in (a, b, c):
        p.mkdir()
    monkeypatch.setenv("COG_WEIGHTS", str(b))
    assert W.resolve_weights(a, default=str(c)) == a
    assert W.resolve_weights(None, default=str(c)) == b
    monkeypatch.delenv("COG_WEIGHTS")
    assert W.resolve_weights(None, default=str(c)) == c
    with pytest.raises(W.WeightsError, match="none given"):
        W.resolve_weights(None)


def test_nonsense_source(tmp_path):
    with pytest.raises(W.WeightsError, match="not an existing local path"):
        W.resolve_weights(str(tmp_path / "missing" / "dir"))


def test_parallel_ranged_download_of_safetensors(server, tmp_path, capsys):
    data = _safetensors()
    server.files["w/model.safetensors"] = data
    url = f"{server.url}/w/model.safetensors?sig=secret"
    path = W.download_url(url, tmp_path / "cache", chunk_size=256 * 1024, workers=4)
    assert path.name == "model.safetensors" and path.read_bytes() == data
    ranges = [r for _, r in server.requests if r and r != "bytes=0-0"]
    assert len(ranges) == -(-len(data) // (256 * 1024)) >= 4  # one request per chunk
    err = capsys.readouterr().err
    progress = [lines.parse_progress(x) for x in err.splitlines() if x.startswith("[progress]")]
    assert progress and progress[-1][1] == progress[-1][2]  # ends at total
    assert "secret" not in err  # signed query strings are not logged
    # second call: cache hit, no request made
    n = len(server.requests)
    again = W.download_url(url, tmp_path / "cache")
    assert again == path and len(server.requests) == n
    assert "cache hit" in capsys.readouterr().err


def test_tar_is_extracted_to_its_top_folder(server, tmp_path):
    server.files["weights.tar"] = _tar({"model_index.json": b"{}", "unet/config.json": b"{\"a\": 1}"})
    path = W.resolve_weights(f"{server.url}/weights.tar", cache_dir=tmp_path)
    assert path.is_dir() and path.name == "model"
    assert json.loads((path / "unet" / "config.json").read_text()) == {"a": 1}


def test_flat_tar(server, tmp_path):
    server.files["flat.tar"] = _tar({"a.txt": b"x", "b.txt": b"y"}, top=None)
    path = W.resolve_weights(f"{server.url}/flat.tar", cache_dir=tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["a.txt", "b.txt"]


def test_no_range_support_streams(server, tmp_path):
    server.ranges = False
    data = _safetensors(100_000)
    server.files["x.safetensors"] = data
    path = W.download_url(f"{server.url}/x.safetensors", tmp_path, chunk_size=64 * 1024)
    assert path.read_bytes() == data


def test_sha256_checked(server, tmp_path):
    data = _safetensors(1000)
    server.files["s.safetensors"] = data
    good = hashlib.sha256(data).hexdigest()
    path = W.download_url(f"{server.url}/s.safetensors#sha256={good}", tmp_path / "ok")
    assert path.read_bytes() == data
    with pytest.raises(W.WeightsError, match="sha256 mismatch"):
        W.download_url(f"{server.url}/s.safetensors#sha256={'0' * 64}", tmp_path / "bad")
    assert not any((tmp_path / "bad").iterdir())  # nothing half-written left in the cache


def test_short_chunks_detected(server, tmp_path):
    server.short_chunks = True
    server.files["t.safetensors"] = _safetensors(200_000)
    with pytest.raises(W.WeightsError, match="short|truncated"):
        W.download_url(f"{server.url}/t.safetensors", tmp_path, chunk_size=128 * 1024, workers=2)
    assert not any(tmp_path.iterdir())


def test_corrupt_safetensors_and_tar(server, tmp_path):
    server.files["c.safetensors"] = b"\xff" * 64
    with pytest.raises(W.WeightsError, match="safetensors"):
        W.download_url(f"{server.url}/c.safetensors", tmp_path)
    server.files["c.tar"] = b"definitely not a tar" * 100
    with pytest.raises(W.WeightsError, match="not a valid tar"):
        W.download_url(f"{server.url}/c.tar", tmp_path)


def test_http_errors_fail_fast(server, tmp_path):
    with pytest.raises(W.WeightsError, match="HTTP 404"):
        W.download_url(f"{server.url}/missing.tar", tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(W.WeightsError, match="cannot download"):
        W.download_url("http://127.0.0.1:9/nothing.tar", tmp_path)  # port 9: nothing listens
    assert time.perf_counter() - t0 < 5


def test_hf_repo_offline_uncached_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(W.WeightsError, match="not in the local cache and HF_HUB_OFFLINE=1"):
        W.resolve_weights("stabilityai/stable-diffusion-xl-base-1.0")
    assert time.perf_counter() - t0 < 5


def test_hf_repo_from_prepopulated_cache(tmp_path, monkeypatch):
    """A hub cache laid out as huggingface_hub writes it (refs + snapshots) works offline."""
    import huggingface_hub.constants as C

    hub = tmp_path / "hub"
    repo = hub / "models--acme--tiny-model"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    (snap / "unet").mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (snap / "unet" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    path = W.resolve_weights("acme/tiny-model")
    assert path == snap and (path / "unet" / "config.json").exists()
    assert W.resolve_weights("hf://acme/tiny-model") == snap


def test_check_safetensors_truncated(tmp_path):
    p = tmp_path / "t.safetensors"
    p.write_bytes(_safetensors(1000)[:-10])
    with pytest.raises(W.WeightsError, match="truncated"):
        W.check_safetensors(p)
    W.check_safetensors(_write(tmp_path / "ok.safetensors", _safetensors(10)))


def _write(path, data):
    path.write_bytes(data)
    return path


def test_concurrent_downloads_share_cache(server, tmp_path):
    server.files["m.safetensors"] = _safetensors(200_000)
    results, errors = [], []

    def go():
        try:
            results.append(W.download_url(f"{server.url}/m.safetensors", tmp_path, chunk_size=128 * 1024))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [results[0].parent.name]  # no leftover temp folders
    assert os.path.getsize(results[0]) == len(server.files["m.safetensors"])


def test_diffusers_variant(tmp_path):
    for name in ("unet", "vae"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert W.diffusers_variant(tmp_path) == "fp16"
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert W.diffusers_variant(tmp_path) == "fp16"  # both stored: the fp16 copy is enough
    plain = tmp_path / "plain"
    (plain / "unet").mkdir(parents=True)
    (plain / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert W.diffusers_variant(plain) is None


def test_resolve_optional_extra(tmp_path, monkeypatch, capfd):
    root, elsewhere = tmp_path / "weights", tmp_path / "elsewhere"
    (root / "refiner").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.setenv("COGKIT_TEST_EXTRA", str(elsewhere))
    assert W.resolve_optional(root, "refiner", "COGKIT_TEST_EXTRA", "acme/refiner", tag="t") == root / "refiner"
    # not in the weights folder (or no weights folder): the environment variable, then the default
    assert W.resolve_optional(root, "lcm-lora", "COGKIT_TEST_EXTRA", "acme/lcm", tag="t") == elsewhere
    assert W.resolve_optional(None, "refiner", "COGKIT_TEST_EXTRA", "acme/refiner", tag="t") == elsewhere
    monkeypatch.delenv("COGKIT_TEST_EXTRA")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capfd.readouterr()
    assert W.resolve_optional(root, "lcm-lora", "COGKIT_TEST_EXTRA", "acme/no-such-lcm", tag="t") is None
    err = capfd.readouterr().err
    assert "[t] lcm-lora: not available (weights: Hugging Face repo 'acme/no-such-lcm' is not in the local cache" in err
    assert W.resolve_optional(root, "x", "COGKIT_TEST_EXTRA", "acme/x", tag="t", label="the x") is None
    assert "[t] the x: not available" in capfd.readouterr().err
