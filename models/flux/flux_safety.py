"""Optional NSFW filter for FLUX outputs (CompVis' StableDiffusionSafetyChecker).

Not required: it is loaded when its weights are available (``<weights>/safety-checker``,
COGKIT_FLUX_SAFETY_CHECKER, or CompVis/stable-diffusion-safety-checker already in the
Hugging Face cache), and setup says clearly when it is not. Flagged images are
dropped from the output, as Replicate's FLUX models do.

(The same class exists for SDXL in models/sdxl/sdxl_safety.py; a model folder is
built into its own image, so each carries its copy until it moves to cogkit/ml/.)
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np
from PIL import Image

from cogkit.ml.device import DevicePlan
from cogkit.ml.logs import log

DEFAULT = "CompVis/stable-diffusion-safety-checker"


class SafetyChecker:
    """StableDiffusionSafetyChecker + its CLIP image processor, from one folder."""

    def __init__(self, path: pathlib.Path, device: str, dtype: Any) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        self.processor = CLIPImageProcessor.from_pretrained(path)
        self.model = StableDiffusionSafetyChecker.from_pretrained(path, dtype=dtype).to(device).eval()
        self.device, self.dtype = device, dtype

    def flags(self, images: list[Image.Image]) -> list[bool]:
        """True for each image the checker considers NSFW."""
        import torch

        clip = self.processor(images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        arrays = np.stack([np.asarray(i, dtype=np.float32) / 255.0 for i in images])
        with torch.inference_mode():
            _, has_nsfw = self.model(images=arrays, clip_input=clip)
        return [bool(x) for x in has_nsfw]


def load_safety_checker(root: pathlib.Path | None, plan: DevicePlan) -> SafetyChecker | None:
    from cogkit.ml.weights import WeightsError, resolve_weights

    path: pathlib.Path | None = None
    if root is not None and (root / "safety-checker").is_dir():
        path = root / "safety-checker"
    else:
        source = os.environ.get("COGKIT_FLUX_SAFETY_CHECKER", "").strip() or DEFAULT
        try:
            path = resolve_weights(source, one_copy=True)
        except WeightsError as exc:
            log(f"[flux] safety checker: not available ({exc}); images are not filtered "
                "(disable_safety_checker has no effect)")
            return None
    try:
        checker = SafetyChecker(path, plan.device, plan.dtype)
    except Exception as exc:
        log(f"[flux] safety checker: could not load {path} ({type(exc).__name__}: {exc}); images are not filtered")
        return None
    log(f"[flux] safety checker loaded from {path}")
    return checker
