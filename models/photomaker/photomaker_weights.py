"""Where PhotoMaker's weights come from, and reading TencentARC's checkpoint.

Layout of the weights folder (``setup(weights)`` or COG_WEIGHTS; a local folder,
an http(s) tar of it, or a Hugging Face id, see cogkit.ml.weights)::

    <weights>/
      model_index.json, unet/, vae/, text_encoder/, text_encoder_2/,
      tokenizer/, tokenizer_2/, scheduler/      the SDXL base, diffusers layout
      photomaker-v1.bin                          TencentARC's checkpoint as published
        (or photomaker-v1.safetensors)           (or its flat safetensors form)
      safety-checker/                            optional CompVis safety checker

Missing pieces are looked up, in order: the weights folder, an environment
variable, then the reference's public Hugging Face id (with HF_HUB_OFFLINE=1
only the local cache counts, so an offline machine fails at once; the safety
checker is optional and shared with the other image models, cogkit.ml.safety):

============  ================================  ======================================
piece         environment variable              default
============  ================================  ======================================
SDXL base     (setup(weights) / COG_WEIGHTS)    SG161222/RealVisXL_V3.0
checkpoint    COGKIT_PHOTOMAKER_CHECKPOINT      TencentARC/PhotoMaker (photomaker-v1.bin)
safety        COGKIT_PHOTOMAKER_SAFETY_CHECKER  CompVis/stable-diffusion-safety-checker
============  ================================  ======================================

The checkpoint holds two state dicts: ``id_encoder`` (the CLIP tower, projections
and fuse module; see photomaker_id_encoder.py) and ``lora_weights`` (a UNet LoRA on
every attention projection, in diffusers' attention-processor naming:
``unet.<block path>.attn1.processor.to_q_lora.down.weight`` / ``.up.weight`` for
to_q, to_k, to_v and to_out). The ``.bin`` is a pickled dict with those two keys;
the ``.safetensors`` form is flat with ``id_encoder.`` / ``lora_weights.`` prefixes.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import torch

from cogkit.ml.weights import WeightsError, resolve_weights

DEFAULT_BASE = "SG161222/RealVisXL_V3.0"
DEFAULT_CHECKPOINT = "TencentARC/PhotoMaker"
CHECKPOINT_NAMES = ("photomaker-v1.safetensors", "photomaker-v1.bin")
CHECKPOINT_ENV = "COGKIT_PHOTOMAKER_CHECKPOINT"
SAFETY_ENV = "COGKIT_PHOTOMAKER_SAFETY_CHECKER"
# The base repo also holds a single-file checkpoint at its root; take only the diffusers folders.
BASE_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"]
LORA_ADAPTER = "photomaker"


def resolve_base(weights: Any) -> pathlib.Path:
    root = resolve_weights(weights, default=DEFAULT_BASE, allow_patterns=BASE_PATTERNS)
    if not (root / "model_index.json").is_file():
        raise WeightsError(
            f"weights: {root} is not a diffusers SDXL folder (no model_index.json); PhotoMaker's weights "
            f"folder holds the SDXL base in diffusers layout plus {CHECKPOINT_NAMES[1]}")
    return root


def _checkpoint_in(path: pathlib.Path) -> pathlib.Path | None:
    if path.is_file():
        return path
    for name in CHECKPOINT_NAMES:
        if (path / name).is_file():
            return path / name
    return None


def resolve_checkpoint(root: pathlib.Path) -> pathlib.Path:
    """The PhotoMaker checkpoint file: in the weights folder, else COGKIT_PHOTOMAKER_CHECKPOINT,
    else the published one."""
    found = _checkpoint_in(root)
    if found is not None:
        return found
    source = os.environ.get(CHECKPOINT_ENV, "").strip() or DEFAULT_CHECKPOINT
    try:
        path = resolve_weights(source, allow_patterns=list(CHECKPOINT_NAMES))
    except WeightsError as exc:
        raise WeightsError(
            f"weights: no PhotoMaker checkpoint ({' or '.join(CHECKPOINT_NAMES)}) in {root}, and "
            f"{source} could not be used either ({exc})") from None
    found = _checkpoint_in(path)
    if found is None:
        raise WeightsError(f"weights: {path} holds no {' or '.join(CHECKPOINT_NAMES)}")
    return found


def read_checkpoint(path: pathlib.Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(id_encoder state dict, lora_weights state dict) from a ``.bin`` or ``.safetensors`` checkpoint."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            flat = load_file(str(path))
            parts: dict[str, dict[str, torch.Tensor]] = {"id_encoder": {}, "lora_weights": {}}
            for key, tensor in flat.items():
                head, _, rest = key.partition(".")
                if head in parts and rest:
                    parts[head][rest] = tensor
        else:
            parts = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"weights: cannot read the PhotoMaker checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(parts, dict) or not parts.get("id_encoder") or not parts.get("lora_weights"):
        keys = sorted(parts)[:4] if isinstance(parts, dict) else type(parts).__name__
        raise WeightsError(f"weights: {path} is not a PhotoMaker checkpoint (needs `id_encoder` and "
                           f"`lora_weights` state dicts; found {keys})")
    return dict(parts["id_encoder"]), dict(parts["lora_weights"])


def _lora_pairs(lora: dict[str, torch.Tensor]) -> int:
    """How many LoRA layers a state dict describes (one down/A matrix each)."""
    return sum(1 for k in lora if k.endswith(("lora.down.weight", "lora_down.weight", "lora_A.weight")))


def fuse_lora(pipe: Any, lora: dict[str, torch.Tensor]) -> int:
    """Load PhotoMaker's UNet LoRA, fuse it into the UNet weights at scale 1 (as the
    reference does) and drop the adapter layers, so denoising costs what plain SDXL
    does. Returns the number of layers changed."""
    import diffusers.utils.logging as dlog

    expected = _lora_pairs(lora)
    level = dlog.get_verbosity()
    # it would warn that the text encoders get no LoRA keys (true: PhotoMaker's LoRA is UNet-only);
    # a LoRA that misses the UNet is caught by the layer count below
    dlog.set_verbosity_error()
    try:
        pipe.load_lora_weights(dict(lora), adapter_name=LORA_ADAPTER)
    except Exception as exc:
        raise WeightsError(f"weights: PhotoMaker's lora_weights do not fit this SDXL UNet: "
                           f"{type(exc).__name__}: {exc}") from None
    finally:
        dlog.set_verbosity(level)
    loaded = sum(1 for m in pipe.unet.modules() if hasattr(m, "lora_A") and LORA_ADAPTER in m.lora_A)
    if expected == 0 or loaded != expected:
        pipe.unload_lora_weights()
        raise WeightsError(f"weights: PhotoMaker's lora_weights name {expected} layers but {loaded} of them "
                           "exist in this SDXL UNet (is the base an SDXL model?)")
    pipe.fuse_lora(lora_scale=1.0, adapter_names=[LORA_ADAPTER])
    pipe.unload_lora_weights()  # the fused weights stay; the LoRA wrappers go
    return loaded
