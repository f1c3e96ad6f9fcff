"""cogkit.ml.safety, the NSFW filter the image models share: where the checker is
found (weights sub-folder, environment variable, the public default offline),
and what filtering keeps, drops and refuses. Tiny random checkers that flag every
image or none (cogkit.ml.tiny.safety)."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from cogkit.ml.device import plan_for
from cogkit.ml.errors import InputError
from cogkit.ml.safety import filter_nsfw, load_safety_checker
from cogkit.ml.tiny.safety import build_safety_checker

PLAN = plan_for("cpu", None, "CPU")
IMAGES = [Image.new("RGB", (64, 64), (i * 60, 90, 200 - i * 60)) for i in range(3)]


@pytest.fixture(scope="module")
def checkers(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    return build_safety_checker(root / "all", flag_all=True), build_safety_checker(root / "none", flag_all=False)


def test_found_in_the_weights_folder_before_the_environment(checkers, tmp_path, monkeypatch, capfd):
    flag_all, flag_none = checkers
    shutil.copytree(flag_all, tmp_path / "safety-checker")
    monkeypatch.setenv("COGKIT_TEST_SAFETY", str(flag_none))
    checker = load_safety_checker(tmp_path, "COGKIT_TEST_SAFETY", PLAN, "test")
    assert checker is not None and checker.flags(IMAGES) == [True] * 3
    assert f"[test] safety checker loaded from {tmp_path / 'safety-checker'}" in capfd.readouterr().err
    # no sub-folder (or no weights folder at all): the environment variable
    checker = load_safety_checker(None, "COGKIT_TEST_SAFETY", PLAN, "test")
    assert checker is not None and checker.flags(IMAGES) == [False] * 3


def test_missing_offline_is_logged_and_none(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COGKIT_TEST_SAFETY", raising=False)
    assert load_safety_checker(tmp_path, "COGKIT_TEST_SAFETY", PLAN, "test") is None
    err = capfd.readouterr().err
    assert "[test] safety checker: not available" in err and "CompVis/stable-diffusion-safety-checker" in err
    assert "[test] safety checker: weights not available; skipping NSFW filtering" in err
    # a folder that is no checker: logged, not raised (the model runs unfiltered)
    (tmp_path / "broken").mkdir()
    monkeypatch.setenv("COGKIT_TEST_SAFETY", str(tmp_path / "broken"))
    assert load_safety_checker(None, "COGKIT_TEST_SAFETY", PLAN, "test") is None
    assert "[test] safety checker: could not load" in capfd.readouterr().err


def test_filter_keeps_drops_and_refuses(checkers, monkeypatch, capfd):
    flag_all, flag_none = checkers
    monkeypatch.setenv("COGKIT_TEST_SAFETY", str(flag_all))
    strict = load_safety_checker(None, "COGKIT_TEST_SAFETY", PLAN, "test")
    with pytest.raises(InputError, match="NSFW content detected in every output"):
        filter_nsfw(strict, IMAGES, False, "test")
    assert filter_nsfw(strict, IMAGES, True, "test") == IMAGES  # disable_safety_checker
    assert filter_nsfw(None, IMAGES, False, "test") == IMAGES  # no checker loaded
    monkeypatch.setattr(strict, "flags", lambda images: [False, True, False])
    capfd.readouterr()
    assert filter_nsfw(strict, IMAGES, False, "test") == [IMAGES[0], IMAGES[2]]
    assert "[test] safety checker: dropped 1 of 3 outputs as NSFW" in capfd.readouterr().err


def test_a_folder_holding_only_fp16_weights_loads(checkers, tmp_path):
    """What resolve_weights(one_copy=True) fetches from a Hub repo that has fp16 files."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    from cogkit.ml.safety import SafetyChecker

    folder = tmp_path / "fp16-only"
    StableDiffusionSafetyChecker.from_pretrained(checkers[0]).save_pretrained(folder, variant="fp16")
    CLIPImageProcessor.from_pretrained(checkers[0]).save_pretrained(folder)
    assert [p.name for p in folder.glob("*.safetensors")] == ["model.fp16.safetensors"]
    assert SafetyChecker(folder, "cpu", PLAN.dtype).flags(IMAGES) == [True] * 3
