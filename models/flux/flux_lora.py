"""FLUX LoRAs: how each transformer gets them (where they come from, and their
content-hash adapter names, is cogkit.ml.lora, shared with SDXL).

* ``LoraSet``: the LoRAs of the bf16 pipeline, hot-swapped as PEFT adapters (up to
  ``max_loaded`` kept in memory, least recently used evicted); a request without a
  LoRA disables them, which gives exactly the base model's numbers.
* ``merge_into(fast, eager, adapter)``: the go_fast transformer cannot run PEFT
  layers (its linears are fp8 and compiled), so the active LoRA is merged into its
  weights instead: W = W_base + delta, re-quantised per layer, in place (no
  recompile). Unmerging restores W_base the same way.
"""

from __future__ import annotations

import collections
import contextlib
import time
import warnings
from collections.abc import Iterator
from typing import Any

from cogkit.ml.logs import log
from cogkit.ml.lora import LoraError, adapter_name, resolve_lora_file


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """diffusers/peft warn about things that are expected here (a LoRA without
    text-encoder layers, a second adapter on the same model)."""
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        dlogging.set_verbosity(level)


class LoraSet:
    """PEFT adapters on one diffusers Flux pipeline (its transformer and text encoders)."""

    def __init__(self, pipe: Any, max_loaded: int = 4) -> None:
        self.pipe = pipe
        self.max_loaded = max_loaded
        self.loaded: collections.OrderedDict[str, bool] = collections.OrderedDict()  # name -> has text-encoder layers
        self.active: tuple[str, float] | None = None

    def activate(self, spec: str | None, scale: float = 1.0) -> tuple[str, float] | None:
        """Make ``spec`` at ``scale`` the one active LoRA (None: no LoRA); returns
        (adapter name, scale) or None."""
        if not spec:
            if self.active is not None:
                self.pipe.disable_lora()
                self.active = None
            return None
        path = resolve_lora_file(spec)
        name = adapter_name(path)
        if name not in self.loaded:
            while len(self.loaded) >= self.max_loaded:
                old, _ = self.loaded.popitem(last=False)
                self.pipe.delete_adapters(old)
                if self.active is not None and self.active[0] == old:
                    self.active = None
                log(f"[flux] LoRA {old} unloaded (keeping at most {self.max_loaded})")
            t0 = time.perf_counter()
            try:
                with _quiet_loading():
                    self.pipe.load_lora_weights(str(path), adapter_name=name)
            except Exception as exc:
                self._forget(name)
                raise LoraError(f"lora_weights: cannot load a FLUX LoRA from {spec}: {type(exc).__name__}: {exc}") from None
            adapters = self.pipe.get_list_adapters()
            if name not in adapters.get("transformer", []):
                self._forget(name)
                raise LoraError(f"lora_weights: {spec} holds no LoRA layers for the FLUX transformer")
            te = any(name in v for k, v in adapters.items() if k.startswith("text_encoder"))
            self.loaded[name] = te
            log(f"[flux] LoRA {name} loaded from {path} in {time.perf_counter() - t0:.2f}s"
                + (" (with text-encoder layers)" if te else ""))
        self.loaded.move_to_end(name)
        if self.active != (name, scale):
            self.pipe.enable_lora()
            self.pipe.set_adapters([name], adapter_weights=[scale])
            self.active = (name, scale)
        return self.active

    def _forget(self, name: str) -> None:
        """Undo a failed load: no half-loaded adapter stays behind, and what was
        active before is active again (load_lora_weights activates the new one)."""
        if any(name in v for v in self.pipe.get_list_adapters().values()):
            self.pipe.delete_adapters(name)
        if self.active is not None:
            self.pipe.set_adapters([self.active[0]], adapter_weights=[self.active[1]])
        elif self.loaded:
            self.pipe.disable_lora()

    def text_encoder_key(self) -> tuple[str, float] | None:
        """What the text encoders' LoRA state is (for the prompt-embedding cache key)."""
        if self.active is not None and self.loaded.get(self.active[0]):
            return self.active
        return None


def _lora_layers(eager: Any, adapter: str) -> dict[str, Any]:
    """PEFT LoRA layers of ``eager`` that carry ``adapter``, by module name."""
    out = {}
    for name, mod in eager.named_modules():
        if hasattr(mod, "get_delta_weight") and adapter in getattr(mod, "lora_A", {}):
            out[name] = mod
    return out


def _base_weight(mod: Any) -> Any:
    return mod.base_layer.weight if hasattr(mod, "base_layer") else mod.weight


def merge_into(fast: Any, eager: Any, active: tuple[str, float] | None, merged: set[str]) -> set[str]:
    """Give the go_fast transformer the eager transformer's active LoRA (already set to
    its scale there) by rewriting the affected linears; layers merged before and not
    touched now are restored. Returns the names of the layers now merged."""
    import torch
    from cogkit.ml.fp8 import FP8Linear, quantize_weight

    layers = _lora_layers(eager, active[0]) if active else {}
    fast_linears = {n: m for n, m in fast.named_modules() if isinstance(m, (FP8Linear, torch.nn.Linear))}
    missing = [n for n in layers if n not in fast_linears]
    if missing:
        log(f"[flux] go_fast: {len(missing)} LoRA layers have no counterpart in the fast transformer "
            f"(e.g. {missing[0]}); they are left out there")
    t0 = time.perf_counter()
    with torch.no_grad():
        for name in sorted(set(merged) | set(layers)):
            mod = fast_linears.get(name)
            if mod is None:
                continue
            source = eager.get_submodule(name)
            base = _base_weight(source)
            if name in layers:
                weight = base.float() + layers[name].get_delta_weight(active[0]).float()
            else:
                weight = base
            if isinstance(mod, FP8Linear):
                w8, scale = quantize_weight(weight, mod.granularity)
                mod.weight.copy_(w8)
                mod.weight_scale.copy_(scale)
            elif name in layers:
                mod.weight = torch.nn.Parameter(weight.to(base.dtype), requires_grad=base.requires_grad)
            else:
                mod.weight = base  # shared with the eager transformer again
    now = {n for n in layers if n in fast_linears}
    if now or merged:
        what = f"LoRA {active[0]} x {active[1]:g} merged into {len(now)} layers" if active else "LoRA removed"
        log(f"[flux] go_fast: {what} in {time.perf_counter() - t0:.2f}s")
    return now
