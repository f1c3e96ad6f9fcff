import numpy as np
import pytest
import torch
from PIL import Image

from cogkit.ml import outputs, seeds
from cogkit.types import Path


def _noise(size=(96, 64)):
    return Image.fromarray((np.random.RandomState(0).rand(size[1], size[0], 3) * 255).astype(np.uint8))


@pytest.mark.parametrize("fmt,pil", [("png", "PNG"), ("jpg", "JPEG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_save_images_formats(tmp_path, fmt, pil):
    paths = outputs.save_images([_noise(), _noise()], fmt, 80, directory=tmp_path)
    assert [p.name for p in paths] == [f"out-0.{outputs.normalize_format(fmt)}", f"out-1.{outputs.normalize_format(fmt)}"]
    assert all(isinstance(p, Path) for p in paths)
    with Image.open(paths[0]) as img:
        assert img.format == pil and img.size == (96, 64)


def test_png_is_lossless(tmp_path):
    src = _noise()
    (p,) = outputs.save_images([src], "png", directory=tmp_path)
    assert np.array_equal(np.asarray(Image.open(p)), np.asarray(src))


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_quality_changes_size(tmp_path, fmt):
    lo = outputs.save_image(_noise(), tmp_path / f"lo.{fmt}", fmt, 10)
    hi = outputs.save_image(_noise(), tmp_path / f"hi.{fmt}", fmt, 95)
    assert lo.stat().st_size < hi.stat().st_size


def test_bad_format_and_quality(tmp_path):
    with pytest.raises(ValueError, match="output_format"):
        outputs.save_images([_noise()], "gif", directory=tmp_path)
    with pytest.raises(ValueError, match="output_quality"):
        outputs.save_image(_noise(), tmp_path / "x.jpg", "jpg", 101)


def test_default_directory_is_fresh_and_handed_over():
    from cogkit.handover import is_handed_over
    from cogkit.worker.protocol import FileOutput

    (p,) = outputs.save_images([_noise()], "jpg")
    assert p.exists() and is_handed_over(p)  # the runtime deletes it once it is sent
    FileOutput(str(p), owned=True).discard()
    assert not p.parent.exists()


def test_resolve_seed_logs(capsys):
    s = seeds.resolve_seed(None)
    assert 0 <= s <= seeds.MAX_SEED
    assert f"Using seed: {s}" in capsys.readouterr().err
    assert seeds.resolve_seed(42) == 42
    assert "Using seed: 42" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seed"):
        seeds.resolve_seed(-1)


def test_random_seeds_differ():
    assert len({seeds.resolve_seed(None) for _ in range(5)}) > 1


def test_generators_match_single_runs():
    gens = seeds.generators(1234, 3)
    batch = [torch.randn(4, generator=g) for g in gens]
    singles = [torch.randn(4, generator=torch.Generator().manual_seed(1234 + i)) for i in range(3)]
    for a, b in zip(batch, singles):
        assert torch.equal(a, b)
    assert all(g.device.type == "cpu" for g in gens)
