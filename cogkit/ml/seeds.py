"""Seeds: pick and log one when none is given; one generator per output.

Output ``i`` of a prediction uses seed ``seed + i``, so ``num_outputs=4`` with
seed S gives the same four images as four single runs with seeds S..S+3.
Generators live on the CPU: the same seed then gives the same starting noise on
any card (diffusers draws CPU noise and moves it to the device).
"""

from __future__ import annotations

import secrets

import torch

from cogkit.ml.logs import log

MAX_SEED = 2**32 - 1


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or a fresh random one when None; logged either way so the
    image can be reproduced."""
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
        log(f"Using seed: {seed} (random; pass seed={seed} to reproduce)")
    else:
        if seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        log(f"Using seed: {seed}")
    return int(seed)


def generators(seed: int, count: int) -> list[torch.Generator]:
    """``count`` CPU generators seeded seed, seed+1, ... (wrapping past 2**64)."""
    return [torch.Generator("cpu").manual_seed((seed + i) % 2**64) for i in range(count)]
