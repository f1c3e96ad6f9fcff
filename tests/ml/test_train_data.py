"""Training archives for the LoRA trainers: images and captions read from a zip or tar
in memory, bucketed by aspect ratio, and every bad archive refused with an error that
names input_images; trigger words the text encoder already knows get a warning."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from PIL import Image

from cogkit.ml.errors import InputError
from cogkit.ml.tiny.photos import build_photo_archive
from cogkit.ml.tiny.tokenizers import clip_tokenizer
from cogkit.ml.train_data import check_trigger_word, load_images


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("suffix", [".zip", ".tar"])
def test_images_captions_and_buckets(tmp_path, suffix) -> None:
    archive = build_photo_archive(tmp_path / f"photos{suffix}", 6, captions=2)
    examples = load_images(archive, trigger_word="zxq", resolution=64, multiple=16)
    assert [e.name for e in examples] == [f"photos/img{i:02d}.png" for i in range(6)]
    # captioned ones keep their text, with the trigger word put in front; the rest get the default
    assert examples[0].caption == "zxq, an orange disc on blue stripes"
    assert examples[5].caption == "a photo of zxq"
    for e in examples:
        w, h = e.size
        assert w % 16 == 0 and h % 16 == 0 and e.image.size == e.size
        assert abs(w * h - 64 * 64) <= 64 * 16  # about resolution² pixels
    assert {e.size for e in examples} == {(64, 64), (80, 48), (48, 80)}  # aspect ratio kept per image


def test_member_names_never_leave_the_archive_and_hidden_files_are_skipped(tmp_path) -> None:
    archive = _zip(tmp_path / "x.zip", {"../../evil.png": _png((64, 64)), "__MACOSX/a.png": b"junk",
                                        ".hidden.png": b"junk", "ok.jpg": _png((64, 64))})
    names = [e.name for e in load_images(archive, trigger_word="", resolution=64, multiple=8)]
    assert names == ["ok.jpg"]  # ".." parts are skipped like hidden ones; and nothing is written anywhere
    assert not (tmp_path.parent.parent / "evil.png").exists()


@pytest.mark.parametrize("case, message", [
    ("empty", "input_images: the archive is empty"),
    ("not_archive", "input_images: not a zip or tar archive"),
    ("corrupt_zip", "input_images: not a readable zip or tar archive"),
    ("no_images", "input_images: no images in the archive"),
    ("broken_image", "input_images: b.png: not a readable image"),
    ("too_small", "input_images: images must be at least 256 px on their shorter side (resolution 512 / 2): "
                  "small.png (100x300)"),
])
def test_bad_archives_name_the_input(tmp_path, case, message) -> None:
    path = tmp_path / "in.zip"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "not_archive":
        path.write_bytes(b"just some text, no archive here\n" * 20)
    elif case == "corrupt_zip":
        good = _zip(tmp_path / "good.zip", {"a.png": _png((300, 300))}).read_bytes()
        path.write_bytes(good[:30] + b"\0" * 40 + good[70:])  # a zip's directory, broken data
    elif case == "no_images":
        _zip(path, {"notes.txt": b"hi", "data.csv": b"1,2"})
    elif case == "broken_image":
        _zip(path, {"a.png": _png((300, 300)), "b.png": b"\x89PNG not really"})
    else:
        _zip(path, {"big.png": _png((600, 400)), "small.png": _png((100, 300))})
    with pytest.raises(InputError) as err:
        load_images(path, trigger_word="zxq", resolution=512, multiple=16)
    assert str(err.value).startswith(message)


def test_a_tar_holds_images_too(tmp_path) -> None:
    path = tmp_path / "in.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        data = _png((64, 96))
        info = tarfile.TarInfo("deep/folder/pic.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    [ex] = load_images(path, trigger_word="zxq", resolution=64, multiple=8)
    assert ex.name == "deep/folder/pic.png" and ex.size[0] < ex.size[1]


@pytest.mark.parametrize("word, warned", [("TOK", "placeholder"), ("astronaut", "ordinary word"), ("zxqvbn", None),
                                          ("", "no trigger_word")])
def test_trigger_word_warnings(capsys, word, warned) -> None:
    tok = clip_tokenizer()
    assert tok.tokenize("astronaut") == ["astronaut</w>"]  # the tiny vocabulary knows the word
    check_trigger_word(word, tok)
    err = capsys.readouterr().err
    if warned is None:
        assert err == ""
    else:
        assert "warning" in err and warned in err
