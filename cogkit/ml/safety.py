"""The optional NSFW filter of the image models (CompVis' StableDiffusionSafetyChecker).

Not required: a model loads it when its weights are available and says clearly at
setup when they are not; the model then runs unfiltered.

* ``load_safety_checker(root, env_var, plan, tag)``: the checker from, in order,
  ``<root>/safety-checker/``, the folder/URL/Hugging Face id in ``env_var``, then
  CompVis/stable-diffusion-safety-checker (with HF_HUB_OFFLINE=1 only when cached);
  None, with a log line, when none loads.
* ``SafetyChecker(path, device, dtype)``: the checker + its CLIP image processor
  from one folder; ``.flags(images)``.
* ``filter_nsfw(checker, images, disabled, tag)``: the images not flagged; an
  InputError when every one is.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
from PIL import Image

from cogkit.ml.device import DevicePlan
from cogkit.ml.errors import InputError
from cogkit.ml.logs import log

DEFAULT = "CompVis/stable-diffusion-safety-checker"
FOLDER = "safety-checker"  # its sub-folder in a model's weights folder


class SafetyChecker:
    """StableDiffusionSafetyChecker + its CLIP image processor, from one folder."""

    def __init__(self, path: pathlib.Path, device: str, dtype: Any) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        from cogkit.ml.weights import diffusers_variant

        self.processor = CLIPImageProcessor.from_pretrained(path)
        # variant: a Hub snapshot fetched with one_copy=True may hold only model.fp16.safetensors
        self.model = StableDiffusionSafetyChecker.from_pretrained(
            path, dtype=dtype, variant=diffusers_variant(path)).to(device).eval()
        self.device, self.dtype = device, dtype

    def flags(self, images: list[Image.Image]) -> list[bool]:
        """True for each image the checker considers NSFW."""
        import torch

        clip = self.processor(images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        arrays = np.stack([np.asarray(i, dtype=np.float32) / 255.0 for i in images])
        with torch.inference_mode():
            _, has_nsfw = self.model(images=arrays, clip_input=clip)
        return [bool(x) for x in has_nsfw]


def load_safety_checker(root: pathlib.Path | None, env_var: str, plan: DevicePlan, tag: str) -> SafetyChecker | None:
    from cogkit.ml.weights import resolve_optional

    path = resolve_optional(root, FOLDER, env_var, DEFAULT, tag=tag, label="safety checker")
    if path is None:
        log(f"[{tag}] safety checker: weights not available; skipping NSFW filtering "
            "(disable_safety_checker has no effect)")
        return None
    try:
        checker = SafetyChecker(path, plan.device, plan.dtype)
    except Exception as exc:
        log(f"[{tag}] safety checker: could not load {path} ({type(exc).__name__}: {exc}); NSFW filtering is off")
        return None
    log(f"[{tag}] safety checker loaded from {path}")
    return checker


def filter_nsfw(checker: SafetyChecker | None, images: list[Image.Image], disabled: bool, tag: str) -> list[Image.Image]:
    """Drop the images ``checker`` flags (as the reference predictors do); none left is an InputError."""
    if disabled or checker is None:
        return images
    kept = [img for img, flagged in zip(images, checker.flags(images)) if not flagged]
    if len(kept) < len(images):
        log(f"[{tag}] safety checker: dropped {len(images) - len(kept)} of {len(images)} outputs as NSFW")
    if not kept:
        raise InputError("NSFW content detected in every output. Try a different prompt or seed "
                         "(or set disable_safety_checker=true)")
    return kept
