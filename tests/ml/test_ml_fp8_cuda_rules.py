"""The fp8 matmuls of every model, checked against CUDA's torch._scaled_mm rules
without a GPU.

On the meta device torch runs _scaled_mm's shape check with the CUDA rules (the
activation row-major, the weight column-major, K and N multiples of 16, scale
shapes and dtypes); the CPU kernel accepts layouts CUDA refuses. So a forward on
meta tensors of the full-size models, as each predictor quantises them, shows the
calls an H100 will get are well-formed (shapes only: nothing is computed or
allocated). The bias/output-dtype rule is not in the meta check; see
test_ml_fp8_compile.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cogkit.ml.fp8 import FP8, FP8Linear

REPO = Path(__file__).resolve().parents[2]
BF16 = torch.bfloat16


@pytest.fixture
def bench_configs(monkeypatch):
    """The full-size configs, from the GPU benches (one source for both)."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import gpu_flux
    import gpu_llama
    import gpu_sdxl

    return {"flux": gpu_flux.TRANSFORMER_FULL, "sdxl_unet": gpu_sdxl.UNET_FULL, "llama": gpu_llama.LLAMA3_8B}


def _scaled(model: torch.nn.Module) -> list[FP8Linear]:
    layers = [m for m in model.modules() if isinstance(m, FP8Linear)]
    assert layers and all(m.use_scaled_mm for m in layers)
    return layers


def test_the_meta_check_is_cudas():
    """What makes the tests below able to fail: a row-major weight is refused on meta."""
    a = torch.empty(3, 64, device="meta", dtype=FP8)
    w = torch.empty(48, 64, device="meta", dtype=FP8)
    one = torch.empty((), device="meta")
    with pytest.raises(RuntimeError, match="col_major"):
        torch._scaled_mm(a, w.t().contiguous(), scale_a=one, scale_b=one, out_dtype=BF16)
    with pytest.raises(RuntimeError, match="divisible by 16"):
        torch._scaled_mm(a, torch.empty(40, 64, device="meta", dtype=FP8).t(), scale_a=one, scale_b=one, out_dtype=BF16)
    torch._scaled_mm(a, w.t(), scale_a=torch.empty(3, 1, device="meta"), scale_b=torch.empty(1, 48, device="meta"),
                     out_dtype=BF16)


@pytest.mark.parametrize("granularity", ["tensor", "row"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 64), (3, 64), (2, 5, 64)])
def test_fp8_linear(granularity, dtype, shape):
    lin = torch.nn.Linear(64, 48, device="meta", dtype=dtype)
    layer = FP8Linear(lin, granularity=granularity, use_scaled_mm=True)
    y = layer(torch.empty(*shape, device="meta", dtype=dtype))
    assert y.shape == (*shape[:-1], 48) and y.dtype == dtype


@pytest.mark.parametrize("granularity", ["row", "tensor"])  # row on sm_90+, tensor on sm_89 (default_granularity)
def test_flux_go_fast_transformer_full_size(bench_configs, granularity, monkeypatch):
    from diffusers import FluxTransformer2DModel

    monkeypatch.syspath_prepend(str(REPO / "models" / "flux"))
    from flux_fast import build_fast

    with torch.device("meta"):
        eager = FluxTransformer2DModel(**bench_configs["flux"]).to(BF16)
    fast, report = build_fast(eager, fp8=True, granularity=granularity, use_scaled_mm=True)
    assert report["scaled_mm"] and len(_scaled(fast)) == report["layers"] == 19 * 12 + 38 * 7
    for batch, tokens, text in ((1, 4096, 512), (2, 96 * 40, 256)):  # 1024² dev; 1536x640 schnell x2
        with torch.device("meta"):
            out = fast(
                hidden_states=torch.empty(batch, tokens, 64, dtype=BF16),
                encoder_hidden_states=torch.empty(batch, text, 4096, dtype=BF16),
                pooled_projections=torch.empty(batch, 768, dtype=BF16),
                timestep=torch.empty(batch, dtype=BF16), guidance=torch.empty(batch, dtype=BF16),
                img_ids=torch.empty(tokens, 3, dtype=BF16), txt_ids=torch.empty(text, 3, dtype=BF16),
            )
        assert out.sample.shape == (batch, tokens, 64)


def test_sdxl_unet_fp8_full_size_with_fused_qkv(bench_configs, monkeypatch):
    """COGKIT_SDXL_FP8=1: the engine fuses QKV (apply_speedups) and then quantises."""
    from diffusers import UNet2DConditionModel

    monkeypatch.syspath_prepend(str(REPO / "models" / "sdxl"))
    from sdxl_engine import quantize_unet_fp8

    with torch.device("meta"):
        unet = UNet2DConditionModel(**bench_configs["sdxl_unet"]).to(BF16)
    unet.fuse_qkv_projections()
    quantize_unet_fp8(unet, use_scaled_mm=True)
    assert any(name.endswith("to_qkv") for name, m in unet.named_modules() if isinstance(m, FP8Linear))
    _scaled(unet)
    for batch, side in ((2, 128), (1, 64)):  # 1024² with CFG; 512² Turbo
        with torch.device("meta"):
            out = unet(torch.empty(batch, 4, side, side, dtype=BF16), torch.empty(batch, dtype=BF16),
                       encoder_hidden_states=torch.empty(batch, 77, 2048, dtype=BF16),
                       added_cond_kwargs={"text_embeds": torch.empty(batch, 1280, dtype=BF16),
                                          "time_ids": torch.empty(batch, 6, dtype=BF16)})
        assert out.sample.shape == (batch, 4, side, side)


def test_llama3_8b_fp8_engine_decode_and_prefill(bench_configs):
    """The engine's own decode step (slot cache, grouped-query attention, the batch
    buckets) and prefill on Llama-3-8B with fp8 linears."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from cogkit.ml.llm_engine import LLMEngine, quantize_fp8
    from cogkit.ml.tiny.llama import build_tokenizer

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**bench_configs["llama"], eos_token_id=2)).to(BF16)
    assert quantize_fp8(model, use_scaled_mm=True) == 32 * 7
    assert not isinstance(model.lm_head, FP8Linear)
    _scaled(model)
    engine = LLMEngine(model, build_tokenizer(), slots=16, max_seq_len=512, compile_decode=False, warm_up=False)
    try:
        with torch.inference_mode():
            for n in (1, 16):
                logits = engine._decode_forward(torch.zeros(n, 1, dtype=torch.long, device="meta"),
                                                torch.zeros(n, dtype=torch.long, device="meta"), 512)
                assert logits.shape == (n, 128256) and logits.dtype == BF16
            engine.cache.prefill_slot = 3
            out = model(input_ids=torch.zeros(1, 200, dtype=torch.long, device="meta"),
                        position_ids=torch.arange(200, device="meta")[None], cache=engine.cache, use_cache=True,
                        logits_to_keep=1)
            assert out.logits.shape == (1, 1, 128256)
    finally:
        engine.cache.prefill_slot = None
        engine.close()
