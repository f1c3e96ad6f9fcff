"""LoRA training on the FLUX transformer (text encoders and VAE frozen).

The objective is FLUX's own, rectified flow: for clean latents x0 and noise n, the
transformer sees x_t = (1 - t) x0 + t n at time t and learns the velocity n - x0;
t is drawn logit-normal (sigmoid of a standard normal), which weights the middle
of the schedule, where the image's content is decided. The guidance embedding of
FLUX.1-dev gets 1.0 while training, as the common FLUX LoRA trainers give it.

Images are encoded by the VAE and captions by T5 + CLIP once, before the first
step; only the LoRA layers get gradients. The saved file is diffusers' FLUX LoRA
layout (``transformer.<module>.lora_A.weight``), which ``lora_weights`` loads.
"""

from __future__ import annotations

import pathlib
from typing import Any

import torch

from cogkit.ml.device import DevicePlan
from cogkit.ml.lora_train import LORA_FILE, LoraModel
from cogkit.ml.train_data import Example

# Attention and feed-forward projections of the double and single blocks: the
# layers FLUX LoRA trainers adapt, and which the predictor's merge path knows.
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                  "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "proj_mlp", "proj_out"]


class FluxLora(LoraModel):
    name = "flux"
    target_modules = TARGET_MODULES

    def __init__(self, pipe: Any, plan: DevicePlan, variant: Any, base_weights: str | None = None) -> None:
        super().__init__(pipe, plan, base_weights)
        self.variant = variant  # flux_engine.Variant: schnell or dev
        self.max_sequence_length = variant.max_sequence_length
        self.guidance = bool(pipe.transformer.config.get("guidance_embeds"))

    def describe(self) -> dict[str, Any]:
        return {"variant": self.variant.name}

    @property
    def denoiser(self) -> Any:
        return self.pipe.transformer

    def encode_prompt(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, pooled, _ = self.pipe.encode_prompt(text, prompt_2=None, device=self.device(),
                                                    max_sequence_length=self.max_sequence_length)
        return embeds[0].to(self.plan.dtype), pooled[0].to(self.plan.dtype)

    def encode_image(self, example: Example) -> dict[str, Any]:
        vae = self.pipe.vae
        latents = vae.encode(self.pixels(example.image, vae.dtype)).latent_dist.mode()  # the mean: same every run
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        return {"latents": latents[0].to(self.plan.dtype)}

    def loss(self, items: list[dict[str, Any]], prompts: list[Any], generator: torch.Generator) -> torch.Tensor:
        from diffusers import FluxPipeline

        dev, dtype = self.device(), self.plan.dtype
        x0 = torch.stack([it["latents"] for it in items]).float()
        b, c, h, w = x0.shape
        noise = torch.randn(x0.shape, generator=generator).to(dev)
        t = torch.sigmoid(torch.randn((b,), generator=generator)).to(dev)
        xt = (1 - t.view(b, 1, 1, 1)) * x0 + t.view(b, 1, 1, 1) * noise
        packed = FluxPipeline._pack_latents(xt.to(dtype), b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, dev, dtype)
        embeds = torch.stack([p[0] for p in prompts])
        pooled = torch.stack([p[1] for p in prompts])
        txt_ids = torch.zeros(embeds.shape[1], 3, device=dev, dtype=dtype)
        guidance = torch.ones((b,), device=dev, dtype=torch.float32) if self.guidance else None
        pred = self.denoiser(
            hidden_states=packed, timestep=t.to(dtype), guidance=guidance, pooled_projections=pooled,
            encoder_hidden_states=embeds, txt_ids=txt_ids, img_ids=img_ids, return_dict=False,
        )[0]
        scale = self.pipe.vae_scale_factor
        pred = FluxPipeline._unpack_latents(pred, h * scale, w * scale, scale)
        return torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())

    def save_lora(self, folder: pathlib.Path) -> None:
        from diffusers import FluxPipeline

        FluxPipeline.save_lora_weights(folder, transformer_lora_layers=self.lora_state(), weight_name=LORA_FILE)
