"""Tiny random-weight PhotoMaker weights in the published layout.

* ``id_encoder_state(gen)`` / ``lora_state(unet, gen)``: the two state dicts.
* ``build_photomaker_checkpoint(sdxl_dir, path)``: a checkpoint in TencentARC's
  ``photomaker-v1`` layout: ``id_encoder`` (a tiny CLIP vision tower with
  ``visual_projection``, ``visual_projection_2`` and ``fuse_module.*``) and
  ``lora_weights`` (a rank-4 LoRA on every UNet attention projection, named
  ``unet.<path>.processor.to_q_lora.down.weight`` etc.). ``.bin`` writes the
  published pickled dict; ``.safetensors`` the flat prefixed form. The keys are
  written from the published layout here, not taken from the predictor's classes,
  so loading them tests the predictor's loader.
* ``build_photomaker_weights(dir)``: the predictor's weights folder: the tiny SDXL
  base (cogkit.ml.tiny.sdxl, its UNet sample size set to 8 so the native output
  is 64x64) plus ``photomaker-v1.bin``.
"""

from __future__ import annotations

import json
import os
import pathlib

from cogkit.ml.tiny.sdxl import build_sdxl

# The tiny tower: 32px images in 8px patches, 64 wide (one 64-wide head, as CLIP's
# head width gives), projections to the tiny text encoders' widths 32 + 32 = the
# tiny UNet's cross-attention width 64.
VISION = dict(hidden=64, layers=2, intermediate=96, patch=8, image=32, projection=32)
TEXT_WIDTH_2 = 32
NATIVE_SIZE = 64


def id_encoder_state(gen) -> dict:
    """A tiny ``id_encoder`` state dict in the published key layout (random weights)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    v = VISION
    cfg = CLIPVisionConfig(hidden_size=v["hidden"], intermediate_size=v["intermediate"], num_hidden_layers=v["layers"],
                           num_attention_heads=1, patch_size=v["patch"], image_size=v["image"],
                           projection_dim=v["projection"])
    state = {k: v.clone() for k, v in CLIPVisionModelWithProjection(cfg).state_dict().items()}
    dim = v["projection"] + TEXT_WIDTH_2

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=gen) * scale

    state["visual_projection_2.weight"] = rand(TEXT_WIDTH_2, v["hidden"])
    for mlp, d_in in (("mlp1", 2 * dim), ("mlp2", dim)):
        state[f"fuse_module.{mlp}.layernorm.weight"] = 1 + rand(d_in, scale=0.1)
        state[f"fuse_module.{mlp}.layernorm.bias"] = rand(d_in, scale=0.1)
        state[f"fuse_module.{mlp}.fc1.weight"] = rand(dim, d_in)
        state[f"fuse_module.{mlp}.fc1.bias"] = rand(dim, scale=0.1)
        state[f"fuse_module.{mlp}.fc2.weight"] = rand(dim, dim)
        state[f"fuse_module.{mlp}.fc2.bias"] = rand(dim, scale=0.1)
    state["fuse_module.layer_norm.weight"] = 2 + rand(dim, scale=0.1)  # fused rows stand out
    state["fuse_module.layer_norm.bias"] = rand(dim, scale=0.1)
    return state


def lora_state(unet, gen, *, rank: int = 4, scale: float = 0.3) -> dict:
    """A random LoRA on every attention projection of ``unet``, named as the published
    checkpoint's ``lora_weights`` (on the generator's device)."""
    import torch

    state = {}
    for name, module in unet.named_modules():
        if not name.endswith((".attn1", ".attn2")):
            continue
        for proj, layer in (("to_q", module.to_q), ("to_k", module.to_k), ("to_v", module.to_v),
                            ("to_out", module.to_out[0])):
            prefix = f"unet.{name}.processor.{proj}_lora"
            state[f"{prefix}.down.weight"] = torch.randn(rank, layer.in_features, generator=gen, device=gen.device) * scale
            state[f"{prefix}.up.weight"] = torch.randn(layer.out_features, rank, generator=gen, device=gen.device) * scale
    return state


def build_photomaker_checkpoint(sdxl_dir: str | os.PathLike[str], path: str | os.PathLike[str], *,
                                seed: int = 21) -> pathlib.Path:
    import torch

    path = pathlib.Path(path)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    from diffusers import UNet2DConditionModel

    id_encoder = id_encoder_state(gen)
    lora = lora_state(UNet2DConditionModel.from_pretrained(sdxl_dir, subfolder="unet"), gen)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        flat = {f"id_encoder.{k}": v.contiguous() for k, v in id_encoder.items()}
        flat.update({f"lora_weights.{k}": v.contiguous() for k, v in lora.items()})
        save_file(flat, str(path))
    else:
        torch.save({"id_encoder": id_encoder, "lora_weights": lora}, path)
    return path


def build_photomaker_weights(out: str | os.PathLike[str], *, checkpoint: str = "photomaker-v1.bin") -> pathlib.Path:
    out = pathlib.Path(out)
    build_sdxl(out)
    cfg_path = out / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["sample_size"] = NATIVE_SIZE // 8  # the pipeline's default size = sample_size x VAE factor 8
    cfg_path.write_text(json.dumps(cfg, indent=2))
    build_photomaker_checkpoint(out, out / checkpoint)
    return out
