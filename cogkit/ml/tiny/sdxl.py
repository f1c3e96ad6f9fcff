"""Tiny random-weight SDXL models (the SDXL predictor's weights folder and its extras).

* ``build_sdxl(dir)``: a tiny SDXL pipeline folder (UNet 8/16 channels, VAE x8, two
  CLIP text encoders) saved with save_pretrained; ``turbo=True`` saves it with the
  trailing-timestep Euler-ancestral scheduler SDXL-Turbo ships with.
* ``build_sdxl_controlnet(sdxl_dir, dir)``, ``build_sdxl_refiner(dir)``,
  ``build_sdxl_lora(sdxl_dir, dir)`` (a random rank-4 UNet LoRA,
  ``pytorch_lora_weights.safetensors``), ``build_depth_annotator(dir)`` (a tiny DPT).
* ``build_sdxl_weights(dir)``: the base plus ``controlnet-canny/``, ``controlnet-depth/``,
  ``refiner/`` and ``lcm-lora/``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from cogkit.ml.tiny.tokenizers import clip_text_config, clip_tokenizer


def sdxl_vae() -> Any:
    """A 4-level, 8-channel AutoencoderKL (x8, 4 latent channels)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, latent_channels=4, sample_size=64, norm_num_groups=8,
    )


def sdxl_unet(cross_attention_dim: int = 64, class_dim: int = 80) -> Any:
    """A 2-level SDXL UNet (8/16 channels, text-time conditioning)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=class_dim,  # 6*8 + te2.projection_dim (5*8+32 with aesthetics)
        cross_attention_dim=cross_attention_dim,          # te1.hidden + te2.hidden
        norm_num_groups=8,
    )


def build_sdxl(out: str | os.PathLike[str], *, seed: int = 0, turbo: bool = False) -> pathlib.Path:
    """A tiny SDXL pipeline folder (save_pretrained); ``turbo``: with the trailing-timestep
    Euler-ancestral scheduler SDXL-Turbo ships with."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    out = pathlib.Path(out)
    tok, tok2 = clip_tokenizer(), clip_tokenizer()
    torch.manual_seed(seed)
    unet = sdxl_unet()
    vae = sdxl_vae()
    te = CLIPTextModel(clip_text_config(tok))
    te2 = CLIPTextModelWithProjection(clip_text_config(tok2))
    sched_kw = dict(beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear")
    if turbo:
        scheduler = EulerAncestralDiscreteScheduler(timestep_spacing="trailing", **sched_kw)
    else:
        scheduler = EulerDiscreteScheduler(timestep_spacing="leading", **sched_kw)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=scheduler, add_watermarker=False)
    pipe.save_pretrained(out)
    return out


def build_sdxl_controlnet(sdxl_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, seed: int = 1) -> pathlib.Path:
    """A ControlNet matching the UNet in ``sdxl_dir``, its zero-initialised layers
    randomised so the control image changes the output."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(sdxl_dir, subfolder="unet")
    # 3 stride-2 convs in the conditioning embedding = log2(VAE scale factor 8)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cn.parameters():
            if not p.abs().any():  # ControlNet starts with zero convs: no effect until trained
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    cn.save_pretrained(out)
    return pathlib.Path(out)


def build_sdxl_refiner(out: str | os.PathLike[str], *, seed: int = 2) -> pathlib.Path:
    """A refiner-style img2img pipeline (aesthetic-score conditioning, text encoder 2 only)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection

    tok2 = clip_tokenizer()
    torch.manual_seed(seed)
    unet = sdxl_unet(cross_attention_dim=32, class_dim=72)
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=sdxl_vae(), text_encoder=None, text_encoder_2=CLIPTextModelWithProjection(clip_text_config(tok2)),
        tokenizer=None, tokenizer_2=tok2, unet=unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                         beta_schedule="scaled_linear", timestep_spacing="leading"),
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False, add_watermarker=False,
    )
    pipe.save_pretrained(out)
    return pathlib.Path(out)


def build_sdxl_lora(sdxl_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, seed: int = 3, rank: int = 4) -> pathlib.Path:
    """A random UNet LoRA on the attention projections, in diffusers' file layout."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(sdxl_dir, subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    StableDiffusionXLPipeline.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(unet))
    return pathlib.Path(out) / "pytorch_lora_weights.safetensors"


def build_depth_annotator(out: str | os.PathLike[str], *, seed: int = 6) -> pathlib.Path:
    """A tiny DPT depth-estimation model + image processor (transformers layout)."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(seed)
    cfg = DPTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=4, backbone_out_indices=[0, 1, 2, 3],
                    num_attention_heads=4, intermediate_size=37, neck_hidden_sizes=[16, 32, 32, 32],
                    reassemble_factors=[4, 2, 1, 0.5], fusion_hidden_size=16, is_hybrid=False)
    DPTForDepthEstimation(cfg).save_pretrained(out)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(out)
    return pathlib.Path(out)


def build_sdxl_weights(out: str | os.PathLike[str]) -> pathlib.Path:
    """The SDXL predictor's weights folder with every optional extra present."""
    out = pathlib.Path(out)
    build_sdxl(out)
    build_sdxl_controlnet(out, out / "controlnet-canny", seed=1)
    build_sdxl_controlnet(out, out / "controlnet-depth", seed=4)
    build_sdxl_refiner(out / "refiner")
    build_sdxl_lora(out, out / "lcm-lora", seed=5)
    return out
