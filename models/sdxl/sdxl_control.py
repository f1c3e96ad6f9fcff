"""ControlNet conditioning images: canny edges with OpenCV, depth maps with an
optional depth-estimation model (loaded only when its weights are available)."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

CANNY_LOW, CANNY_HIGH = 100, 200  # the thresholds Replicate's SDXL canny predictor uses


def canny(image: Image.Image, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> Image.Image:
    import cv2

    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


class DepthEstimator:
    """A transformers depth-estimation model (DPT/MiDaS, Depth-Anything, ...) from a
    local folder; produces a 3-channel depth map normalised to 0-255, near = bright."""

    def __init__(self, path: pathlib.Path, device: str) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.torch = torch
        self.processor = AutoImageProcessor.from_pretrained(path)
        self.model = AutoModelForDepthEstimation.from_pretrained(path).to(device).eval()
        self.device = device

    def __call__(self, image: Image.Image) -> Image.Image:
        torch = self.torch
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            depth = self.model(**inputs).predicted_depth
        if depth.dim() == 3:
            depth = depth[:, None]
        depth = torch.nn.functional.interpolate(depth.float(), size=image.size[::-1], mode="bicubic", align_corners=False)
        d = depth[0, 0]
        d = (d - d.min()) / (d.max() - d.min()).clamp(min=1e-12)
        arr = (d.cpu().numpy() * 255.0).round().astype(np.uint8)
        return Image.fromarray(np.stack([arr] * 3, axis=-1))
