"""Writing output images: png/jpg/webp with ``output_quality``, tuned for speed.

Encoding is part of a prediction's latency (a 1024² PNG at the default level
costs 0.2-0.5 s on a small CPU; see bench/RESULTS.md), so each format uses its
fastest setting that does not change the pixels or the quality setting:
PNG ``compress_level=1``; JPEG without the extra ``optimize`` pass; WebP
``method=0`` (the encoder effort, not the quality).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from PIL import Image

from cogkit.handover import output_dir
from cogkit.types import Path

FORMATS = ("webp", "jpg", "png")
_EXT = {"webp": "webp", "jpg": "jpg", "jpeg": "jpg", "png": "png"}


def normalize_format(output_format: str) -> str:
    fmt = _EXT.get(output_format.strip().lower())
    if fmt is None:
        raise ValueError(f"output_format: must be one of {', '.join(FORMATS)}, got {output_format!r}")
    return fmt


def save_image(img: Image.Image, path: str | os.PathLike[str], output_format: str, output_quality: int = 80) -> Path:
    fmt = normalize_format(output_format)
    if not 0 <= output_quality <= 100:
        raise ValueError(f"output_quality: must be between 0 and 100, got {output_quality}")
    if fmt == "png":
        img.save(path, format="PNG", compress_level=1)
    elif fmt == "jpg":
        img.convert("RGB").save(path, format="JPEG", quality=output_quality)
    else:
        img.save(path, format="WEBP", quality=output_quality, method=0)
    return Path(os.fspath(path))


def save_images(
    images: Sequence[Image.Image],
    output_format: str = "webp",
    output_quality: int = 80,
    *,
    prefix: str = "out",
    directory: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write ``prefix-{i}.{ext}`` files into ``directory`` (by default a fresh folder from
    ``cogkit.handover.output_dir()``, which the runtime cleans up)."""
    fmt = normalize_format(output_format)
    # By default the files go to a handed-over temp folder: the runtime deletes them
    # once they are sent (server) or moves them into place (CLI).
    out_dir = os.fspath(directory) if directory is not None else output_dir()
    return [
        save_image(img, os.path.join(out_dir, f"{prefix}-{i}.{fmt}"), fmt, output_quality)
        for i, img in enumerate(images)
    ]
