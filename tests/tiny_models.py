"""Session-scoped pytest fixtures of tiny random-weight models (built once per test
session into pytest's temp folders). The builders themselves live in the package,
cogkit.ml.tiny, where scripts and benches use them without pytest.

Import the ones a test module needs (``from tests.tiny_models import tiny_sdxl_weights
# noqa: F401``): ``tiny_sdxl_weights``, ``tiny_sdxl_turbo``, ``tiny_sdxl_lora``,
``tiny_depth_annotator``; ``tiny_flux_schnell``, ``tiny_flux_dev``, ``tiny_flux_lora``,
``tiny_flux_te_lora``, ``flux_fp8_cache`` (points COGKIT_FLUX_FP8_CACHE at a test
folder); ``tiny_llama_dir``; ``tiny_photomaker_weights``.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from cogkit.ml.tiny.flux import build_flux, build_flux_lora
from cogkit.ml.tiny.llama import build_tiny_llama
from cogkit.ml.tiny.photomaker import build_photomaker_weights
from cogkit.ml.tiny.sdxl import build_depth_annotator, build_sdxl, build_sdxl_lora, build_sdxl_weights

# ----------------------------------------------------------------------------- SDXL


@pytest.fixture(scope="session")
def tiny_sdxl_weights(tmp_path_factory) -> pathlib.Path:
    return build_sdxl_weights(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def tiny_sdxl_turbo(tmp_path_factory) -> pathlib.Path:
    return build_sdxl(tmp_path_factory.mktemp("tiny-sdxl-turbo") / "sdxl-turbo", seed=7, turbo=True)


@pytest.fixture(scope="session")
def tiny_depth_annotator(tmp_path_factory) -> pathlib.Path:
    return build_depth_annotator(tmp_path_factory.mktemp("tiny-dpt") / "depth-annotator")


@pytest.fixture(scope="session")
def tiny_sdxl_lora(tmp_path_factory, tiny_sdxl_weights) -> pathlib.Path:
    return build_sdxl_lora(tiny_sdxl_weights, tmp_path_factory.mktemp("tiny-sdxl-lora"), seed=11)


# ----------------------------------------------------------------------------- FLUX


@pytest.fixture(scope="session")
def flux_fp8_cache(tmp_path_factory) -> pathlib.Path:
    """Pre-quantised fp8 transformers go to a test folder, not ~/.cache."""
    path = tmp_path_factory.mktemp("flux-fp8-cache")
    old = os.environ.get("COGKIT_FLUX_FP8_CACHE")
    os.environ["COGKIT_FLUX_FP8_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("COGKIT_FLUX_FP8_CACHE", None)
    else:
        os.environ["COGKIT_FLUX_FP8_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_flux_schnell(tmp_path_factory) -> pathlib.Path:
    return build_flux(tmp_path_factory.mktemp("tiny-flux") / "FLUX.1-schnell", variant="schnell")


@pytest.fixture(scope="session")
def tiny_flux_dev(tmp_path_factory) -> pathlib.Path:
    return build_flux(tmp_path_factory.mktemp("tiny-flux") / "FLUX.1-dev", variant="dev", seed=1)


@pytest.fixture(scope="session")
def tiny_flux_lora(tmp_path_factory, tiny_flux_schnell) -> pathlib.Path:
    return build_flux_lora(tiny_flux_schnell, tmp_path_factory.mktemp("tiny-flux-lora") / "lora.safetensors")


@pytest.fixture(scope="session")
def tiny_flux_te_lora(tmp_path_factory, tiny_flux_schnell) -> pathlib.Path:
    return build_flux_lora(tiny_flux_schnell, tmp_path_factory.mktemp("tiny-flux-lora") / "te-lora.safetensors",
                           seed=4, text_encoder=True)


# ----------------------------------------------------------------------------- Llama, PhotoMaker


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> pathlib.Path:
    """A tiny Llama save_pretrained folder."""
    pytest.importorskip("transformers")
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_photomaker_weights(tmp_path_factory) -> pathlib.Path:
    return build_photomaker_weights(tmp_path_factory.mktemp("tiny-photomaker"))
