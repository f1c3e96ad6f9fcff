"""Replicate's fine-tuning flow on the hub with our own FLUX trainer and the official
Python client: a training on a zip of photos (uploaded by the client) gives a
trained_model.tar at a hub file URL (with --public-url); the base model's lora_weights loads that URL,
and the destination model's new version (the tar as its weights) gives the same image."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
import replicate
from PIL import Image

from cogkit.ml.tiny.photos import build_photo_archive
from tests.hub.conftest import REPO, HubProcess
from tests.tiny_models import tiny_flux_schnell  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PREDICT = {"prompt": "zxqvbn", "seed": 5, "megapixels": "0.25", "go_fast": False, "output_format": "png"}


def _pixels(output) -> np.ndarray:
    [item] = output
    # the client wraps https:// and data: outputs in FileOutput; a plain http:// URL stays a string
    data = httpx.get(item, timeout=30).content if isinstance(item, str) else item.read()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_train_on_the_hub_then_run_the_lora(tiny_flux_schnell, tmp_path) -> None:
    config = (f"models:\n  me/flux:\n    path: {REPO / 'models' / 'flux'}\n    weights: {tiny_flux_schnell}\n"
              "    env:\n      COGKIT_FLUX_GO_FAST: '0'\n")
    hub = HubProcess(tmp_path / "hub", None, {}, config=config)
    # output files as key URLs (not data: URIs) that lora_weights can be given
    hub.extra = ["--public-url", hub.url]
    hub.start()
    try:
        client = replicate.Client(api_token=hub.token, base_url=hub.url)
        client.models.create("me", "flux-zxqvbn", visibility="private", hardware="cpu")
        version = client.models.get("me/flux").latest_version
        photos = build_photo_archive(tmp_path / "photos.zip", 6)
        with open(photos, "rb") as f:
            training = client.trainings.create(
                model="me/flux", version=version.id, destination="me/flux-zxqvbn",
                input={"input_images": f, "trigger_word": "zxqvbn", "steps": 20, "resolution": 64, "lora_rank": 4,
                       "learning_rate": 0.01, "seed": 1, "batch_size": 2, "optimizer": "adamw"})
        deadline = time.monotonic() + 300
        while training.status not in ("succeeded", "failed", "canceled") and time.monotonic() < deadline:
            time.sleep(0.5)
            training.reload()
        assert training.status == "succeeded", f"{training.error}\n{training.logs}\n{hub.log()}"
        assert "[train] loss on a fixed batch" in training.logs
        assert "100%|##########| 20/20 [training, loss=" in training.logs  # progress as the clients parse it
        weights = training.output["weights"]
        assert weights.startswith(hub.url + "/files/") and weights.endswith("/trained_model.tar")

        base = _pixels(client.run("me/flux", input=PREDICT))
        tuned = _pixels(client.run("me/flux", input={**PREDICT, "lora_weights": weights}))
        assert np.abs(tuned - base).mean() > 0.5
        published = _pixels(client.run("me/flux-zxqvbn", input=PREDICT))
        assert np.array_equal(published, tuned)  # the new version: the base with the LoRA on
    finally:
        hub.stop()
