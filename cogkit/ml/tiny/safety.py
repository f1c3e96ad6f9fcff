"""A tiny CompVis safety checker that flags every image, or none (so both outcomes
of cogkit.ml.safety can be tested)."""

from __future__ import annotations

import os
import pathlib


def build_safety_checker(out: str | os.PathLike[str], *, flag_all: bool, seed: int = 8) -> pathlib.Path:
    """A tiny CompVis safety checker + CLIP image processor. Its concept thresholds are
    set so that it flags every image (or none): random weights decide nothing useful."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=1000, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(image_size=30, patch_size=2, hidden_size=32, projection_dim=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=37),
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(cfg)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0 if flag_all else 10.0)
        checker.special_care_embeds_weights.fill_(10.0)
    checker.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(out)
    return pathlib.Path(out)
