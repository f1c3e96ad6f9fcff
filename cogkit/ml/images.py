"""Image and mask inputs: open any common format the same way, size them for a model.

* ``open_image``: JPEG/PNG/GIF(first frame)/WEBP/BMP/TIFF, EXIF orientation applied,
  transparency composited onto a background colour (never dropped), RGB out.
* ``open_mask``: any of those formats as a single-channel L image (white = repaint).
* ``fit_size``: scale a size down to the model's preferred area/side keeping the
  aspect ratio, rounded to the model's multiple (8 for SDXL, 16 for FLUX).
* ``resize_image`` / ``binarize_mask``: LANCZOS resize; masks are resized the same
  way and then thresholded at 50 % so every model sees the same hard mask.
* ``parse_outpaint`` / ``outpaint_canvas``: pad the canvas and build the mask.
"""

from __future__ import annotations

import math
import os
import re
from typing import Union

from PIL import Image, ImageOps, ImageSequence

PathLike = Union[str, "os.PathLike[str]"]
RGB = tuple[int, int, int]


class ImageInputError(ValueError):
    """An input image that cannot be used; the message names the field."""


def _open(path: PathLike, field: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise ImageInputError(f"{field}: file not found: {path}") from None
    except Exception as exc:  # PIL raises several types for unreadable data
        raise ImageInputError(f"{field}: not a readable image ({type(exc).__name__}: {exc})") from None
    if getattr(img, "is_animated", False):
        img = next(ImageSequence.Iterator(img)).copy()  # first frame of a GIF/WEBP animation
    # EXIF orientation: phones store rotated pixels plus a tag saying how to turn them.
    return ImageOps.exif_transpose(img) or img


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def open_image(path: PathLike, *, field: str = "image", background: RGB = (255, 255, 255)) -> Image.Image:
    """The image as RGB. Transparent pixels become ``background`` (the colour stored
    under them is arbitrary, so dropping alpha would expose noise)."""
    img = _open(path, field)
    if has_alpha(img):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


def open_mask(path: PathLike, *, field: str = "mask") -> Image.Image:
    """A mask as L (0 = keep, 255 = repaint). Transparent areas of a mask with alpha
    count as black (keep)."""
    img = _open(path, field)
    if has_alpha(img):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("L")
    return img.convert("L")


def round_to_multiple(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def fit_size(
    width: int,
    height: int,
    *,
    multiple: int = 8,
    max_pixels: int | None = None,
    max_side: int | None = None,
    upscale: bool = False,
) -> tuple[int, int]:
    """Scale (width, height) to fit max_pixels (area) and max_side keeping the aspect
    ratio, then round each side to ``multiple`` without going over the limits."""
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {width}x{height}")
    scale = 1.0 if not upscale else math.inf
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
    if max_side:
        scale = min(scale, max_side / max(width, height))
    if scale == math.inf:
        scale = 1.0
    w, h = width * scale, height * scale
    rw, rh = round_to_multiple(w, multiple), round_to_multiple(h, multiple)
    # Nearest rounding may step over a limit; floor that side instead.
    if (max_pixels and rw * rh > max_pixels) or (max_side and max(rw, rh) > max_side):
        rw = max(multiple, int(w // multiple) * multiple)
        rh = max(multiple, int(h // multiple) * multiple)
    return rw, rh


def resize_image(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    return img if img.size == tuple(size) else img.resize(size, Image.Resampling.LANCZOS)


def binarize_mask(mask: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
    """Resize like the image (LANCZOS), then threshold at 50 %: 255 = repaint, 0 = keep."""
    mask = mask.convert("L")
    if size is not None and mask.size != tuple(size):
        mask = mask.resize(size, Image.Resampling.LANCZOS)
    return mask.point(lambda v: 255 if v >= 128 else 0)


_PAD = re.compile(r"^(left|right|up|down|top|bottom)\s*[=:]\s*(\d+)$")
_RATIO = re.compile(r"^(?:aspect\s*[=:]\s*)?(\d+(?:\.\d+)?)\s*[:x/]\s*(\d+(?:\.\d+)?)$")


def parse_outpaint(spec: str, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, right, up, down) pixels to add, from either side pads such as
    "left=256,right=256" / "up=128" or a target aspect ratio such as "16:9"
    (the canvas grows evenly on the short side)."""
    text = spec.strip().lower()
    ratio = _RATIO.match(text)
    if ratio:
        a = float(ratio.group(1)) / float(ratio.group(2))
        if a <= 0:
            raise ValueError(f"outpaint: aspect ratio must be positive, got {spec!r}")
        if width / height < a:
            extra = round(height * a) - width
            return extra // 2, extra - extra // 2, 0, 0
        extra = round(width / a) - height
        return 0, 0, extra // 2, extra - extra // 2
    pads = {"left": 0, "right": 0, "up": 0, "down": 0}
    alias = {"top": "up", "bottom": "down"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _PAD.match(part)
        if not m:
            raise ValueError(
                f"outpaint: cannot read {part!r}; use e.g. 'left=256,right=256', 'up=128' or an aspect ratio like '16:9'"
            )
        pads[alias.get(m.group(1), m.group(1))] += int(m.group(2))
    if not any(pads.values()):
        raise ValueError("outpaint: nothing to add (all sides are 0)")
    return pads["left"], pads["right"], pads["up"], pads["down"]


def outpaint_canvas(
    img: Image.Image,
    pads: tuple[int, int, int, int],
    *,
    multiple: int = 8,
    overlap: int = 8,
) -> tuple[Image.Image, Image.Image]:
    """Pad ``img`` by (left, right, up, down), rounding the pads up so the canvas is a
    multiple of ``multiple``. The padding is filled by stretching the edge pixels
    (a neutral start the model repaints) and the mask is white over the padding plus
    ``overlap`` pixels into the original, so the seam is repainted too."""
    import numpy as np

    left, right, up, down = pads
    w, h = img.size
    extra_w = (-(w + left + right)) % multiple
    extra_h = (-(h + up + down)) % multiple
    # Give the rounding to a side that is padded already (or split it evenly).
    if left or right:
        right += extra_w if right else 0
        left += extra_w if not right else 0
    else:
        left, right = extra_w // 2, extra_w - extra_w // 2
    if up or down:
        down += extra_h if down else 0
        up += extra_h if not down else 0
    else:
        up, down = extra_h // 2, extra_h - extra_h // 2
    arr = np.asarray(img.convert("RGB"))
    canvas = np.pad(arr, ((up, down), (left, right), (0, 0)), mode="edge")
    mask = np.full(canvas.shape[:2], 255, dtype=np.uint8)
    # Keep the original minus an overlap band on each side that was padded.
    x0 = left + (overlap if left else 0)
    x1 = left + w - (overlap if right else 0)
    y0 = up + (overlap if up else 0)
    y1 = up + h - (overlap if down else 0)
    if x1 > x0 and y1 > y0:
        mask[y0:y1, x0:x1] = 0
    return Image.fromarray(canvas), Image.fromarray(mask)
