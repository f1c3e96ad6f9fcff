"""The LoRA trainers of FLUX and SDXL (models/<name>/train.py) on tiny random-weight
models, on the CPU, the same checks for both: the loss
goes down, the trained_model.tar loads through the predictor's own lora_weights and
changes its images (deterministically; lora_scale=0 gives the base image back), the
same seed gives bit-identical weights, a checkpoint resumes to exactly the weights of
an uninterrupted run, and bad input fails before the model loads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from cogkit.ml.errors import InputError
from cogkit.ml.tiny.photos import build_photo_archive
from tests.tiny_models import flux_fp8_cache, tiny_flux_schnell, tiny_sdxl_weights  # noqa: F401  (fixtures)
from tests.train_helpers import config, load_train_module, member, short_training

MODELS = Path(__file__).resolve().parents[2] / "models"
for name in ("flux", "sdxl"):
    sys.path.insert(0, str(MODELS / name))

pytestmark = pytest.mark.usefixtures("flux_fp8_cache")


@pytest.fixture(scope="module", params=["flux", "sdxl"])
def model(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def base_weights(model, request) -> Path:
    return request.getfixturevalue("tiny_flux_schnell" if model == "flux" else "tiny_sdxl_weights")


@pytest.fixture(scope="module")
def trainer(model, base_weights, tmp_path_factory):
    old = {k: os.environ.get(k) for k in ("COG_WEIGHTS", "COGKIT_WEIGHTS_CACHE")}
    os.environ["COG_WEIGHTS"] = str(base_weights)
    os.environ["COGKIT_WEIGHTS_CACHE"] = str(tmp_path_factory.mktemp("weights-cache"))  # where tars unpack
    yield load_train_module(MODELS / model)
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def predict_image(model, base_weights):
    """image(**lora inputs) -> the model's picture for one fixed prompt and seed."""
    if model == "flux":
        from flux_engine import FluxEngine, Request

        engine = FluxEngine(base_weights)
        return lambda **kw: engine.generate(Request("zxqvbn", megapixels="0.25", seed=5, go_fast=False, **kw))[0]
    from sdxl_engine import Request, SDXLEngine

    sdxl = SDXLEngine(base_weights)
    return lambda **kw: sdxl.run(Request(prompt="zxqvbn", width=64, height=64, seed=5, num_inference_steps=4, **kw))[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return build_photo_archive(tmp_path_factory.mktemp("photos") / "photos.zip", 6)


@pytest.fixture(scope="module")
def trained(trainer, photos) -> Path:
    return short_training(trainer, photos)


def test_the_loss_goes_down(model, trained) -> None:
    cfg = config(trained)
    assert cfg["eval_loss_after"] < 0.99 * cfg["eval_loss_before"]  # a fixed batch, fixed noise: no luck involved
    assert cfg["model"] == model and cfg["step"] == 20
    assert cfg.get("variant", "schnell") == "schnell" and cfg.get("prediction_type", "epsilon") == "epsilon"
    assert cfg["trigger_word"] == "zxqvbn" and cfg["lora_rank"] == 4 and cfg["images"] == 6


def test_the_tar_loads_through_the_predictors_lora_weights(model, trained, predict_image) -> None:
    def image(**kw) -> np.ndarray:
        return np.asarray(predict_image(**kw), dtype=np.int16)

    base = image()
    with_lora = image(lora_weights=str(trained))
    assert np.abs(with_lora - base).mean() > 0.5  # the LoRA changes the picture
    assert np.array_equal(image(lora_weights=str(trained)), with_lora)  # deterministic for a seed
    assert np.abs(image(lora_weights=str(trained), lora_scale=0.0) - base).max() <= 1  # within 1/255
    # its keys are diffusers' LoRA layout, what load_lora_weights reads without conversion
    from safetensors.torch import load

    prefix = {"flux": "transformer.", "sdxl": "unet."}[model]
    keys = list(load(member(trained, "lora.safetensors")))
    assert keys and all(k.startswith(prefix) and (".lora_A." in k or ".lora_B." in k) for k in keys)


def test_the_same_seed_gives_bit_identical_weights(trainer, photos, trained) -> None:
    again = short_training(trainer, photos)
    assert member(again, "lora.safetensors") == member(trained, "lora.safetensors")
    other = short_training(trainer, photos, seed=2)
    assert member(other, "lora.safetensors") != member(trained, "lora.safetensors")


def test_a_checkpoint_resumes_to_the_uninterrupted_weights(trainer, photos, trained, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COGKIT_TRAIN_CHECKPOINTS", str(tmp_path))
    short_training(trainer, photos, save_every=10)
    checkpoint = tmp_path / "checkpoint-10.tar"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10.tar"]  # no temp file left
    resumed = short_training(trainer, photos, resume_from=checkpoint)
    assert member(resumed, "lora.safetensors") == member(trained, "lora.safetensors")
    with pytest.raises(InputError, match=r"resume_from: the checkpoint was trained with other settings \(lora_rank=4\)"):
        short_training(trainer, photos, resume_from=checkpoint, lora_rank=8)
    with pytest.raises(InputError, match="resume_from: trained_model.tar is not a training checkpoint"):
        short_training(trainer, photos, resume_from=trained)


def test_bad_input_fails_before_the_model_loads(trainer, photos, tmp_path) -> None:
    trainer._loaded.clear()
    empty = tmp_path / "empty.zip"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="input_images: the archive is empty"):
        short_training(trainer, empty)
    with pytest.raises(InputError, match="input_images: images must be at least 512 px"):
        short_training(trainer, photos, resolution=1024)
    assert trainer._loaded == {}  # nothing was loaded for them


def test_the_tar_as_weights_is_the_base_with_the_lora_on(model, trained, base_weights, predict_image) -> None:
    """Replicate's fine-tuning flow: the trained version runs with the training's output
    as its weights; the predictor then loads the recorded base and applies the LoRA."""
    assert config(trained)["base_weights"] == str(base_weights.resolve())
    if model == "flux":
        from flux_engine import FluxEngine, Request

        engine = FluxEngine(trained)
        [img] = engine.generate(Request("zxqvbn", megapixels="0.25", seed=5, go_fast=False))
    else:
        from sdxl_engine import Request, SDXLEngine

        [img] = SDXLEngine(trained).run(Request(prompt="zxqvbn", width=64, height=64, seed=5, num_inference_steps=4))
    expected = predict_image(lora_weights=str(trained), **({"lora_scale": 0.6} if model == "sdxl" else {}))
    assert np.array_equal(np.asarray(img), np.asarray(expected))
