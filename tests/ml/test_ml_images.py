import io

import numpy as np
import pytest
from PIL import Image

from cogkit.ml import images as im


def _rgba(size=(40, 30)):
    a = np.zeros((size[1], size[0], 4), np.uint8)
    a[..., 0] = 200  # red stored under transparent pixels too
    a[..., 3] = 0
    a[:, : size[0] // 2, 3] = 255  # left half opaque
    return Image.fromarray(a, "RGBA")


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif")])
def test_alpha_composited_onto_background(tmp_path, fmt, ext):
    src = _rgba()
    path = tmp_path / f"a.{ext}"
    if fmt == "WEBP":
        src.save(path, fmt, lossless=True)
    else:
        src.save(path, fmt)
    out = im.open_image(path)
    assert out.mode == "RGB" and out.size == (40, 30)
    arr = np.asarray(out).astype(int)
    # transparent right half -> white background, not the red stored underneath
    assert (arr[:, 30:] == 255).all()
    assert abs(arr[5, 5, 0] - 200) <= 8 and arr[5, 5, 1] <= 8


def test_background_colour_is_configurable(tmp_path):
    _rgba().save(tmp_path / "a.png")
    out = np.asarray(im.open_image(tmp_path / "a.png", background=(0, 0, 0)))
    assert (out[:, 30:] == 0).all()


@pytest.mark.parametrize("mode", ["LA", "P"])
def test_other_alpha_modes(tmp_path, mode):
    src = _rgba().convert(mode) if mode == "LA" else _rgba().convert("RGBA").quantize(colors=8)
    if mode == "P":
        # palette image with a transparent index
        p = Image.new("P", (10, 10), 0)
        p.putpalette([255, 0, 0] + [0, 0, 255] * 255)
        p.paste(1, (0, 0, 5, 10))
        p.info["transparency"] = 0
        src = p
    src.save(tmp_path / "p.png")
    out = np.asarray(im.open_image(tmp_path / "p.png"))
    assert out.shape[2] == 3
    if mode == "P":
        assert (out[:, 5:] == 255).all() and (out[:, :5, 2] == 255).all() and (out[:, :5, 0] == 0).all()


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp")])
def test_opaque_formats(tmp_path, fmt, ext):
    src = Image.fromarray((np.random.RandomState(0).rand(33, 47, 3) * 255).astype(np.uint8))
    src.save(tmp_path / f"x.{ext}", fmt)
    out = im.open_image(tmp_path / f"x.{ext}")
    assert out.mode == "RGB" and out.size == (47, 33)


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = np.asarray(im.open_image(tmp_path / "anim.gif"))
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 50


def test_exif_orientation_applied(tmp_path):
    src = Image.new("RGB", (40, 20), (0, 0, 0))
    src.paste((255, 255, 255), (0, 0, 10, 20))  # white strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    src.save(tmp_path / "o.jpg", "JPEG", exif=exif.tobytes())
    out = im.open_image(tmp_path / "o.jpg")
    assert out.size == (20, 40)  # displayed upright
    arr = np.asarray(out)
    assert arr[2, 10].mean() > 200 and arr[38, 10].mean() < 50  # strip now on top


def test_unreadable_image_names_field(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(im.ImageInputError, match="^controlnet_image: not a readable image"):
        im.open_image(tmp_path / "bad.png", field="controlnet_image")
    with pytest.raises(im.ImageInputError, match="^mask: file not found"):
        im.open_mask(tmp_path / "missing.png")


def test_mask_alpha_counts_as_keep(tmp_path):
    a = np.zeros((10, 10, 4), np.uint8)
    a[..., :3] = 255
    a[:, :5, 3] = 255  # left half opaque white
    Image.fromarray(a, "RGBA").save(tmp_path / "m.png")
    m = np.asarray(im.binarize_mask(im.open_mask(tmp_path / "m.png")))
    assert (m[:, :5] == 255).all() and (m[:, 5:] == 0).all()


@pytest.mark.parametrize(
    "size,kw,expected",
    [
        ((1024, 1024), dict(max_pixels=1024 * 1024), (1024, 1024)),
        ((4000, 3000), dict(max_pixels=1024 * 1024), (1176, 880)),
        ((97, 61), dict(max_pixels=1024 * 1024), (96, 64)),
        ((97, 61), dict(max_pixels=1024 * 1024, multiple=16), (96, 64)),
        ((3, 5), dict(), (8, 8)),
        ((3000, 1000), dict(max_side=1440, multiple=16), (1440, 480)),
        ((100, 50), dict(max_pixels=1024 * 1024, upscale=True), (1448, 720)),
    ],
)
def test_fit_size(size, kw, expected):
    w, h = im.fit_size(*size, **kw)
    assert (w, h) == expected
    m = kw.get("multiple", 8)
    assert w % m == 0 and h % m == 0
    if kw.get("max_pixels"):
        assert w * h <= kw["max_pixels"]


def test_fit_size_keeps_aspect():
    w, h = im.fit_size(3000, 2000, max_pixels=1024 * 1024)
    assert abs(w / h - 1.5) < 0.02


def test_binarize_mask_resized_and_hard():
    m = Image.new("L", (10, 10), 0)
    m.paste(255, (0, 0, 5, 10))
    out = im.binarize_mask(m, (64, 32))
    arr = np.asarray(out)
    assert out.size == (64, 32) and set(np.unique(arr)) <= {0, 255}
    assert (arr[:, :28] == 255).all() and (arr[:, 36:] == 0).all()


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("left=64,right=32", (64, 32, 0, 0)),
        ("up=16, down=8", (0, 0, 16, 8)),
        ("top:10,bottom:20,left=1", (1, 0, 10, 20)),
        ("16:9", (25, 25, 0, 0)),   # 64x64 -> 114x64 (rounded to the multiple later)
        ("1:2", (0, 0, 32, 32)),
        ("aspect=2x1", (32, 32, 0, 0)),
    ],
)
def test_parse_outpaint(spec, expected):
    assert im.parse_outpaint(spec, 64, 64) == expected


@pytest.mark.parametrize("spec", ["sideways=3", "left=0", "", "0:5"])
def test_parse_outpaint_errors(spec):
    with pytest.raises(ValueError, match="outpaint"):
        im.parse_outpaint(spec, 64, 64)


def test_outpaint_canvas_mask_inside_original():
    img = Image.new("RGB", (64, 48), (10, 20, 30))
    canvas, mask = im.outpaint_canvas(img, (20, 0, 0, 5), overlap=8)
    assert canvas.size[0] % 8 == 0 and canvas.size[1] % 8 == 0
    assert canvas.size == (88, 56)  # 64+24 (20 rounded up on the padded side), 48+8
    m = np.asarray(mask)
    left = canvas.size[0] - 64
    assert (m[:, : left + 8] == 255).all()  # padding plus 8 px into the original
    assert (m[0:40, left + 8:] == 0).all()  # untouched original (bottom band repainted)
    assert (m[48 - 8:, :] == 255).all()
    c = np.asarray(canvas)
    assert (c[0, 0] == (10, 20, 30)).all()  # edge-extended fill


def test_png_jpeg_roundtrip_in_memory():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    buf.seek(0)
    assert im.open_image(buf).getpixel((0, 0)) == (1, 2, 3)
