"""cogkit.ml.lora: where a LoRA comes from (local file or folder, http(s) URL through
the weights cache, Hugging Face forms) and its content-hash adapter name. The
models' own loading is tested with them (test_flux_lora.py, test_sdxl_predictor.py)."""

from __future__ import annotations

import shutil

import pytest

from cogkit.ml.errors import InputError
from cogkit.ml.lora import _HF_URL, LoraError, adapter_name, content_hash, resolve_lora_file
from tests.tiny_http import serve_folder

# a minimal valid safetensors file: an empty header ({} padded to 8 bytes), no tensors
EMPTY_SAFETENSORS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "


def test_hugging_face_url_forms() -> None:
    assert _HF_URL.match("huggingface.co/owner/repo").groups() == ("owner/repo", None)
    assert _HF_URL.match("https://huggingface.co/owner/repo/style.safetensors").groups() == ("owner/repo", "style.safetensors")
    assert _HF_URL.match("https://huggingface.co/owner/repo/resolve/main/x.safetensors") is None  # a plain URL


def test_local_files_and_folders(tmp_path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (one / "style.safetensors").write_bytes(EMPTY_SAFETENSORS)
    assert resolve_lora_file(str(one)) == one / "style.safetensors"
    assert resolve_lora_file(f"  {one / 'style.safetensors'} ") == one / "style.safetensors"
    several = tmp_path / "several"
    several.mkdir()
    for name in ("a.safetensors", "pytorch_lora_weights.safetensors"):
        (several / name).write_bytes(EMPTY_SAFETENSORS)
    assert resolve_lora_file(str(several)).name == "pytorch_lora_weights.safetensors"  # the diffusers name wins
    (several / "pytorch_lora_weights.safetensors").unlink()
    (several / "b.safetensors").write_bytes(EMPTY_SAFETENSORS)
    with pytest.raises(LoraError, match=r"holds several .safetensors files \(a.safetensors, b.safetensors\)"):
        resolve_lora_file(str(several))
    (tmp_path / "x.bin").write_bytes(b"x")
    with pytest.raises(LoraError, match="^lora_weights: x.bin is not a .safetensors file"):
        resolve_lora_file(str(tmp_path / "x.bin"))
    with pytest.raises(LoraError, match="^lora_weights: .* is not an existing local path"):
        resolve_lora_file(str(tmp_path / "missing.safetensors"))
    with pytest.raises(LoraError, match="^lora_weights: empty"):
        resolve_lora_file(" ")
    assert issubclass(LoraError, InputError)


def test_hub_forms_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in ("someone/no-such-lora", "huggingface.co/someone/no-such-lora"):
        with pytest.raises(LoraError, match="^lora_weights: Hugging Face repo 'someone/no-such-lora' is not in the local cache"):
            resolve_lora_file(spec)


def test_url_downloaded_once_and_named_by_content(tmp_path, monkeypatch, capfd) -> None:
    served = tmp_path / "served"
    served.mkdir()
    local = tmp_path / "mine.safetensors"
    local.write_bytes(EMPTY_SAFETENSORS)
    shutil.copy(local, served / "style.safetensors")
    monkeypatch.setenv("COGKIT_WEIGHTS_CACHE", str(tmp_path / "cache"))
    with serve_folder(served) as base:
        url = f"{base}/style.safetensors?token=secret"
        got = resolve_lora_file(url)
        err = capfd.readouterr().err
        assert "downloaded style.safetensors" in err and "secret" not in err
        assert got.name == "style.safetensors" and str(tmp_path / "cache") in str(got)
        assert resolve_lora_file(url) == got and "cache hit" in capfd.readouterr().err
        assert content_hash(got) == content_hash(local) and adapter_name(got) == adapter_name(local)
        assert adapter_name(local).startswith("lora_") and len(adapter_name(local)) == 5 + 16
        with pytest.raises(LoraError, match="^lora_weights: .*answered HTTP 404"):
            resolve_lora_file(url.replace("style", "missing"))
    # a changed file under the same path is a different LoRA
    local.write_bytes(b"\x10" + EMPTY_SAFETENSORS[1:] + b" " * 8)  # a 16-byte header: other bytes, other size
    assert adapter_name(local) != adapter_name(got)
