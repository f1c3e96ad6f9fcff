import numpy as np
import pytest
import torch

from cogkit import progress as lines
from cogkit.ml import progress, schedulers
from tests.tiny_models import tiny_sdxl_weights  # noqa: F401  (fixture)


def _base_config():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                  beta_schedule="scaled_linear", timestep_spacing="leading").config


EXPECTED = {
    "DDIM": "DDIMScheduler",
    "DPMSolverMultistep": "DPMSolverMultistepScheduler",
    "HeunDiscrete": "HeunDiscreteScheduler",
    "KarrasDPM": "DPMSolverMultistepScheduler",
    "K_EULER_ANCESTRAL": "EulerAncestralDiscreteScheduler",
    "K_EULER": "EulerDiscreteScheduler",
    "PNDM": "PNDMScheduler",
    "LCM": "LCMScheduler",
    "DPM++2M SDE Karras": "DPMSolverMultistepScheduler",
}


def test_all_names_listed():
    assert schedulers.SCHEDULER_NAMES == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_make_scheduler(name):
    s = schedulers.make_scheduler(name, _base_config())
    assert type(s).__name__ == EXPECTED[name]
    assert s.config.beta_schedule == "scaled_linear" and s.config.beta_end == 0.012
    assert schedulers.scheduler_name(s) == name
    s.set_timesteps(4)
    assert len(s.timesteps) >= 4


def test_variants_configured():
    k = schedulers.make_scheduler("KarrasDPM", _base_config())
    assert k.config.use_karras_sigmas and k.config.algorithm_type == "dpmsolver++"
    sde = schedulers.make_scheduler("DPM++2M SDE Karras", _base_config())
    assert sde.config.algorithm_type == "sde-dpmsolver++" and sde.config.use_karras_sigmas
    t = schedulers.make_scheduler("K_EULER", _base_config(), trailing=True)
    assert t.config.timestep_spacing == "trailing"
    t.set_timesteps(1)
    assert int(t.timesteps[0]) == 999


def test_unknown_scheduler():
    with pytest.raises(ValueError, match="scheduler: unknown scheduler 'euler'"):
        schedulers.make_scheduler("euler", _base_config())


def test_denoise_progress_lines(tiny_sdxl_weights, capsys):
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    progress.quiet_libraries()
    pipe = progress.quiet_pipeline(StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_weights))
    assert "Loading" not in capsys.readouterr().err
    cb = progress.DenoiseProgress()
    pipe("a cat", height=64, width=64, num_inference_steps=3, callback_on_step_end=cb, output_type="np")
    err = capsys.readouterr().err
    got = [lines.parse_progress(line) for line in err.splitlines() if line.startswith("[progress]")]
    assert got == [("denoising", 1, 3), ("denoising", 2, 3), ("denoising", 3, 3)]
    assert "it/s" not in err  # diffusers' own bar is off
    # img2img runs fewer steps than asked (strength 0.5 of 4): the total says so
    i2i = progress.quiet_pipeline(StableDiffusionXLImg2ImgPipeline.from_pipe(pipe))
    image = np.zeros((64, 64, 3), np.float32)
    i2i("a cat", image=torch.from_numpy(image).permute(2, 0, 1)[None], strength=0.5, num_inference_steps=4,
        callback_on_step_end=progress.DenoiseProgress("refining"), output_type="np")
    got = [lines.parse_progress(line) for line in capsys.readouterr().err.splitlines() if line.startswith("[progress]")]
    assert got == [("refining", 1, 2), ("refining", 2, 2)]
