"""The go_fast transformer: fp8 weights + regional torch.compile, sharing the rest.

``build_fast(eager, ...)`` returns a second FluxTransformer2DModel that shares every
tensor with the bf16 (eager) one except the linears of its repeated blocks, which
become ``FP8Linear`` (float8_e4m3fn weights: ``torch._scaled_mm`` on sm_89+, a
dequantize-then-matmul elsewhere, CPU included). So go_fast costs half a transformer
of memory, and go_fast=false keeps the untouched eager model (exact diffusers numbers).

The fp8 weights are quantised once and saved (``fp8_checkpoint_path``): later setups
load the saved file instead of quantising again. A weights folder may also ship one
as ``transformer-fp8.safetensors``.

Cards without fp8 matmuls (A100, T4) get the same shared copy without fp8 (bf16 +
compile); ``compile_fast`` compiles the repeated blocks with dynamic shapes, so one
graph serves every image size (one more for batches > 1).
"""

from __future__ import annotations

import copy
import hashlib
import os
import pathlib
import time
from typing import Any

import torch

from cogkit.ml.fp8 import FP8Linear, fp8_matmul_supported, quantize_weight
from cogkit.ml.logs import log

FORMAT = "cogkit-flux-fp8"
FORMAT_VERSION = "1"
BLOCK_PREFIXES = ("transformer_blocks.", "single_transformer_blocks.")


def shared_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A structural copy of ``model`` whose parameters and buffers are the same
    tensors (no memory), so its modules can be swapped or compiled independently."""
    memo: dict[int, Any] = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


def block_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The nn.Linear layers inside the repeated blocks (>99 % of the weights); the
    embedders and the output projection stay in the compute dtype."""
    return {
        name: mod for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and name.startswith(BLOCK_PREFIXES)
    }


def _fp8_like(linear: torch.nn.Linear, granularity: str, use_scaled_mm: bool) -> FP8Linear:
    """An FP8Linear shaped like ``linear`` with empty fp8 storage and ``linear``'s own
    bias tensor (shared, so it costs nothing)."""
    meta = torch.nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                           device="meta", dtype=linear.weight.dtype)
    layer = FP8Linear(meta, granularity=granularity, use_scaled_mm=use_scaled_mm)
    layer.bias = linear.bias
    return layer


def weights_key(transformer_dir: pathlib.Path, granularity: str) -> str:
    """A cheap fingerprint of a transformer checkpoint: its config, every safetensors
    header (names, dtypes, shapes, offsets) and 16 samples of 64 KiB spread through
    the data, so a fine-tune with the same shapes gets its own fp8 file."""
    h = hashlib.sha256(f"{FORMAT}:{FORMAT_VERSION}:{granularity}".encode())
    config = transformer_dir / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for path in sorted(transformer_dir.glob("*.safetensors")):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            h.update(f.read(min(n, 100 << 20)))
            for i in range(16):
                f.seek(8 + n + (size - 8 - n) * i // 16)
                h.update(f.read(64 << 10))
    return h.hexdigest()[:24]


def default_fp8_cache() -> pathlib.Path:
    from cogkit.ml.weights import default_cache_dir

    return pathlib.Path(os.environ.get("COGKIT_FLUX_FP8_CACHE") or default_cache_dir() / "flux-fp8")


def fp8_checkpoint_path(root: pathlib.Path | None, granularity: str) -> pathlib.Path | None:
    """Where the pre-quantised transformer of the weights at ``root`` lives (shipped
    with the weights, else in the cache); None without a weights folder."""
    if root is None or not (root / "transformer").is_dir():
        return None
    shipped = root / "transformer-fp8.safetensors"
    if shipped.is_file():
        return shipped
    return default_fp8_cache() / f"{weights_key(root / 'transformer', granularity)}.safetensors"


def _load_checkpoint(path: pathlib.Path, granularity: str, device: str) -> dict[str, torch.Tensor] | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT or meta.get("granularity") != granularity:
            log(f"[flux] fp8: {path} is not a {FORMAT} file with {granularity} scales; quantising instead")
            return None
        return load_file(str(path), device=device)
    except Exception as exc:  # unreadable or truncated: quantise again and overwrite
        log(f"[flux] fp8: cannot read {path} ({type(exc).__name__}: {exc}); quantising instead")
        return None


def _save_checkpoint(path: pathlib.Path, tensors: dict[str, torch.Tensor], granularity: str) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.part-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": FORMAT, "version": FORMAT_VERSION, "granularity": granularity})
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint behind
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log(f"[flux] fp8: could not save {path} ({exc}); the next setup will quantise again")


def build_fast(
    eager: torch.nn.Module,
    *,
    fp8: bool,
    granularity: str = "row",
    checkpoint: pathlib.Path | None = None,
    use_scaled_mm: bool | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The go_fast transformer for ``eager`` and a report of how it was made."""
    t0 = time.perf_counter()
    fast = shared_copy(eager)
    report: dict[str, Any] = {"fp8": fp8}
    if not fp8:
        report["seconds"] = time.perf_counter() - t0
        return fast, report
    linears = block_linears(fast)
    device = str(next(iter(linears.values())).weight.device)
    if use_scaled_mm is None:
        use_scaled_mm = fp8_matmul_supported(device)
    saved = _load_checkpoint(checkpoint, granularity, device) if checkpoint is not None and checkpoint.is_file() else None
    if saved is not None and any(f"{n}.weight" not in saved for n in linears):
        log(f"[flux] fp8: {checkpoint} does not match this transformer; quantising instead")
        saved = None
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, linear in linears.items():
            layer = _fp8_like(linear, granularity, use_scaled_mm)
            if saved is not None:
                w8, scale = saved[f"{name}.weight"], saved[f"{name}.weight_scale"]
            else:
                w8, scale = quantize_weight(linear.weight, granularity)
                tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"] = w8, scale
            layer.weight, layer.weight_scale = w8, scale
            parent, _, child = name.rpartition(".")
            setattr(fast.get_submodule(parent), child, layer)
    report.update(layers=len(linears), granularity=granularity, scaled_mm=bool(use_scaled_mm and any(
        m.use_scaled_mm for m in fast.modules() if isinstance(m, FP8Linear))))
    if saved is not None:
        report["source"] = f"loaded {checkpoint}"
    else:
        report["source"] = "quantised"
        if checkpoint is not None and checkpoint.name != "transformer-fp8.safetensors":
            _save_checkpoint(checkpoint, tensors, granularity)
            report["source"] = f"quantised, saved to {checkpoint}"
    report["seconds"] = time.perf_counter() - t0
    fp8_bytes = sum(m.weight.numel() for m in fast.modules() if isinstance(m, FP8Linear))
    log(f"[flux] fp8: {report['layers']} block linears as float8_e4m3fn ({fp8_bytes / 2**30:.2f} GiB, "
        f"{granularity} scales, {'scaled_mm' if report['scaled_mm'] else 'dequantize'} matmul), "
        f"{report['source']} in {report['seconds']:.2f}s")
    return fast, report


def compile_fast(fast: torch.nn.Module, *, fullgraph: bool = True) -> str:
    """Regional compile of the repeated blocks, dynamic shapes (image sequence length,
    batch) so the size presets share graphs."""
    from cogkit.ml.compile import compile_module

    # The default recompile limit (8) is enough: sizes share one dynamic graph.
    return compile_module(fast, regional=True, dynamic=True, fullgraph=fullgraph)


def describe_checkpoint(path: pathlib.Path) -> dict[str, Any]:
    """The metadata of a saved fp8 file (for tests and logs)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {**(f.metadata() or {}), "tensors": len(list(f.keys()))}
