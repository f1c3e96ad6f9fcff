"""The optional invisible watermark of SDXL outputs: applied when the
invisible-watermark package is installed, and setup says clearly when it is not.
(The safety checker is shared by the image models: cogkit.ml.safety.)
"""

from __future__ import annotations

from typing import Any

from cogkit.ml.logs import log


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
