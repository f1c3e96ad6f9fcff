"""Output sizes for FLUX: aspect-ratio presets, megapixels, custom sizes, input images.

Pure and torch-free (predict.py imports it for the input choices). The preset table is
Replicate's cog-flux table: every side is a multiple of 16 (the VAE's 8x times the
transformer's 2x2 patches), and megapixels="0.25" halves each side of the "1" size.
"""

from __future__ import annotations

from cogkit.ml.images import fit_size

MULTIPLE = 16           # VAE factor 8 x 2x2 latent packing
MAX_INPUT_SIDE = 1440   # megapixels="match_input": input images are scaled down to fit this
MAX_MP_SIDE = 2048      # megapixels="1"/"0.25" with an input image: keep extreme ratios in range
CUSTOM_MIN, CUSTOM_MAX = 256, 1440

# aspect_ratio -> (width, height) at megapixels="1"
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
CUSTOM = "custom"
ASPECT_RATIO_CHOICES = [*ASPECT_RATIOS, CUSTOM]
MEGAPIXELS = {"1": 1.0, "0.25": 0.25}
MATCH_INPUT = "match_input"
MEGAPIXELS_CHOICES = [*MEGAPIXELS, MATCH_INPUT]


class SizeError(ValueError):
    """A size request that cannot be honoured; the message names the input."""


def preset_size(aspect_ratio: str, megapixels: str = "1") -> tuple[int, int]:
    """(width, height) of a preset: the table at "1", each side halved at "0.25"."""
    try:
        w, h = ASPECT_RATIOS[aspect_ratio]
    except KeyError:
        raise SizeError(
            f"aspect_ratio: unknown preset {aspect_ratio!r}; choose one of {', '.join(ASPECT_RATIO_CHOICES)}"
        ) from None
    if megapixels == "1" or megapixels == MATCH_INPUT:  # match_input without an image: the full size
        return w, h
    if megapixels == "0.25":
        return w // 2, h // 2
    raise SizeError(f"megapixels: must be one of {', '.join(MEGAPIXELS_CHOICES)}, got {megapixels!r}")


def round_up(value: int, multiple: int = MULTIPLE) -> int:
    return -(-value // multiple) * multiple


def custom_size(width: int | None, height: int | None) -> tuple[int, int]:
    """aspect_ratio="custom": both sides given, each rounded up to a multiple of 16."""
    if width is None or height is None:
        missing = " and ".join(n for n, v in (("width", width), ("height", height)) if v is None)
        raise SizeError(f"{missing}: required when aspect_ratio is 'custom'")
    for name, v in (("width", width), ("height", height)):
        if not CUSTOM_MIN <= v <= CUSTOM_MAX:
            raise SizeError(f"{name}: must be between {CUSTOM_MIN} and {CUSTOM_MAX}, got {v}")
    return min(round_up(width), CUSTOM_MAX), min(round_up(height), CUSTOM_MAX)


def image_size(width: int, height: int, megapixels: str) -> tuple[int, int]:
    """Output size for an input image of width x height: its aspect ratio at about
    ``megapixels`` million pixels (scaling up or down), or with "match_input" its own
    size scaled down to fit 1440 x 1440; sides multiples of 16 either way."""
    if megapixels == MATCH_INPUT:
        return fit_size(width, height, multiple=MULTIPLE, max_side=MAX_INPUT_SIDE)
    try:
        mp = MEGAPIXELS[megapixels]
    except KeyError:
        raise SizeError(f"megapixels: must be one of {', '.join(MEGAPIXELS_CHOICES)}, got {megapixels!r}") from None
    return fit_size(width, height, multiple=MULTIPLE, max_pixels=int(mp * 1024 * 1024),
                    max_side=MAX_MP_SIDE, upscale=True)


def output_size(
    aspect_ratio: str,
    megapixels: str,
    width: int | None = None,
    height: int | None = None,
    image_wh: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The one rule for a request's output size.

    * an input image sets the aspect ratio (``aspect_ratio`` must then be left at a
      preset, and width/height unset);
    * aspect_ratio="custom" uses width x height;
    * otherwise the preset at ``megapixels``.
    """
    if aspect_ratio != CUSTOM and (width is not None or height is not None):
        given = " and ".join(n for n, v in (("width", width), ("height", height)) if v is not None)
        raise SizeError(f"{given}: only used when aspect_ratio is 'custom' (got aspect_ratio={aspect_ratio!r})")
    if image_wh is not None:
        if aspect_ratio == CUSTOM:
            raise SizeError("aspect_ratio: 'custom' cannot be combined with an input image (the image sets the size)")
        return image_size(image_wh[0], image_wh[1], megapixels)
    if aspect_ratio == CUSTOM:
        return custom_size(width, height)
    return preset_size(aspect_ratio, megapixels)
