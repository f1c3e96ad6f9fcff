"""LoRA training on the SDXL UNet (both text encoders and the VAE frozen).

The objective is the one SDXL was trained with: DDPM noise at a uniformly drawn
timestep, the UNet predicting the noise (or the velocity, for v-prediction
weights), from the two text encoders' hidden states, the pooled embedding and the
size/crop conditioning ("time ids": original size, crop corner, target size; the
bucket's size, uncropped, since each image is scaled whole into its bucket).

Latents and prompt embeddings are computed once, before the first step. The saved
file is diffusers' SDXL LoRA layout (``unet.<module>.lora_A.weight``), which the
predictor's ``lora_weights`` loads.
"""

from __future__ import annotations

import pathlib
from typing import Any

import torch

from cogkit.ml.device import DevicePlan
from cogkit.ml.lora_train import LORA_FILE, LoraModel
from cogkit.ml.train_data import Example

# The attention projections, as diffusers' SDXL LoRA scripts and most SDXL LoRAs adapt.
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


class SdxlLora(LoraModel):
    name = "sdxl"
    target_modules = TARGET_MODULES

    def __init__(self, pipe: Any, plan: DevicePlan, base_weights: str | None = None) -> None:
        from diffusers import DDPMScheduler

        super().__init__(pipe, plan, base_weights)
        self.noise = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction = self.noise.config.prediction_type

    @property
    def denoiser(self) -> Any:
        return self.pipe.unet

    def describe(self) -> dict[str, Any]:
        return {"prediction_type": self.prediction}

    def encode_prompt(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, _, pooled, _ = self.pipe.encode_prompt(text, device=self.device(), do_classifier_free_guidance=False)
        return embeds[0].to(self.plan.dtype), pooled[0].to(self.plan.dtype)

    def encode_image(self, example: Example) -> dict[str, Any]:
        vae, dtype = self.pipe.vae, self.plan.dtype
        latents = vae.encode(self.pixels(example.image, vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
        w, h = example.size
        time_ids = torch.tensor([h, w, 0, 0, h, w], dtype=dtype, device=self.device())
        return {"latents": latents[0].to(dtype), "time_ids": time_ids}

    def loss(self, items: list[dict[str, Any]], prompts: list[Any], generator: torch.Generator) -> torch.Tensor:
        dev, dtype = self.device(), self.plan.dtype
        x0 = torch.stack([it["latents"] for it in items]).float()
        b = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator).to(dev)
        steps = torch.randint(0, self.noise.config.num_train_timesteps, (b,), generator=generator).to(dev)
        noisy = self.noise.add_noise(x0, noise, steps)
        target = self.noise.get_velocity(x0, noise, steps) if self.prediction == "v_prediction" else noise
        pred = self.denoiser(
            noisy.to(dtype), steps,
            encoder_hidden_states=torch.stack([p[0] for p in prompts]),
            added_cond_kwargs={"text_embeds": torch.stack([p[1] for p in prompts]),
                               "time_ids": torch.stack([it["time_ids"] for it in items])},
            return_dict=False,
        )[0]
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    def save_lora(self, folder: pathlib.Path) -> None:
        from diffusers import StableDiffusionXLPipeline

        StableDiffusionXLPipeline.save_lora_weights(folder, unet_lora_layers=self.lora_state(), weight_name=LORA_FILE)
