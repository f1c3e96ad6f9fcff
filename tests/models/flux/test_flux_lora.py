"""FLUX LoRAs on tiny random weights: load, scale, unload (bf16 path equal to
diffusers' own load_lora_weights + set_adapters), text-encoder LoRAs and the prompt
cache, merging into the go_fast (fp8) transformer, sources, caching by content."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from cogkit.ml.lora import LoraError, adapter_name, content_hash
from cogkit.ml.tiny.flux import build_flux_lora
from tests.tiny_http import serve_folder
from tests.tiny_models import (  # noqa: F401  (fixtures)
    flux_fp8_cache,
    tiny_flux_lora,
    tiny_flux_schnell,
    tiny_flux_te_lora,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "models" / "flux"))

pytestmark = pytest.mark.usefixtures("flux_fp8_cache")


@pytest.fixture(scope="module")
def engine(tiny_flux_schnell, flux_fp8_cache):
    from flux_engine import FluxEngine

    return FluxEngine(tiny_flux_schnell)


def run(engine, **kwargs) -> np.ndarray:
    from flux_engine import Request

    [img] = engine.generate(Request("a red cat", megapixels="0.25", seed=5, **kwargs))
    return np.asarray(img, dtype=np.int16)


def diffusers_with_lora(root: Path, lora: Path, scale: float) -> np.ndarray:
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(root)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora), adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[scale])
    img = pipe("a red cat", width=512, height=512, num_inference_steps=4, max_sequence_length=256,
               generator=torch.Generator().manual_seed(5)).images[0]
    return np.asarray(img, dtype=np.int16)


def biggest(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a - b).max())


@pytest.mark.parametrize("which", ["transformer", "with_text_encoder"])
def test_lora_load_scale_unload(engine, tiny_flux_schnell, tiny_flux_lora, tiny_flux_te_lora, which) -> None:
    lora = tiny_flux_lora if which == "transformer" else tiny_flux_te_lora
    base = run(engine, go_fast=False)
    full = run(engine, go_fast=False, lora_weights=str(lora), lora_scale=1.0)
    half = run(engine, go_fast=False, lora_weights=str(lora), lora_scale=0.5)
    assert biggest(full, diffusers_with_lora(tiny_flux_schnell, lora, 1.0)) <= 1
    assert biggest(half, diffusers_with_lora(tiny_flux_schnell, lora, 0.5)) <= 1
    assert np.abs(full - base).mean() > np.abs(half - base).mean() > 1  # the scale matters
    assert biggest(run(engine, go_fast=False), base) == 0  # unloaded: exactly the base model again
    assert engine.loras.active is None
    has_te = which == "with_text_encoder"
    name = adapter_name(lora)
    assert engine.loras.loaded[name] is has_te


def test_text_encoder_lora_changes_the_prompt_cache_key(engine, tiny_flux_te_lora, tiny_flux_lora) -> None:
    engine.loras.activate(str(tiny_flux_te_lora), 1.0)
    key_te = engine.loras.text_encoder_key()
    pooled_te = engine.encode("a prompt for the cache")[1]  # the LoRA is on CLIP, which gives the pooled part
    engine.loras.activate(str(tiny_flux_lora), 1.0)  # transformer-only: the plain embeddings
    assert engine.loras.text_encoder_key() is None
    pooled = engine.encode("a prompt for the cache")[1]
    engine.loras.activate(None)
    assert key_te is not None and not (pooled_te == pooled).all()
    assert (engine.encode("a prompt for the cache")[1] == pooled).all()


def test_go_fast_merges_the_lora_and_unmerges_it(engine, tiny_flux_lora) -> None:
    from cogkit.ml.fp8 import FP8Linear

    fast_base = run(engine, go_fast=True)
    eager = run(engine, go_fast=False, lora_weights=str(tiny_flux_lora), lora_scale=0.8)
    fast = run(engine, go_fast=True, lora_weights=str(tiny_flux_lora), lora_scale=0.8)
    assert engine._fast_lora and all(
        isinstance(engine.fast.get_submodule(n), FP8Linear) or n == "proj_out" for n in engine._fast_lora)
    # fp8 of the merged weights vs the bf16 path with the same LoRA: fp8 rounding only
    assert np.abs(fast - eager).mean() < 2 and np.abs(fast - fast_base).mean() > 5
    assert biggest(run(engine, go_fast=True), fast_base) == 0  # restored exactly
    assert engine._fast_lora == set()


def test_loras_are_cached_by_content_and_evicted(engine, tiny_flux_schnell, tiny_flux_lora, tmp_path, capfd) -> None:
    copy = tmp_path / "renamed" / "my-style.safetensors"
    copy.parent.mkdir()
    shutil.copy(tiny_flux_lora, copy)
    assert content_hash(copy) == content_hash(tiny_flux_lora)
    run(engine, go_fast=False, lora_weights=str(tiny_flux_lora))
    capfd.readouterr()
    run(engine, go_fast=False, lora_weights=str(copy.parent))  # a folder holding one file works too
    assert "loaded from" not in capfd.readouterr().err  # same bytes: the loaded adapter is reused

    engine.loras.max_loaded = 1
    try:
        other = build_flux_lora(tiny_flux_schnell, tmp_path / "other.safetensors", seed=9)
        run(engine, go_fast=False, lora_weights=str(tiny_flux_lora))  # active, then evicted below
        run(engine, go_fast=False, lora_weights=str(other))
        assert len(engine.loras.loaded) == 1 and engine.loras.active[0] in engine.loras.loaded
        assert "unloaded (keeping at most 1)" in capfd.readouterr().err
    finally:
        engine.loras.max_loaded = 4
        run(engine, go_fast=False)


def test_lora_source_errors(engine, tmp_path, tiny_flux_schnell) -> None:
    from flux_engine import InputError

    with pytest.raises(InputError, match="lora_weights: no .safetensors file in"):
        run(engine, lora_weights=str(tmp_path))
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "b.safetensors").write_bytes(b"x")
    with pytest.raises(InputError, match="holds several .safetensors files \\(a.safetensors, b.safetensors\\)"):
        run(engine, lora_weights=str(tmp_path))
    with pytest.raises(InputError, match="lora_weights: cannot load a FLUX LoRA"):
        run(engine, lora_weights=str(tmp_path / "a.safetensors"))
    # the model itself is not a LoRA
    with pytest.raises(InputError, match="lora_weights: "):
        run(engine, lora_weights=str(tiny_flux_schnell / "transformer"))
    with pytest.raises(InputError, match="lora_weights: Hugging Face repo 'someone/no-such-lora' is not in the local cache"):
        run(engine, lora_weights="huggingface.co/someone/no-such-lora")
    assert engine.loras.active is None
    assert biggest(run(engine, go_fast=False), run(engine, go_fast=False)) == 0


def test_a_failed_load_leaves_the_previous_lora_active(engine, tiny_flux_lora, tmp_path) -> None:
    with_lora = run(engine, go_fast=False, lora_weights=str(tiny_flux_lora))
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(LoraError, match="lora_weights: cannot load a FLUX LoRA"):
        engine.loras.activate(str(bad), 1.0)
    assert engine.loras.active is not None and len(engine.pipe.get_list_adapters()["transformer"]) == len(engine.loras.loaded)
    assert biggest(run(engine, go_fast=False, lora_weights=str(tiny_flux_lora)), with_lora) == 0
    run(engine, go_fast=False)


def test_lora_from_an_http_url_is_downloaded_once(engine, tiny_flux_lora, tmp_path, monkeypatch, capfd) -> None:
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(tiny_flux_lora, served / "style.safetensors")
    monkeypatch.setenv("COGKIT_WEIGHTS_CACHE", str(tmp_path / "cache"))
    try:
        with serve_folder(served) as base:
            url = f"{base}/style.safetensors?token=secret"
            local = run(engine, go_fast=False, lora_weights=str(tiny_flux_lora))
            capfd.readouterr()
            assert biggest(run(engine, go_fast=False, lora_weights=url), local) == 0  # same bytes, same adapter
            first = capfd.readouterr().err
            assert "downloaded style.safetensors" in first and "secret" not in first
            run(engine, go_fast=False, lora_weights=url)
            assert "cache hit" in capfd.readouterr().err
            with pytest.raises(Exception, match="lora_weights: .*answered HTTP 404"):
                run(engine, go_fast=False, lora_weights=url.replace("style", "missing"))
    finally:
        run(engine, go_fast=False)


def test_compiled_go_fast_is_not_recompiled_by_loras(tiny_flux_schnell, tiny_flux_lora, monkeypatch) -> None:
    """go_fast compiled (the CUDA default; here with the eager backend): merging a LoRA,
    changing its scale and removing it rewrite weights in place, so no request with a
    LoRA pays for a recompile (on an H100 that is tens of seconds)."""
    import torch
    import torch._dynamo.utils
    from flux_engine import FluxEngine

    monkeypatch.setenv("COGKIT_FLUX_COMPILE", "1")
    monkeypatch.setenv("COGKIT_COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    compiled = FluxEngine(tiny_flux_schnell, warmup="none")
    try:
        assert compiled.compiled
        run(compiled, go_fast=True)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        for scale in (0.6, 1.3):
            run(compiled, go_fast=True, lora_weights=str(tiny_flux_lora), lora_scale=scale)
        run(compiled, go_fast=True)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    finally:
        torch._dynamo.reset()
