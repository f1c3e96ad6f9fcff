"""fp8 weight-only linears: float8_e4m3fn weights with per-tensor or per-row scales.

``quantize_linears(model)`` swaps each eligible ``nn.Linear`` for an ``FP8Linear``
(half the weight memory of bf16). Its forward multiplies in fp8 with
``torch._scaled_mm`` where the card supports it (CUDA sm_89+, i.e. Ada/Hopper:
the activation is quantized per call with a dynamic scale; bf16/fp16 activations
only, since CUDA's kernel takes no bias with an fp32 output), and elsewhere
dequantizes the weight to the activation dtype and calls ``F.linear`` (same
numbers up to fp8 rounding of the weights; works on any device, CPU included).

``_scaled_mm``'s CUDA rules, which the forward meets: the activation row-major
[M, K] and the weight column-major [K, N] (the transpose of the stored [N, K]),
K and N multiples of 16 (M is free), fp32 scales that are scalars (per tensor) or
[M, 1] and [1, N] (per row), a bias in the output dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cogkit.ml.logs import log

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
# Activation dtypes that go through _scaled_mm (its output dtype is theirs). Not fp32:
# CUDA refuses a bias with an fp32 output ("Bias is not supported when out_dtype is set to Float32").
_SCALED_MM_OUT = (torch.bfloat16, torch.float16)


def fp8_matmul_supported(device: torch.device | str | None = None) -> bool:
    """True where torch._scaled_mm runs fp8 tensor-core matmuls (CUDA sm_89+)."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type != "cuda":
        return False
    if not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def quantize_weight(weight: torch.Tensor, granularity: str = "tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, fp32 scale) with weight ≈ fp8 * scale; scale is a scalar
    ("tensor") or one per output row ("row", shape [out, 1])."""
    w = weight.detach().float()
    if granularity == "tensor":
        amax = w.abs().max()
    elif granularity == "row":
        amax = w.abs().amax(dim=1, keepdim=True)
    else:
        raise ValueError(f"granularity must be 'tensor' or 'row', got {granularity!r}")
    scale = (amax / FP8_MAX).clamp(min=1e-12)
    return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale.float()


class FP8Linear(torch.nn.Module):
    """A Linear whose weight is stored in fp8 (see module docstring)."""

    def __init__(self, linear: torch.nn.Linear, *, granularity: str = "tensor", use_scaled_mm: bool | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = linear.weight.dtype if linear.weight.dtype.is_floating_point else torch.bfloat16
        w8, scale = quantize_weight(linear.weight, granularity)
        self.register_buffer("weight", w8)
        self.register_buffer("weight_scale", scale)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.granularity = granularity
        if use_scaled_mm is None:
            use_scaled_mm = fp8_matmul_supported(linear.weight.device)
        # _scaled_mm needs both matmul dims to be multiples of 16.
        self.use_scaled_mm = bool(use_scaled_mm) and self.in_features % 16 == 0 and self.out_features % 16 == 0

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"granularity={self.granularity}, scaled_mm={self.use_scaled_mm}")

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return (self.weight.float() * self.weight_scale).to(dtype or self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_scaled_mm or x.dtype not in _SCALED_MM_OUT:
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(x, self.dequantized_weight(x.dtype), bias)
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        out_dtype = x.dtype
        if self.granularity == "row":
            # row-wise on both sides: per-token activation scales [M,1], per-channel weight scales [1,N]
            x_scale = (x2.detach().abs().amax(dim=1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
            w_scale = self.weight_scale.reshape(1, -1)
        else:
            x_scale = (x2.detach().abs().max().float() / FP8_MAX).clamp(min=1e-12)
            w_scale = self.weight_scale.reshape(())
        x8 = (x2.float() / x_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
        bias = None if self.bias is None else self.bias.to(out_dtype)
        y = torch._scaled_mm(x8, self.weight.t(), scale_a=x_scale, scale_b=w_scale, bias=bias, out_dtype=out_dtype)
        return y.reshape(*shape[:-1], self.out_features)


def quantize_linears(
    model: torch.nn.Module,
    *,
    granularity: str = "tensor",
    include: Callable[[str, torch.nn.Linear], bool] | None = None,
    use_scaled_mm: bool | None = None,
) -> int:
    """Replace the model's Linear layers (those ``include(name, layer)`` accepts; by
    default all) with FP8Linear in place; returns how many were replaced."""
    # names, not modules: each replaced Linear is freed at once, so the peak is the model
    # plus one layer (holding them all would add half the model again before the end)
    targets = [
        name for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and (include is None or include(name, mod))
    ]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FP8Linear(getattr(parent, child), granularity=granularity, use_scaled_mm=use_scaled_mm))
    swapped = [m for m in model.modules() if isinstance(m, FP8Linear)]
    mode = "scaled_mm" if any(m.use_scaled_mm for m in swapped) else "dequantize"
    log(f"[ml] fp8: {len(targets)} linear layers in {type(model).__name__} stored as float8_e4m3fn "
        f"({granularity} scales, {mode} matmul)")
    return len(targets)
