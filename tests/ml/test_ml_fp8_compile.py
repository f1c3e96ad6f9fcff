import pytest
import torch

from cogkit.ml import compile as mlcompile
from cogkit.ml import fp8


def _mlp(dims=(64, 128, 32), seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(dims, dims[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.GELU()]
    return torch.nn.Sequential(*layers[:-1])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("granularity", ["tensor", "row"])
def test_quantize_weight_roundtrip(granularity):
    w = torch.randn(48, 64) * torch.linspace(0.01, 3, 48)[:, None]
    w8, scale = fp8.quantize_weight(w, granularity)
    assert w8.dtype == torch.float8_e4m3fn
    assert scale.shape == (() if granularity == "tensor" else (48, 1))
    assert _rel(w8.float() * scale, w) < 0.05


def test_row_scales_beat_tensor_scales_on_uneven_rows():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 64, generator=g) * torch.logspace(-5, 1, 48)[:, None]
    small = slice(0, 8)  # rows far below the largest: per-tensor scaling flushes them towards zero
    errs = {}
    for gran in ("tensor", "row"):
        w8, scale = fp8.quantize_weight(w, gran)
        errs[gran] = _rel((w8.float() * scale)[small], w[small])
    assert errs["row"] < 0.1 < errs["tensor"]


@pytest.fixture
def scaled_mm_calls(monkeypatch):
    """Counts torch._scaled_mm calls (the real op still runs: it exists on the CPU too)."""
    calls = []
    real = torch._scaled_mm

    def spy(*args, **kwargs):
        calls.append(kwargs.get("out_dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", spy)
    return calls


@pytest.mark.parametrize("granularity", ["tensor", "row"])
@pytest.mark.parametrize("scaled_mm", [False, True])
def test_quantized_mlp_close_to_reference(granularity, scaled_mm, capsys, scaled_mm_calls):
    # bf16, as on a GPU: _scaled_mm takes 16-bit activations
    ref = _mlp().to(torch.bfloat16)
    x = torch.randn(5, 7, 64, dtype=torch.bfloat16)
    want = ref(x).float()
    q = _mlp().to(torch.bfloat16)
    n = fp8.quantize_linears(q, granularity=granularity, use_scaled_mm=scaled_mm)
    assert n == 2
    assert all(isinstance(m, fp8.FP8Linear) and m.use_scaled_mm == scaled_mm for m in q if not isinstance(m, torch.nn.GELU))
    got = q(x)
    assert scaled_mm_calls == ([torch.bfloat16] * 2 if scaled_mm else [])
    assert got.dtype == torch.bfloat16
    got = got.float()
    assert got.shape == want.shape and _rel(got, want) < 0.08
    assert "float8_e4m3fn" in capsys.readouterr().err
    # weights really are stored in fp8 (half of bf16, a quarter of fp32)
    assert q[0].weight.dtype == torch.float8_e4m3fn and q[0].weight.element_size() == 1


@pytest.mark.parametrize("granularity", ["tensor", "row"])
def test_fp32_activations_take_the_dequantize_path(granularity, scaled_mm_calls):
    """CUDA's _scaled_mm refuses a bias with an fp32 output, so an fp32 model (e.g.
    COGKIT_DTYPE=fp32 with fp8 on) must not reach it."""
    lin = torch.nn.Linear(64, 32)
    m = fp8.FP8Linear(lin, granularity=granularity, use_scaled_mm=True)
    assert m.use_scaled_mm
    x = torch.randn(3, 64)
    y = m(x)
    assert scaled_mm_calls == [] and y.dtype == torch.float32
    assert torch.equal(y, torch.nn.functional.linear(x, m.dequantized_weight(torch.float32), lin.bias))


def test_each_replaced_linear_is_released_before_the_next_is_quantized(monkeypatch):
    """The peak while quantizing is the model plus one layer, not 1.5 models (what
    decides whether a large LLM fits its GPU with fp8 on)."""
    import gc
    import weakref

    model = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(4)])
    originals = [weakref.ref(m) for m in model]
    alive_at_each_swap = []
    real = fp8.FP8Linear

    class Counting(real):
        def __init__(self, linear, **kwargs):
            gc.collect()
            alive_at_each_swap.append(sum(r() is not None for r in originals))
            super().__init__(linear, **kwargs)

    monkeypatch.setattr(fp8, "FP8Linear", Counting)
    assert fp8.quantize_linears(model, use_scaled_mm=False) == 4
    assert alive_at_each_swap == [4, 3, 2, 1]


def test_scaled_mm_needs_multiples_of_16():
    lin = torch.nn.Linear(20, 24)
    m = fp8.FP8Linear(lin, use_scaled_mm=True)
    assert not m.use_scaled_mm  # falls back to dequantize
    x = torch.randn(3, 20)
    assert _rel(m(x), lin(x)) < 0.08


def test_include_filter_and_bf16():
    model = _mlp().to(torch.bfloat16)
    n = fp8.quantize_linears(model, include=lambda name, layer: name == "0", use_scaled_mm=False)
    assert n == 1 and isinstance(model[0], fp8.FP8Linear) and isinstance(model[2], torch.nn.Linear)
    y = model(torch.randn(2, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


def test_no_fp8_matmul_on_cpu():
    assert not fp8.fp8_matmul_supported("cpu")


class _Blocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(16, 16)
        self.blocks = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU()) for _ in range(3)])

    def forward(self, x):
        x = self.inp(x)
        for b in self.blocks:
            x = x + b(x)
        return x


def test_regional_compile_finds_repeated_blocks(tmp_path, capsys):
    m = _Blocks()
    x = torch.randn(2, 16)
    want = m(x)
    what = mlcompile.compile_module(m, backend="eager", cache_dir=tmp_path / "cache")
    assert "regional compile of 3 repeated blocks" in what
    assert (tmp_path / "cache").is_dir()
    assert torch.allclose(m(x), want)
    times = mlcompile.warm_up(lambda: m(x), runs=2)
    assert len(times) == 2 and "warm-up: run 1" in capsys.readouterr().err


def test_diffusers_regional_compile_uses_repeated_blocks():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16, norm_num_groups=8, attention_head_dim=2)
    what = mlcompile.compile_module(unet, backend="eager")
    assert "BasicTransformerBlock" in what


def test_whole_module_compile():
    m = torch.nn.Linear(4, 4)
    assert "whole-module" in mlcompile.compile_module(m, regional=False, backend="eager")
    m(torch.randn(1, 4))


@pytest.mark.slow
def test_inductor_compile_matches_eager(tmp_path):
    m = _Blocks()
    x = torch.randn(2, 16)
    want = m(x)
    mlcompile.compile_module(m, cache_dir=tmp_path / "inductor")
    assert torch.allclose(m(x), want, atol=1e-5)
