"""Optional safety checker and watermark for SDXL outputs.

Neither is required: each is loaded when its weights/package are available and
setup says clearly when it is not (the predictor then runs without it).
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
from PIL import Image

from cogkit.ml.logs import log


class SafetyChecker:
    """CompVis' StableDiffusionSafetyChecker + its CLIP image processor from one folder."""

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


def make_watermarker() -> Any | None:
    """diffusers' invisible SDXL watermark, or None (with a log line) when the
    invisible-watermark package is not installed."""
    from diffusers.utils.import_utils import is_invisible_watermark_available

    if not is_invisible_watermark_available():
        log("[sdxl] watermark: the invisible-watermark package is not installed; apply_watermark has no effect")
        return None
    from diffusers.pipelines.stable_diffusion_xl.watermark import StableDiffusionXLWatermarker

    log("[sdxl] watermark: invisible watermark available (apply_watermark=true applies it)")
    return StableDiffusionXLWatermarker()
