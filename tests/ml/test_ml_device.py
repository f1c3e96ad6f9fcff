import pytest
import torch

from cogkit.ml import device
from tests.tiny_models import tiny_sdxl_weights  # noqa: F401  (fixture)


@pytest.mark.parametrize(
    "cap,card,dtype,vae,fp8",
    [
        ((9, 0), "NVIDIA H100 80GB HBM3", torch.bfloat16, torch.bfloat16, True),
        ((8, 0), "NVIDIA A100-SXM4-80GB", torch.bfloat16, torch.bfloat16, False),
        ((8, 9), "NVIDIA L4", torch.bfloat16, torch.bfloat16, True),
        ((7, 5), "Tesla T4", torch.float16, torch.float32, False),
    ],
)
def test_cuda_rules(cap, card, dtype, vae, fp8):
    plan = device.plan_for("cuda", cap, card)
    assert (plan.dtype, plan.vae_dtype, plan.fp8) == (dtype, vae, fp8)
    assert plan.channels_last and plan.fuse_qkv and plan.tf32
    assert card in plan.summary() and f"sm_{cap[0]}{cap[1]}" in plan.summary()


def test_t4_with_fp16_safe_vae_keeps_vae_in_fp16():
    plan = device.plan_for("cuda", (7, 5), "Tesla T4", fp16_vae_safe=True)
    assert plan.vae_dtype == torch.float16


def test_bf16_override_refused_on_t4():
    with pytest.raises(ValueError, match="no bf16"):
        device.plan_for("cuda", (7, 5), "Tesla T4", dtype_override=torch.bfloat16)


def test_cpu_is_fp32_and_logged(monkeypatch, capsys):
    monkeypatch.delenv("COGKIT_DTYPE", raising=False)
    monkeypatch.setenv("COGKIT_DEVICE", "cpu")
    plan = device.plan_device()
    assert plan.device == "cpu" and plan.dtype == torch.float32 and not plan.fp8
    err = capsys.readouterr().err
    assert "[ml] device=cpu" in err and "dtype=fp32" in err and "no GPU" in err


def test_env_dtype_override(monkeypatch, capsys):
    monkeypatch.setenv("COGKIT_DEVICE", "cpu")
    monkeypatch.setenv("COGKIT_DTYPE", "bf16")
    plan = device.plan_device()
    assert plan.dtype == torch.bfloat16
    assert "requested by COGKIT_DTYPE" in capsys.readouterr().err


def test_bad_env_values(monkeypatch):
    monkeypatch.setenv("COGKIT_DTYPE", "int3")
    with pytest.raises(ValueError, match="COGKIT_DTYPE"):
        device.plan_device()
    monkeypatch.delenv("COGKIT_DTYPE")
    monkeypatch.setenv("COGKIT_DEVICE", "tpu")
    with pytest.raises(ValueError, match="COGKIT_DEVICE"):
        device.plan_device()


def test_cuda_request_without_cuda(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    monkeypatch.setenv("COGKIT_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="no CUDA"):
        device.plan_device()


def test_place_vae_keeps_an_fp32_vae_beside_a_lower_precision_unet(tiny_sdxl_weights, tmp_path):
    """plan.vae_dtype applied (as on a T4: fp16 UNet, fp32 VAE; here bf16 on the CPU): the VAE
    stays in fp32 through txt2img and img2img (diffusers' force_upcast would cast it back after
    an encode), the latents are cast on the way in, and txt2img decodes exactly what decoding
    its latents in fp32 by hand gives."""
    import dataclasses

    import numpy as np
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from PIL import Image

    from cogkit.ml.device import place_vae, plan_for

    plan = dataclasses.replace(plan_for("cpu", dtype_override=torch.bfloat16), vae_dtype=torch.float32)
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_weights, dtype=torch.bfloat16, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    assert place_vae(pipe.vae, plan) and not place_vae(pipe.vae, dataclasses.replace(plan, vae_dtype=plan.dtype))
    args = dict(prompt="a cat", width=64, height=64, num_inference_steps=2, guidance_scale=5.0)
    image = pipe(**args, generator=torch.Generator().manual_seed(3), output_type="np").images[0]
    latents = pipe(**args, generator=torch.Generator().manual_seed(3), output_type="latent").images
    with torch.no_grad():
        by_hand = pipe.vae.decode((latents / pipe.vae.config.scaling_factor).float()).sample  # the pipeline scales in bf16
    by_hand = pipe.image_processor.postprocess(by_hand, output_type="np")[0]
    assert np.abs(image - by_hand).max() < 1e-6
    img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(pipe, dtype=plan.dtype)  # as the SDXL engine derives one
    place_vae(img2img.vae, plan)
    src = Image.fromarray((image * 255).astype("uint8"))
    out = img2img(prompt="a cat", image=src, strength=0.5, num_inference_steps=2, output_type="np").images[0]
    assert out.shape == (64, 64, 3) and np.isfinite(out).all()
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.float32} and not pipe.vae.config.force_upcast
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.bfloat16}
