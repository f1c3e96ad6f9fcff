"""A LoRA slot on a compiled denoiser: LoRAs are copied in place, so compiled graphs stay valid.

Loading a LoRA the usual way adds PEFT layers (new modules), and setting its scale writes
Python floats: either makes torch.compile trace the model again (tens of seconds per swap
on an H100, and dynamo gives up after its recompile limit). A ``HotswapSlot`` goes on the
model *before* it is compiled: one PEFT adapter of ``rank`` on ``targets`` whose weights are
zero (the model's numbers are unchanged) and whose scalings are tensors (peft's
``prepare_model_for_compiled_hotswap``). A LoRA is then copied into it by peft's hotswap
(through diffusers' loader; lower ranks are zero-padded), and its scale is written into
the scaling tensors in place. Requests without a LoRA run with the adapters disabled: a
second graph, which the caller's warm-up compiles.

A LoRA that does not fit (rank above the slot's, layers outside its targets, per-layer
alphas) raises ``SlotMismatch`` before anything is copied; the caller loads it as an
ordinary adapter instead (that one recompiles), and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from cogkit.ml.logs import log

DEFAULT_RANK = 64
# What diffusers' SDXL LoRA trainers (and cogkit.ml.lora_train) target, as most SDXL LoRAs do.
UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


class SlotMismatch(ValueError):
    """This LoRA cannot be copied into the slot (the message says why)."""


class HotswapSlot:
    """One zero-initialised, fixed-rank LoRA adapter on ``model`` (a diffusers ModelMixin)."""

    def __init__(self, model: Any, *, name: str = "hot", rank: int = DEFAULT_RANK,
                 targets: tuple[str, ...] = UNET_ATTENTION) -> None:
        from peft import LoraConfig
        from peft.tuners.lora import LoraLayer
        from peft.utils.hotswap import prepare_model_for_compiled_hotswap

        if hasattr(model, "_orig_mod") or getattr(model, "_compiled_call_impl", None) is not None:
            raise RuntimeError("HotswapSlot: put the slot on the model before compiling it")
        # init_lora_weights=True: B is zero, so the empty slot adds exactly nothing.
        model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets),
                                     init_lora_weights=True, lora_dropout=0.0), adapter_name=name)
        prepare_model_for_compiled_hotswap(model, target_rank=rank, config=model.peft_config[name])
        self.model, self.name, self.rank = model, name, rank
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer) and name in m.scaling}
        self.base: dict[str, float] = {n: 0.0 for n in self.layers}  # alpha / r of the LoRA in the slot
        self.current: str | None = None  # the key (content name) of the LoRA in the slot
        self.scale: float | None = None
        self.broken = False
        self.freeze()
        self.disable()
        log(f"[ml] LoRA hot-swap slot: rank {rank} on {len(self.layers)} layers ({', '.join(targets)})")

    # ------------------------------------------------------------------ state

    def freeze(self) -> None:
        """peft marks activated adapters trainable; a requires_grad flip would be a new graph."""
        for m in self.layers.values():
            for p in m.parameters():
                p.requires_grad_(False)

    def disable(self) -> None:
        self.model.disable_adapters()

    def activate(self, others: list[str] | None = None, *, slot: bool = True) -> None:
        """Make the slot (and ``others``, ordinary adapters already loaded) the active adapters."""
        names = ([self.name] if slot else []) + list(others or [])
        if not names:
            self.disable()
            return
        self.model.enable_adapters()
        self.model.set_adapter(names)
        self.freeze()

    def set_scale(self, scale: float) -> None:
        """The LoRA's weight (lora_scale), written into the scaling tensors: no new graph."""
        if scale == self.scale:
            return
        with torch.no_grad():
            for n, m in self.layers.items():
                m.scaling[self.name].fill_(self.base[n] * scale)
        self.scale = scale

    # ------------------------------------------------------------------ swapping

    def check(self, state_dict: dict[str, torch.Tensor], alphas: dict[str, float] | None = None) -> None:
        """Raise SlotMismatch unless ``state_dict`` (this model's part of a LoRA, keys in peft's
        layout: ``<module>.lora_A.weight`` / ``.lora_B.weight``) is plain LoRA weights on slot
        layers at a rank the slot holds, with one alpha. diffusers' loader undoes a failed
        hotswap by deleting the adapter, which would take the slot off a compiled model, so
        everything it could refuse is refused here first."""
        outside, too_big = [], []
        for key, value in state_dict.items():
            module, _, part = key.rpartition(".lora_")
            if module not in self.layers or part not in ("A.weight", "B.weight"):
                outside.append(key)
            elif part == "A.weight" and value.shape[0] > self.rank:
                too_big.append(int(value.shape[0]))
        if outside:
            raise SlotMismatch(f"it has weights the slot does not hold (e.g. {outside[0]})")
        if too_big:
            raise SlotMismatch(f"its rank {max(too_big)} is above the slot's {self.rank}")
        if alphas and len(set(alphas.values())) > 1:
            raise SlotMismatch("its layers have different alphas")

    def swap(self, key: str, load: Callable[[str], None]) -> None:
        """Copy the LoRA called ``key`` into the slot: ``load(adapter_name)`` runs the
        diffusers loader with ``hotswap=True`` for that name. On failure the slot is emptied
        (a half-copied LoRA never serves a request) and the error is raised."""
        if key == self.current:
            return
        t0 = time.perf_counter()
        try:
            load(self.name)
        except Exception:
            if self.name in getattr(self.model, "peft_config", {}):
                self.clear()
            else:  # the loader took the adapter off: there is no slot any more
                self.broken = True
            raise
        self.base = {n: float(m.scaling[self.name]) for n, m in self.layers.items()}
        self.current, self.scale = key, None
        self.freeze()
        log(f"[ml] LoRA {key} copied into the hot-swap slot in {time.perf_counter() - t0:.2f}s")

    def clear(self) -> None:
        with torch.no_grad():
            for m in self.layers.values():
                m.lora_B[self.name].weight.zero_()
        self.current, self.scale = None, None
