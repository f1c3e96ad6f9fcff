"""Device, dtype and speed switches for one card, decided in one place.

``plan_device()`` looks at the machine (or the COGKIT_DEVICE / COGKIT_DTYPE
overrides), and ``plan_for()`` is the pure rule table behind it so it can be
tested for cards that are not present. ``apply_speedups()`` then applies the plan
to a diffusers pipeline (channels_last, fused QKV, TF32, VAE tiling/slicing).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from cogkit.ml.logs import log

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """What to run on and how; ``reason`` says why, in words, for the setup log."""

    device: str                     # "cuda", "cpu" or "mps"
    dtype: torch.dtype              # weights and activations of the denoiser/text encoders
    vae_dtype: torch.dtype          # the VAE (fp32 where fp16 would overflow)
    fp8: bool                       # fp8 matmuls (torch._scaled_mm) are worth using
    attention: str                  # "sdpa-flash", "sdpa" or "sdpa-math"
    channels_last: bool             # convolutions prefer NHWC here
    fuse_qkv: bool                  # one matmul for q, k and v
    tf32: bool                      # TF32 matmuls for whatever stays in fp32
    card: str                       # human name of the card
    capability: tuple[int, int] | None
    reason: str

    def summary(self) -> str:
        cap = f", sm_{self.capability[0]}{self.capability[1]}" if self.capability else ""
        return (
            f"device={self.device} ({self.card}{cap}) dtype={_name(self.dtype)} "
            f"vae_dtype={_name(self.vae_dtype)} fp8={'yes' if self.fp8 else 'no'} "
            f"attention={self.attention} channels_last={'yes' if self.channels_last else 'no'} "
            f"fused_qkv={'yes' if self.fuse_qkv else 'no'}: {self.reason}"
        )


def _name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def parse_dtype(text: str) -> torch.dtype:
    try:
        return _DTYPES[text.strip().lower()]
    except KeyError:
        raise ValueError(f"COGKIT_DTYPE: unknown dtype {text!r}; use one of fp32, fp16, bf16") from None


def plan_for(
    device: str,
    capability: tuple[int, int] | None = None,
    card: str = "",
    *,
    dtype_override: torch.dtype | None = None,
    fp16_vae_safe: bool = False,
) -> DevicePlan:
    """The rule table. ``fp16_vae_safe``: the model's VAE does not overflow in fp16
    (e.g. SDXL's fp16-fix VAE), so it need not be kept in fp32 on fp16-only cards."""
    if device == "cuda":
        cap = capability or (0, 0)
        bf16_ok = cap >= (8, 0)
        fp8_ok = cap >= (8, 9)
        if dtype_override is not None:
            dtype, why = dtype_override, f"{_name(dtype_override)} requested by COGKIT_DTYPE"
        elif bf16_ok:
            dtype, why = torch.bfloat16, "bf16 is native on sm_80+"
        else:
            dtype, why = torch.float16, "no bf16 below sm_80, so fp16"
        if dtype == torch.bfloat16 and not bf16_ok:
            raise ValueError(f"COGKIT_DTYPE=bf16 but {card or 'this card'} (sm_{cap[0]}{cap[1]}) has no bf16")
        # SDXL's original VAE overflows in fp16 (NaN/black images); bf16 has fp32's range.
        vae_dtype = torch.float32 if (dtype == torch.float16 and not fp16_vae_safe) else dtype
        if vae_dtype != dtype:
            why += "; VAE kept in fp32 (fp16 overflows)"
        why += "; fp8 on (sm_89+)" if fp8_ok else "; fp8 off (needs sm_89+)"
        attention = "sdpa-flash" if cap >= (8, 0) and dtype != torch.float32 else "sdpa"
        return DevicePlan("cuda", dtype, vae_dtype, fp8_ok, attention, True, True, True,
                          card or "CUDA GPU", cap, why)
    if device == "mps":
        dtype = dtype_override or torch.float16
        return DevicePlan("mps", dtype, torch.float32 if dtype == torch.float16 else dtype, False,
                          "sdpa", False, False, False, card or "Apple GPU", None,
                          "Apple GPU: fp16 weights, VAE in fp32")
    dtype = dtype_override or torch.float32
    why = "no GPU, so fp32 on CPU" if dtype_override is None else f"{_name(dtype)} requested by COGKIT_DTYPE"
    return DevicePlan("cpu", dtype, dtype, False, "sdpa-math", False, False, False,
                      card or "CPU", None, why)


def plan_device(*, fp16_vae_safe: bool = False, quiet: bool = False) -> DevicePlan:
    """Decide for this machine and log one line saying what was chosen and why.

    COGKIT_DEVICE=cpu|cuda|mps and COGKIT_DTYPE=fp32|fp16|bf16 override the choice.
    """
    wanted = os.environ.get("COGKIT_DEVICE", "").strip().lower() or None
    override = parse_dtype(os.environ["COGKIT_DTYPE"]) if os.environ.get("COGKIT_DTYPE") else None
    if wanted not in (None, "cpu", "cuda", "mps"):
        raise ValueError(f"COGKIT_DEVICE: unknown device {wanted!r}; use cpu, cuda or mps")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("COGKIT_DEVICE=cuda but torch sees no CUDA device")
    if (wanted in (None, "cuda")) and torch.cuda.is_available():
        plan = plan_for("cuda", torch.cuda.get_device_capability(0), torch.cuda.get_device_name(0),
                        dtype_override=override, fp16_vae_safe=fp16_vae_safe)
    elif (wanted in (None, "mps")) and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        plan = plan_for("mps", dtype_override=override)
    else:
        plan = plan_for("cpu", dtype_override=override)
    if not quiet:
        log(f"[ml] {plan.summary()}")
    return plan


def set_global_flags(plan: DevicePlan) -> None:
    """Process-wide switches that only help: TF32 for fp32 leftovers, cuDNN autotune."""
    if plan.device == "cuda" and plan.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def apply_speedups(pipe: Any, plan: DevicePlan, *, fuse_qkv: bool | None = None) -> list[str]:
    """Apply the plan's layout switches to a diffusers pipeline; returns what was done.

    Fused QKV is skipped when ``fuse_qkv`` is False (e.g. a LoRA will be loaded:
    LoRA layers target the separate q/k/v projections).
    """
    done: list[str] = []
    set_global_flags(plan)
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if plan.channels_last:
        for name in ("unet", "vae", "controlnet"):
            module = getattr(pipe, name, None)
            if isinstance(module, torch.nn.Module):
                module.to(memory_format=torch.channels_last)
                done.append(f"{name}: channels_last")
    if (plan.fuse_qkv if fuse_qkv is None else fuse_qkv) and denoiser is not None:
        if hasattr(pipe, "fuse_qkv_projections"):
            try:
                pipe.fuse_qkv_projections()
                done.append("fused qkv")
            except Exception as exc:  # some processors (e.g. custom attention) do not fuse
                done.append(f"fused qkv skipped ({type(exc).__name__})")
    if done:
        log("[ml] speedups: " + ", ".join(done))
    return done


def place_vae(vae: Any, plan: DevicePlan) -> bool:
    """Keep the VAE in the plan's ``vae_dtype`` for good (fp32 beside an fp16 denoiser where
    fp16 overflows, e.g. SDXL's VAE on a T4). Left alone, diffusers' SDXL pipelines cast an
    fp16 VAE to fp32 and back around every encode and decode (``force_upcast``); once it lives
    in fp32 that flag is switched off (img2img would cast it back to fp16 after encoding), and
    what reaches its encoder and decoder is cast to its dtype on the way in (the pipelines
    hand it latents in the denoiser's dtype). Returns whether anything changed."""
    if vae is None or plan.vae_dtype == plan.dtype:
        return False
    vae.to(dtype=plan.vae_dtype)
    vae.register_to_config(force_upcast=False)
    if not getattr(vae, "_cogkit_casts_inputs", False):
        def cast(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            first = args[0]
            if isinstance(first, torch.Tensor) and first.dtype != plan.vae_dtype:
                return (first.to(plan.vae_dtype), *args[1:])
            return args

        for part in (vae.encoder, getattr(vae, "post_quant_conv", None), vae.decoder):
            if isinstance(part, torch.nn.Module):
                part.register_forward_pre_hook(cast)
        vae._cogkit_casts_inputs = True
    log(f"[ml] VAE kept in {_name(plan.vae_dtype)} beside the {_name(plan.dtype)} denoiser")
    return True


def configure_vae(vae: Any, width: int, height: int, batch: int, plan: DevicePlan) -> None:
    """Tile the VAE for very large images and slice it for big batches, only on a GPU
    (both save memory at a small speed cost, and change nothing on the CPU)."""
    if plan.device != "cuda" or vae is None:
        return
    pixels = width * height * batch
    if width * height > 2048 * 2048:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    if pixels > 4 * 1024 * 1024:
        vae.enable_slicing()
    else:
        vae.disable_slicing()
