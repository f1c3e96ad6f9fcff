"""Training images for LoRA fine-tuning, read from the archive a user uploads.

``load_images(archive, trigger_word, resolution, multiple)`` reads a zip or tar of
JPEG/PNG/WEBP images (in any folders), each captioned by a same-named ``.txt`` beside
it or else "a photo of TRIGGER", and sizes every image into an aspect-ratio bucket:
about ``resolution``² pixels, aspect kept, sides a multiple of ``multiple`` (16 for
FLUX, 8 for SDXL). Nothing is extracted to disk: members are read in memory, so a
member name can never point outside a folder, and the total read is capped.

``check_trigger_word(word, tokenizer)`` warns about trigger words the text encoder
already knows (an ordinary word, or ``TOK``, the placeholder of older guides).

Every problem is an ``InputError`` naming the input (``input_images: ...``), raised
before any model weights are loaded.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import tarfile
import zipfile
from collections.abc import Iterator
from typing import Any

from PIL import Image

from cogkit.ml.errors import InputError
from cogkit.ml.images import ImageInputError, fit_size, open_image, resize_image
from cogkit.ml.logs import log

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_IMAGES = 1000
MAX_TOTAL_BYTES = 2 << 30  # uncompressed: a zip bomb stops here, not at the disk's end
FIELD = "input_images"


@dataclasses.dataclass
class Example:
    name: str            # the member's path in the archive
    image: Image.Image   # RGB, already resized to ``size``
    caption: str
    size: tuple[int, int]  # (width, height) of its bucket


def _members(archive: pathlib.Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every regular file in a zip or tar; hidden files and macOS
    resource forks are skipped."""
    total = 0

    def keep(name: str) -> bool:
        parts = pathlib.PurePosixPath(name).parts
        return bool(parts) and not any(p.startswith(".") or p == "__MACOSX" for p in parts)

    def take(name: str, size: int) -> None:
        nonlocal total
        total += size
        if total > MAX_TOTAL_BYTES:
            raise InputError(f"{FIELD}: the archive holds more than {MAX_TOTAL_BYTES >> 30} GiB of files")

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if info.is_dir() or not keep(info.filename):
                        continue
                    take(info.filename, info.file_size)
                    yield info.filename, zf.read(info)
            return
        with tarfile.open(archive) as tf:
            for member in tf:
                if not member.isfile() or not keep(member.name):
                    continue
                take(member.name, member.size)
                f = tf.extractfile(member)
                assert f is not None
                yield member.name, f.read()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        what = "zip" if zipfile.is_zipfile(archive) else "tar"
        raise InputError(f"{FIELD}: not a readable zip or tar archive ({what}: {type(exc).__name__}: {exc})") from None


def _split(name: str) -> tuple[str, str]:
    """(the member's name without its extension, the extension lower-cased): a dot in
    a folder name is not an extension."""
    suffix = pathlib.PurePosixPath(name).suffix
    return name[: len(name) - len(suffix)], suffix.lower()


def default_caption(trigger_word: str) -> str:
    return f"a photo of {trigger_word}" if trigger_word else "a photo"


def load_images(
    archive: str | pathlib.Path,
    *,
    trigger_word: str,
    resolution: int,
    multiple: int,
    min_side: int | None = None,
) -> list[Example]:
    """The archive's images, captioned and bucketed (see the module docstring).
    ``min_side``: the shortest side an image may have (default: half the resolution,
    since a model learns blur from images upscaled more than 2x)."""
    archive = pathlib.Path(archive)
    if not archive.is_file() or archive.stat().st_size == 0:
        raise InputError(f"{FIELD}: the archive is empty")
    if not (zipfile.is_zipfile(archive) or tarfile.is_tarfile(archive)):
        raise InputError(f"{FIELD}: not a zip or tar archive ({archive.name})")
    min_side = min_side if min_side is not None else resolution // 2
    images: dict[str, bytes] = {}
    captions: dict[str, str] = {}
    for name, data in _members(archive):
        stem, suffix = _split(name)
        if suffix in IMAGE_SUFFIXES:
            images[name] = data
            if len(images) > MAX_IMAGES:
                raise InputError(f"{FIELD}: more than {MAX_IMAGES} images")
        elif suffix == ".txt":
            captions[stem] = data.decode("utf-8", errors="replace").strip()
    if not images:
        raise InputError(f"{FIELD}: no images in the archive (expected .jpg, .jpeg, .png or .webp files)")
    examples, small, captioned = [], [], 0
    for name in sorted(images):
        try:
            img = open_image(io.BytesIO(images[name]), field=f"{FIELD}: {name}")
        except ImageInputError as exc:
            raise InputError(str(exc)) from None
        if min(img.size) < min_side:
            small.append(f"{name} ({img.width}x{img.height})")
            continue
        size = fit_size(img.width, img.height, multiple=multiple, max_pixels=resolution * resolution, upscale=True)
        caption = captions.get(_split(name)[0])
        captioned += caption is not None
        caption = caption or default_caption(trigger_word)
        if trigger_word and trigger_word not in caption:
            caption = f"{trigger_word}, {caption}"  # the word the LoRA is called by must be in every caption
        examples.append(Example(name=name, image=resize_image(img, size), caption=caption, size=size))
    if small:
        listed = ", ".join(small[:5]) + (f" and {len(small) - 5} more" if len(small) > 5 else "")
        raise InputError(f"{FIELD}: images must be at least {min_side} px on their shorter side "
                         f"(resolution {resolution} / 2): {listed}")
    buckets: dict[tuple[int, int], int] = {}
    for ex in examples:
        buckets[ex.size] = buckets.get(ex.size, 0) + 1
    shown = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(buckets.items()))
    log(f"[train] {len(examples)} images ({captioned} with captions) in buckets {shown}")
    return examples


def check_trigger_word(word: str, tokenizer: Any) -> None:
    """Warn when the trigger word is one the text encoder already has a meaning for:
    the LoRA then fights that meaning instead of owning a new word."""
    if not word:
        log("[train] warning: no trigger_word: the LoRA's style will apply to every prompt")
        return
    if word.upper() == "TOK":
        log('[train] warning: trigger_word "TOK" is the placeholder of older guides, which many LoRAs '
            "share; pick a made-up word of your own (e.g. a short unusual spelling)")
        return
    pieces = tokenizer.tokenize(word)
    vocab = tokenizer.get_vocab()
    if len(pieces) == 1 and pieces[0] in vocab and any(c.isalpha() for c in word):
        log(f'[train] warning: trigger_word "{word}" is an ordinary word to the text encoder (one known token); '
            "a made-up word the model has no meaning for works better")
