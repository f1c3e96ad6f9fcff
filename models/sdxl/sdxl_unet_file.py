"""Weights given as one .safetensors file holding only a UNet, e.g. SDXL-Lightning's
``sdxl_lightning_4step_unet.safetensors`` (ByteDance ships its distilled UNets this way,
in diffusers' layout): the rest of the pipeline comes from a base SDXL folder
(COGKIT_SDXL_BASE, default stabilityai/stable-diffusion-xl-base-1.0) and the file's
tensors replace the base UNet's.

* ``file_kind(path)``: "unet" (diffusers UNet keys), "checkpoint" (an original-layout
  single-file checkpoint: ``model.diffusion_model.`` keys), "lora", or "unknown" -- read
  from the safetensors header only.
* ``lightning_steps(name)``: the step count a Lightning file was distilled for (its name
  says ``<N>step``), or None.
* ``load_unet_file(unet, path)``: the tensors into the UNet, every key accounted for.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

from cogkit.ml.weights import WeightsError

_STEPS = re.compile(r"(\d+)[-_]?steps?", re.IGNORECASE)


def file_kind(path: pathlib.Path) -> str:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as exc:
        raise WeightsError(f"weights: {path.name} is not a readable .safetensors file "
                           f"({type(exc).__name__}: {exc})") from None
    if any("lora" in k for k in keys[:50]):
        return "lora"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "checkpoint"
    if "conv_in.weight" in keys and any(k.startswith("down_blocks.") for k in keys):
        return "unet"
    return "unknown"


def lightning_steps(name: str) -> int | None:
    if "lightning" not in name.lower():
        return None
    m = _STEPS.search(name)
    return int(m.group(1)) if m else None


def load_unet_file(unet: Any, path: pathlib.Path) -> int:
    """Copy the file's tensors into ``unet`` (cast to its dtype and device); returns how many.
    A file for another UNet shape is a WeightsError naming what does not fit."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    own = unet.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{label}: {len(keys)} (e.g. {keys[0]})" for label, keys in
                           (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys)
        raise WeightsError(f"weights: {path.name} does not fit the base SDXL UNet ({detail})")
    unet.load_state_dict(state, strict=True)
    return len(state)
