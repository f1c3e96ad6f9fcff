"""FLUX output sizes: the aspect-ratio/megapixels table (Replicate's cog-flux values,
copied here independently of the code), custom sizes, input-image sizes, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "models" / "flux"))

import flux_sizes as sizes  # noqa: E402

# aspect_ratio: (size at megapixels="1", size at "0.25"), from ../shared/reference/models.md §2.2
REFERENCE = {
    "1:1": ((1024, 1024), (512, 512)),
    "16:9": ((1344, 768), (672, 384)),
    "21:9": ((1536, 640), (768, 320)),
    "3:2": ((1216, 832), (608, 416)),
    "2:3": ((832, 1216), (416, 608)),
    "4:5": ((896, 1088), (448, 544)),
    "5:4": ((1088, 896), (544, 448)),
    "3:4": ((896, 1152), (448, 576)),
    "4:3": ((1152, 896), (576, 448)),
    "9:16": ((768, 1344), (384, 672)),
    "9:21": ((640, 1536), (320, 768)),
}


def test_choices_are_the_eleven_presets_plus_custom() -> None:
    assert sizes.ASPECT_RATIO_CHOICES == [*REFERENCE, "custom"]
    assert sizes.MEGAPIXELS_CHOICES == ["1", "0.25", "match_input"]


@pytest.mark.parametrize("aspect_ratio", list(REFERENCE))
def test_every_preset_at_every_megapixels_value(aspect_ratio: str) -> None:
    full, quarter = REFERENCE[aspect_ratio]
    assert sizes.output_size(aspect_ratio, "1") == full
    assert sizes.output_size(aspect_ratio, "0.25") == quarter
    assert sizes.output_size(aspect_ratio, "match_input") == full  # no image to match: the full size
    for w, h in (full, quarter):
        assert w % 16 == 0 and h % 16 == 0


def test_custom_sizes_round_up_to_16() -> None:
    assert sizes.output_size("custom", "1", 1024, 768) == (1024, 768)
    assert sizes.output_size("custom", "0.25", 300, 257) == (304, 272)  # megapixels does not apply
    assert sizes.output_size("custom", "1", 1440, 1439) == (1440, 1440)


@pytest.mark.parametrize("args, message", [
    (("custom", "1", 512, None), "height: required when aspect_ratio is 'custom'"),
    (("custom", "1", None, None), "width and height: required"),
    (("custom", "1", 100, 512), "width: must be between 256 and 1440, got 100"),
    (("16:9", "1", 512, None), "width: only used when aspect_ratio is 'custom'"),
    (("16:9", "1", 512, 512), "width and height: only used when aspect_ratio is 'custom'"),
    (("5:7", "1", None, None), "aspect_ratio: unknown preset '5:7'"),
    (("1:1", "2", None, None), "megapixels: must be one of 1, 0.25, match_input"),
])
def test_size_errors_name_the_input(args: tuple, message: str) -> None:
    with pytest.raises(sizes.SizeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sizes.output_size(*args)


@pytest.mark.parametrize("wh, megapixels, expected", [
    ((400, 300), "1", (1184, 880)),          # scaled up to ~1 MP, 4:3 kept
    ((4000, 3000), "1", (1184, 880)),        # scaled down to the same
    ((4000, 3000), "0.25", (576, 432)),   # nearest 16 would exceed 0.25 MP: floored
    ((1000, 1000), "match_input", (992, 992)),    # own size, rounded to 16
    ((3000, 1500), "match_input", (1440, 720)),   # fitted into 1440 x 1440
    ((333, 251), "match_input", (336, 256)),
    ((8000, 1000), "1", (2048, 256)),        # extreme ratios stay within 2048 per side
])
def test_input_image_sizes(wh: tuple[int, int], megapixels: str, expected: tuple[int, int]) -> None:
    w, h = sizes.output_size("1:1", megapixels, image_wh=wh)
    assert (w, h) == expected
    assert w % 16 == 0 and h % 16 == 0
    if megapixels in sizes.MEGAPIXELS:
        assert w * h <= sizes.MEGAPIXELS[megapixels] * 1024 * 1024


def test_image_and_custom_do_not_mix() -> None:
    with pytest.raises(sizes.SizeError, match="aspect_ratio: 'custom' cannot be combined with an input image"):
        sizes.output_size("custom", "1", 512, 512, image_wh=(640, 480))
