import pytest
import torch

from cogkit.ml import device


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
