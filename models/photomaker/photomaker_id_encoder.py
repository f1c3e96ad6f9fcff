"""PhotoMaker v1's ID encoder: a CLIP vision tower, two projections and the fuse MLP.

Each ID image goes through the CLIP vision tower (ViT-L/14 in the published
checkpoint); its pooled output is projected twice, to the widths of SDXL's two
text encoders (768 and 1280), and the two are concatenated into one embedding as
wide as SDXL's prompt embeddings (2048). The fuse module then merges it into the
class word's contextual embedding:

    x = mlp1(concat(class_emb, id_emb)) + class_emb      (mlp1: 2D -> D, no inner residual)
    x = mlp2(x)                                          (mlp2: D -> D, with residual)
    fused = layer_norm(x)

where each MLP is LayerNorm -> Linear -> GELU -> Linear. The module and attribute
names below are the published checkpoint's key layout (``vision_model.*``,
``visual_projection``, ``visual_projection_2``, ``fuse_module.mlp1/mlp2/layer_norm``),
so its ``id_encoder`` state dict loads unchanged. The tower's size is read from the
tensors themselves, so the same code loads the full model and tiny test ones.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_HEAD_WIDTH = 64  # CLIP ViTs use 64-wide attention heads (ViT-L/14: 1024 = 16 x 64)
_IGNORED_KEYS = ("vision_model.embeddings.position_ids",)  # a buffer older transformers saved


class IDEncoderError(ValueError):
    """An ``id_encoder`` state dict that does not fit this architecture or base model."""


class _FuseMLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, residual: bool) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.act_fn = nn.GELU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act_fn(self.fc1(self.layernorm(x))))
        return y + x if self.residual else y


class FuseModule(nn.Module):
    """Merges an ID embedding into a class-word embedding of the same width."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp1 = _FuseMLP(2 * dim, dim, dim, residual=False)
        self.mlp2 = _FuseMLP(dim, dim, dim, residual=True)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, class_embeds: torch.Tensor, id_embeds: torch.Tensor) -> torch.Tensor:
        x = self.mlp1(torch.cat([class_embeds, id_embeds], dim=-1)) + class_embeds
        return self.layer_norm(self.mlp2(x))


class IDEncoder(nn.Module):
    def __init__(self, vision_config: Any, text_width_2: int) -> None:
        from transformers import CLIPVisionModelWithProjection

        super().__init__()
        tower = CLIPVisionModelWithProjection(vision_config)
        self.vision_model = tower.vision_model
        self.visual_projection = tower.visual_projection
        self.visual_projection_2 = nn.Linear(vision_config.hidden_size, text_width_2, bias=False)
        self.fuse_module = FuseModule(vision_config.projection_dim + text_width_2)
        self.image_size = int(vision_config.image_size)

    @property
    def width(self) -> int:
        """The ID embedding's width (must equal the base model's prompt-embedding width)."""
        return self.fuse_module.layer_norm.normalized_shape[0]

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[n, 3, S, S] -> [n, width]: one ID embedding per image."""
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return torch.cat([self.visual_projection(pooled), self.visual_projection_2(pooled)], dim=-1)

    def forward(self, pixel_values: torch.Tensor, prompt_embeds: torch.Tensor, positions: range) -> torch.Tensor:
        """``prompt_embeds`` [1, seq, width] with the rows at ``positions`` (one per ID
        image, in order) replaced by the fused ID embeddings; a new tensor."""
        if len(positions) != pixel_values.shape[0]:
            raise ValueError(f"{pixel_values.shape[0]} ID images but {len(positions)} class-token positions")
        id_embeds = self.embed_images(pixel_values).to(prompt_embeds.dtype)
        rows = torch.as_tensor(list(positions), device=prompt_embeds.device)
        out = prompt_embeds.clone()
        out[0, rows] = self.fuse_module(prompt_embeds[0, rows], id_embeds).to(out.dtype)
        return out

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """CLIP's preprocessing, as the reference's default CLIPImageProcessor does it:
        shortest side to S (bicubic), centre crop S x S, scale to [0, 1], normalise
        with CLIP's mean/std. -> float32 [n, 3, S, S]."""
        s = self.image_size
        arrays = []
        for img in images:
            img = _trim_extreme_aspect(img)
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(s * long / short)
            size = (s, new_long) if w <= h else (new_long, s)
            img = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
            left, top = (size[0] - s) // 2, (size[1] - s) // 2
            img = img.crop((left, top, left + s, top + s))
            arr = np.asarray(img, dtype=np.float32) / 255.0
            arrays.append((arr - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _trim_extreme_aspect(img: Image.Image, max_aspect: int = 4) -> Image.Image:
    """Centre-crop the long side to ``max_aspect`` x the short one. Only the central
    square survives CLIP's crop anyway, and resizing a 2x50000 strip's long side to
    scale would need gigabytes; ordinary photos pass unchanged."""
    w, h = img.size
    if max(w, h) <= max_aspect * min(w, h):
        return img
    if w > h:
        left = (w - max_aspect * h) // 2
        return img.crop((left, 0, left + max_aspect * h, h))
    top = (h - max_aspect * w) // 2
    return img.crop((0, top, w, top + max_aspect * w))


def vision_config_from(state_dict: dict[str, torch.Tensor]) -> tuple[Any, int]:
    """(CLIPVisionConfig, text_width_2) read off the tensor shapes of an ``id_encoder``
    state dict."""
    from transformers import CLIPVisionConfig

    need = ("vision_model.embeddings.class_embedding", "vision_model.embeddings.patch_embedding.weight",
            "vision_model.embeddings.position_embedding.weight", "vision_model.encoder.layers.0.mlp.fc1.weight",
            "visual_projection.weight", "visual_projection_2.weight", "fuse_module.layer_norm.weight")
    missing = [k for k in need if k not in state_dict]
    if missing:
        raise IDEncoderError(f"id_encoder: not PhotoMaker v1's layout (missing {', '.join(missing[:3])})")
    hidden = int(state_dict[need[0]].shape[0])
    patch = int(state_dict[need[1]].shape[-1])
    grid = math.isqrt(int(state_dict[need[2]].shape[0]) - 1)
    layers = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k)))
    config = CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=int(state_dict[need[3]].shape[0]), num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // CLIP_HEAD_WIDTH), patch_size=patch, image_size=grid * patch,
        projection_dim=int(state_dict[need[4]].shape[0]),
    )
    return config, int(state_dict[need[5]].shape[0])


def load_id_encoder(state_dict: dict[str, torch.Tensor]) -> IDEncoder:
    """An IDEncoder holding exactly the tensors of ``state_dict`` (strict: every key used)."""
    config, width_2 = vision_config_from(state_dict)
    state_dict = {k: v for k, v in state_dict.items() if k not in _IGNORED_KEYS}
    with torch.device("meta"):
        encoder = IDEncoder(config, width_2)
    try:
        result = encoder.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches
        raise IDEncoderError(f"id_encoder: tensors do not fit PhotoMaker v1's ID encoder: {exc}") from None
    if result.missing_keys or result.unexpected_keys:
        raise IDEncoderError(
            f"id_encoder: not PhotoMaker v1's layout (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})")
    # the non-persistent position_ids buffer is not in the state dict; rebuild it off meta
    emb = encoder.vision_model.embeddings
    emb.register_buffer("position_ids", torch.arange(emb.num_positions).expand((1, -1)), persistent=False)
    return encoder.eval()
