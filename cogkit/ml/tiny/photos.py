"""A training set to fine-tune tiny models on: ``build_photo_archive(file, n)`` writes a
zip (or tar, by the file's suffix) of ``n`` small pictures of one made-up subject (a
coloured disc on a striped background; sizes and aspect ratios vary), some with a
caption file beside them. Deterministic for a seed, so trainings on it can be compared.
"""

from __future__ import annotations

import io
import os
import pathlib
import random
import tarfile
import zipfile

from PIL import Image, ImageDraw

SIZES = ((96, 96), (128, 96), (96, 128))


def _picture(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, (30, 40, 60))
    draw = ImageDraw.Draw(img)
    for x in range(0, w, 12):
        draw.rectangle([x, 0, x + 5, h], fill=(60, 70 + rng.randrange(20), 110))
    r = min(w, h) // 4
    cx, cy = rng.randrange(r, w - r), rng.randrange(r, h - r)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(230, 120 + rng.randrange(40), 40))
    return img


def build_photo_archive(
    out_file: str | os.PathLike[str], n: int = 6, *, seed: int = 0, captions: int = 2, fmt: str = "png"
) -> pathlib.Path:
    """``n`` pictures (the first ``captions`` of them captioned) in a .zip or .tar."""
    out_file = pathlib.Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(n):
        buf = io.BytesIO()
        _picture(rng, SIZES[i % len(SIZES)]).save(buf, format={"jpg": "JPEG"}.get(fmt, fmt.upper()))
        files[f"photos/img{i:02d}.{fmt}"] = buf.getvalue()
        if i < captions:
            files[f"photos/img{i:02d}.txt"] = b"an orange disc on blue stripes\n"
    if out_file.suffix == ".zip":
        with zipfile.ZipFile(out_file, "w") as zf:
            for name, data in files.items():
                zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    else:
        with tarfile.open(out_file, "w") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return out_file
