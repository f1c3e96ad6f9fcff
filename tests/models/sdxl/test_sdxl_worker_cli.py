"""The SDXL predictor end to end: through the worker (one child process, setup once,
every mode) and through `cogkit predict` in models/sdxl, on tiny random weights."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cogkit.worker.client import Worker
from cogkit.worker.protocol import Done, FileInput, FileOutput, Log
from tests.models.sdxl.test_sdxl_predictor import noise_image, square_mask
from tests.tiny_models import tiny_sdxl_lora, tiny_sdxl_weights  # noqa: F401  (fixtures)

REPO = pathlib.Path(__file__).resolve().parents[3]
SDXL_DIR = REPO / "models" / "sdxl"
ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
BASE = dict(prompt="a photo of a cat", width=64, height=64, num_inference_steps=2, guidance_scale=5.0,
            seed=3, output_format="png")


def f(path) -> FileInput:
    return FileInput(path=str(path), source=str(path), kind="local")


async def _predict(worker: Worker, pid: str, inputs: dict) -> tuple[object, str]:
    handle = await worker.predict(pid, inputs)
    logs = []
    async for ev in handle:
        if isinstance(ev, Log):
            logs.append(ev.text)
    return handle.terminal if hasattr(handle, "terminal") else ev, "".join(logs)


@pytest.mark.slow
def test_every_mode_through_the_worker(tiny_sdxl_weights, tiny_sdxl_lora, tmp_path):
    img, ctl = noise_image(tmp_path / "i.webp", size=(67, 45), fmt="WEBP"), noise_image(tmp_path / "c.png", seed=4)
    rgba = noise_image(tmp_path / "a.png", mode="RGBA")
    gif = noise_image(tmp_path / "g.gif", fmt="GIF")
    mask = square_mask(tmp_path / "m.png", size=(67, 45))
    cases = {
        "txt2img": (dict(BASE), (64, 64), "txt2img 64x64"),
        "img2img": (dict(BASE, image=f(img), num_inference_steps=3), (64, 48), "img2img 64x48"),
        "img2img-alpha": (dict(BASE, image=f(rgba)), (64, 64), "img2img"),
        "img2img-gif": (dict(BASE, image=f(gif)), (64, 64), "img2img"),
        "inpaint": (dict(BASE, image=f(img), mask=f(mask), num_inference_steps=3), (64, 48), "inpaint 64x48"),
        "outpaint": (dict(BASE, image=f(img), outpaint="left=16"), (80, 48), "outpaint: canvas 80x48"),
        "controlnet": (dict(BASE, controlnet_image=f(ctl)), (64, 64), "txt2img + controlnet canny"),
        "controlnet-depth-map": (dict(BASE, controlnet_image=f(ctl), controlnet_type="depth",
                                      controlnet_preprocess=False), (64, 64), "controlnet depth"),
        "refiner": (dict(BASE, refine="expert_ensemble_refiner", num_inference_steps=4), (64, 64), "[progress] refining"),
        "lora": (dict(BASE, lora_weights=str(tiny_sdxl_lora), lora_scale=0.9), (64, 64), "lora_scale=0.9"),
        "lcm": (dict(BASE, fast_mode="lcm", num_inference_steps=4, guidance_scale=1.0), (64, 64), "scheduler=LCM"),
        "lightning": (dict(BASE, fast_mode="lightning", num_inference_steps=2, guidance_scale=0.0), (64, 64), "mode=lightning"),
        "batch": (dict(BASE, num_outputs=2, output_format="jpg"), (64, 64), "txt2img"),
    }

    async def main():
        w = Worker("predict.py:Predictor", SDXL_DIR, weights=str(tiny_sdxl_weights), env=ENV, setup_timeout=120)
        await w.start()
        info = await w.wait_ready()
        assert info.status == "succeeded", info.logs
        assert "[ml] device=cpu" in info.logs and "safety checker: weights not available" in info.logs
        results = {}
        try:
            for name, (inputs, _, _) in cases.items():
                results[name] = await _predict(w, name, inputs)
        finally:
            await w.shutdown(grace=5.0)
        return results

    results = asyncio.run(asyncio.wait_for(main(), 600))
    for name, (inputs, size, expect_log) in cases.items():
        terminal, logs = results[name]
        assert isinstance(terminal, Done), (name, terminal, logs)
        outs = terminal.output
        assert isinstance(outs, list) and all(isinstance(o, FileOutput) for o in outs), (name, outs)
        assert len(outs) == inputs.get("num_outputs", 1)
        for o in outs:
            with Image.open(o.path) as im:
                assert im.size == size, (name, im.size)
        assert expect_log in logs, (name, logs)
        assert "[progress] denoising:" in logs


@pytest.mark.slow
def test_cogkit_predict_cli_matches_raw_pipeline(tiny_sdxl_weights, tmp_path):
    """`cogkit predict` in models/sdxl with COG_WEIGHTS: txt2img equals the raw pipeline."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    out = tmp_path / "out.png"
    env = {**os.environ, **ENV, "COG_WEIGHTS": str(tiny_sdxl_weights)}
    cmd = [str(REPO / ".venv" / "bin" / "cogkit") if (REPO / ".venv" / "bin" / "cogkit").exists() else sys.executable,
           "predict", "-i", "prompt=a photo of a cat", "-i", "width=64", "-i", "height=64",
           "-i", "num_inference_steps=2", "-i", "guidance_scale=5", "-i", "seed=9", "-i", "output_format=png",
           "-o", str(out)]
    if cmd[0] == sys.executable:
        cmd[1:1] = ["-m", "cogkit"]
    proc = subprocess.run(cmd, cwd=SDXL_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = sorted(tmp_path.glob("out*.png"))
    assert len(written) == 1, (proc.stderr, list(tmp_path.iterdir()))
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_weights)
    pipe.set_progress_bar_config(disable=True)
    want = pipe("a photo of a cat", width=64, height=64, num_inference_steps=2, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(9)).images[0]
    got = np.asarray(Image.open(written[0]).convert("RGB")).astype(int)
    assert np.abs(got - np.asarray(want).astype(int)).max() <= 1


@pytest.mark.slow
def test_cogkit_predict_cli_img2img_file_input(tiny_sdxl_weights, tmp_path):
    src = noise_image(tmp_path / "in.jpg", size=(97, 61), fmt="JPEG")
    env = {**os.environ, **ENV, "COG_WEIGHTS": str(tiny_sdxl_weights)}
    proc = subprocess.run(
        [sys.executable, "-m", "cogkit", "predict", "-i", f"image=@{src}", "-i", "num_inference_steps=2",
         "-i", "output_format=jpg", "-i", "seed=1", "-o", str(tmp_path / "o.jpg")],
        cwd=SDXL_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (written,) = sorted(tmp_path.glob("o*.jpg"))
    with Image.open(written) as im:
        assert im.format == "JPEG" and im.size == (96, 64)
