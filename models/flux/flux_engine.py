"""The FLUX.1 engine: loads a schnell or dev checkpoint once, then runs requests.

One code path for both variants; what differs comes from the weights
(``detect_variant``: dev has a guidance embedding) and the ``VARIANTS`` table.
Requests run through diffusers' own FluxPipeline / FluxImg2ImgPipeline /
FluxInpaintPipeline, built from one set of components (the weights live in memory
once), so with go_fast off the images are diffusers' for the same inputs and seed.

Speed:

* prompt embeddings (T5 + CLIP) are cached per prompt (LRU), since encoding is a
  real share of a 4-step run;
* go_fast uses a second transformer sharing everything but fp8 block linears,
  compiled regionally with dynamic shapes and warmed up at setup (flux_fast.py);
* LoRAs are PEFT adapters on the bf16 model (hot-swapped) and merged into the
  go_fast weights (flux_lora.py).

Settings (environment, all optional):

=============================  =======================================================
COGKIT_FLUX_VARIANT            schnell | dev: override what the weights say
COGKIT_FLUX_GO_FAST            0: do not build the go_fast transformer (go_fast=true
                               then runs the bf16 path, with a log line)
COGKIT_FLUX_FP8                0 | 1: fp8 block weights for go_fast (default: on where
                               fp8 matmuls exist, i.e. sm_89+, and on the CPU, where
                               it is the dequantize path; off on A100/T4: bf16 + compile)
COGKIT_FLUX_FP8_GRANULARITY    row | tensor: fp8 weight scales (default row; tensor on sm_89)
COGKIT_FLUX_FP8_CACHE          folder for pre-quantised transformers
COGKIT_FLUX_COMPILE            0 | 1: compile go_fast's blocks (default: on CUDA only)
COGKIT_COMPILE_BACKEND         torch.compile backend (default inductor; "eager" in CPU tests)
COGKIT_COMPILE_CACHE           inductor cache folder (warm boots reuse compiled code)
COGKIT_FLUX_WARMUP             none | min | presets: what setup runs after compiling
                               (default presets on CUDA with compile, else none)
COGKIT_FLUX_SAFETY_CHECKER     safety checker weights (default: <weights>/safety-checker,
                               then CompVis/stable-diffusion-safety-checker if cached)
=============================  =======================================================
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import time
from typing import Any

import torch
from PIL import Image

from cogkit.ml import images as mlimages
from cogkit.ml.device import DevicePlan, apply_speedups, configure_vae, place_vae, plan_device
from cogkit.ml.env import env_flag
from cogkit.ml.errors import InputError
from cogkit.ml.logs import log
from cogkit.ml.lora import trained_lora
from cogkit.ml.outputs import save_images
from cogkit.ml.progress import DenoiseProgress, quiet_libraries, quiet_pipeline
from cogkit.ml.safety import filter_nsfw, load_safety_checker
from cogkit.ml.seeds import generators, resolve_seed
from cogkit.ml.weights import WeightsError, resolve_weights

import flux_sizes as sizes
from flux_lora import LoraSet, merge_into

DEFAULT_WEIGHTS = "black-forest-labs/FLUX.1-schnell"
# BFL's Hub repos hold the diffusers folders and BFL's single-file checkpoints (another
# 24 GB): fetch only the diffusers layout (sub-folders and model_index.json).
HUB_PATTERNS = ["model_index.json", "*/*.json", "*/*.safetensors", "*/*.txt", "*/*.model"]
PROMPT_CACHE_SIZE = 32


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    title: str
    default_steps: int
    max_steps: int
    default_guidance: float | None  # None: no guidance embedding (distilled)
    max_sequence_length: int        # T5 tokens, as BFL/Replicate run each variant


VARIANTS = {
    "schnell": Variant("schnell", "FLUX.1-schnell", default_steps=4, max_steps=4, default_guidance=None,
                       max_sequence_length=256),
    "dev": Variant("dev", "FLUX.1-dev", default_steps=28, max_steps=50, default_guidance=3.5,
                   max_sequence_length=512),
}


@dataclasses.dataclass
class Request:
    prompt: str
    aspect_ratio: str = "1:1"
    width: int | None = None
    height: int | None = None
    image: str | None = None
    prompt_strength: float = 0.8
    mask: str | None = None
    num_outputs: int = 1
    num_inference_steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    output_format: str = "webp"
    output_quality: int = 80
    disable_safety_checker: bool = False
    go_fast: bool = True
    lora_weights: str | None = None
    lora_scale: float = 1.0
    megapixels: str = "1"


def detect_variant(transformer_config: dict[str, Any]) -> str:
    """schnell or dev: COGKIT_FLUX_VARIANT if set, else the transformer's guidance
    embedding (only dev has one)."""
    forced = os.environ.get("COGKIT_FLUX_VARIANT", "").strip().lower()
    if forced:
        if forced not in VARIANTS:
            raise ValueError(f"COGKIT_FLUX_VARIANT: must be schnell or dev, got {forced!r}")
        return forced
    return "dev" if transformer_config.get("guidance_embeds") else "schnell"


def default_granularity(plan: DevicePlan) -> str:
    """fp8 weight scales: per output row (more accurate; _scaled_mm takes row-wise
    scales on sm_90+), per tensor on sm_89 cards (Ada), where row-wise _scaled_mm
    exists only in torch builds that include its CUTLASS kernel."""
    if plan.device == "cuda" and plan.capability is not None and plan.capability < (9, 0):
        return "tensor"
    return "row"


def load_pipeline(root: pathlib.Path, plan: DevicePlan) -> Any:
    from diffusers import FluxPipeline

    if not (root / "model_index.json").is_file():
        raise WeightsError(f"weights: {root} is not a diffusers FLUX folder (no model_index.json)")
    kwargs: dict[str, Any] = {"dtype": plan.dtype}
    if plan.device == "cuda":
        try:  # straight onto the GPU: no second copy through host memory
            return FluxPipeline.from_pretrained(root, device_map=plan.device, **kwargs)
        except Exception as exc:
            log(f"[flux] loading with device_map={plan.device} failed ({type(exc).__name__}: {exc}); loading via the CPU")
    return FluxPipeline.from_pretrained(root, **kwargs).to(plan.device)


class PromptCache:
    """LRU of prompt embeddings: key -> (T5 embeddings, CLIP pooled embedding)."""

    def __init__(self, size: int = PROMPT_CACHE_SIZE) -> None:
        self.size = size
        self.items: collections.OrderedDict[Any, tuple[torch.Tensor, torch.Tensor]] = collections.OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        value = self.items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self.items.move_to_end(key)
        return value

    def put(self, key: Any, value: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


class FluxEngine:
    def __init__(
        self,
        weights: Any = None,
        *,
        pipe: Any = None,
        plan: DevicePlan | None = None,
        fp8_checkpoint: pathlib.Path | None = None,
        warmup: str | None = None,
    ) -> None:
        """Load from ``weights`` (a folder, URL or Hugging Face id; COG_WEIGHTS; the
        schnell default), or use an already built FluxPipeline ``pipe`` (benchmarks)."""
        t0 = time.perf_counter()
        quiet_libraries()
        self.plan = plan or plan_device()
        self.root: pathlib.Path | None = None
        self.default_lora: str | None = None  # used when a request names no lora_weights
        if pipe is None:
            self.root = resolve_weights(weights, default=DEFAULT_WEIGHTS, allow_patterns=HUB_PATTERNS)
            trained = trained_lora(self.root, "flux")
            if trained is not None:  # a fine-tuned version: its base, with the LoRA on by default
                self.default_lora = str(trained.file)
                log(f"[flux] weights are a trained LoRA ({trained.file}); base: {trained.base or DEFAULT_WEIGHTS}")
                self.root = resolve_weights(trained.base or DEFAULT_WEIGHTS, allow_patterns=HUB_PATTERNS)
            pipe = load_pipeline(self.root, self.plan)
            log(f"[flux] pipeline loaded from {self.root} in {time.perf_counter() - t0:.2f}s")
        self.pipe = quiet_pipeline(pipe)
        place_vae(self.pipe.vae, self.plan)
        # Inference only. Also: loading a LoRA freezes the base weights (PEFT), and the
        # go_fast transformer shares those tensors, so a requires_grad flip then would
        # recompile its blocks on the first LoRA request.
        for module in self.pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
        self.variant = VARIANTS[detect_variant(dict(self.pipe.transformer.config))]
        log(f"[flux] variant: {self.variant.title} (default {self.variant.default_steps} steps"
            + (f", guidance {self.variant.default_guidance:g})" if self.variant.default_guidance is not None
               else ", no guidance)"))
        # Fused QKV would change the numbers and the layer names LoRAs address.
        apply_speedups(self.pipe, self.plan, fuse_qkv=False)
        self.prompts = PromptCache()
        self.loras = LoraSet(self.pipe)
        self._pipes: dict[tuple[str, bool], Any] = {}
        self._fast_lora: set[str] = set()
        self._fast_lora_key: tuple[str, float] | None = None
        self.fast: Any = None
        self.fast_report: dict[str, Any] = {}
        self.compiled = False
        if env_flag("COGKIT_FLUX_GO_FAST") is not False:
            self._build_fast(fp8_checkpoint)
        else:
            log("[flux] go_fast: disabled by COGKIT_FLUX_GO_FAST=0; go_fast=true runs the bf16 path")
        self.safety = load_safety_checker(self.root, "COGKIT_FLUX_SAFETY_CHECKER", self.plan, "flux")
        self._warm_up(warmup)
        log(f"[flux] setup took {time.perf_counter() - t0:.2f}s")

    # ------------------------------------------------------------------ go_fast

    def _build_fast(self, checkpoint: pathlib.Path | None) -> None:
        from flux_fast import build_fast, compile_fast, fp8_checkpoint_path

        from cogkit.ml.fp8 import fp8_matmul_supported

        fp8 = env_flag("COGKIT_FLUX_FP8")
        if fp8 is None:
            fp8 = self.plan.device == "cpu" or fp8_matmul_supported(self.plan.device)
            if not fp8:
                log(f"[flux] go_fast: {self.plan.card} has no fp8 matmuls (needs sm_89+); "
                    "using bf16 + torch.compile instead")
        granularity = os.environ.get("COGKIT_FLUX_FP8_GRANULARITY", "").strip() or default_granularity(self.plan)
        if fp8 and checkpoint is None:
            checkpoint = fp8_checkpoint_path(self.root, granularity)
        self.fast, self.fast_report = build_fast(self.pipe.transformer, fp8=fp8, granularity=granularity,
                                                 checkpoint=checkpoint)
        compile_ = env_flag("COGKIT_FLUX_COMPILE")
        if compile_ is None:
            compile_ = self.plan.device == "cuda"
            if not compile_:
                log(f"[flux] go_fast: no torch.compile on {self.plan.device} by default (COGKIT_FLUX_COMPILE=1 turns it on)")
        if compile_:
            compile_fast(self.fast)
            self.compiled = True

    def _warm_up(self, warmup: str | None) -> None:
        mode = (warmup or os.environ.get("COGKIT_FLUX_WARMUP", "")).strip().lower()
        if not mode:
            mode = "presets" if self.compiled and self.plan.device == "cuda" else "none"
        if mode == "none":
            return
        if mode not in ("min", "presets"):
            raise ValueError(f"COGKIT_FLUX_WARMUP: must be none, min or presets, got {mode!r}")
        t0 = time.perf_counter()
        runs: list[Request] = [Request("warm-up", aspect_ratio="1:1", num_inference_steps=1, seed=0),
                               Request("warm-up", aspect_ratio="1:1", megapixels="0.25", num_outputs=2,
                                       num_inference_steps=1, seed=0)]
        if mode == "presets":
            runs += [Request("warm-up", aspect_ratio=ar, megapixels=mp, num_inference_steps=1, seed=0)
                     for mp in sizes.MEGAPIXELS for ar in sizes.ASPECT_RATIOS if (ar, mp) != ("1:1", "1")]
        for fast in ([True, False] if self.fast is not None else [False]):
            for i, req in enumerate(runs if fast else runs[:1]):
                t1 = time.perf_counter()
                req.go_fast = fast
                self.generate(req, quiet=True)
                if i < 2:
                    log(f"[flux] warm-up {'go_fast' if fast else 'bf16'} {req.aspect_ratio}@{req.megapixels}MP "
                        f"x{req.num_outputs}: {time.perf_counter() - t1:.2f}s")
        self.prompts.items.pop(("warm-up", self.variant.max_sequence_length, None), None)
        log(f"[flux] warm-up ({mode}, {len(runs)} sizes) took {time.perf_counter() - t0:.2f}s")

    def _sync_fast_lora(self) -> None:
        """Bring the go_fast weights in line with the eager model's active LoRA."""
        key = self.loras.active
        if key != self._fast_lora_key:
            self._fast_lora = merge_into(self.fast, self.pipe.transformer, key, self._fast_lora)
            self._fast_lora_key = key

    # ------------------------------------------------------------------ pieces

    def pipeline(self, kind: str, fast: bool) -> Any:
        """The txt2img / img2img / inpaint pipeline, on the eager or go_fast transformer."""
        key = (kind, fast)
        if key not in self._pipes:
            import diffusers as D

            cls = {"txt2img": D.FluxPipeline, "img2img": D.FluxImg2ImgPipeline, "inpaint": D.FluxInpaintPipeline}[kind]
            if kind == "txt2img" and not fast:
                pipe = self.pipe
            else:  # same component objects, so nothing is copied (from_pipe would log dtype noise)
                pipe = cls(**{**self.pipe.components, "transformer": self.fast if fast else self.pipe.transformer})
            self._pipes[key] = quiet_pipeline(pipe)
        return self._pipes[key]

    def encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 embeddings [1, L, D], CLIP pooled [1, D]) for ``prompt``, cached."""
        key = (prompt, self.variant.max_sequence_length, self.loras.text_encoder_key())
        hit = self.prompts.get(key)
        if hit is not None:
            return hit
        with torch.inference_mode():
            embeds, pooled, _ = self.pipe.encode_prompt(
                prompt=prompt, prompt_2=None, device=self.plan.device, num_images_per_prompt=1,
                max_sequence_length=self.variant.max_sequence_length,
            )
        self.prompts.put(key, (embeds, pooled))
        return embeds, pooled

    # ------------------------------------------------------------------ one request

    def prepare(self, req: Request) -> dict[str, Any]:
        """Check a request and turn it into pipeline arguments (no model calls)."""
        v = self.variant
        steps = req.num_inference_steps or v.default_steps
        if not 1 <= steps <= v.max_steps:
            raise InputError(f"num_inference_steps: {v.title} runs 1 to {v.max_steps} steps, got {steps}")
        if v.default_guidance is None:
            if req.guidance is not None:
                log(f"[flux] guidance={req.guidance:g} has no effect on {v.title} (it has no guidance embedding)")
            guidance = 0.0
        else:
            guidance = v.default_guidance if req.guidance is None else req.guidance
        if not 1 <= req.num_outputs <= 4:
            raise InputError(f"num_outputs: must be between 1 and 4, got {req.num_outputs}")
        if req.mask and not req.image:
            raise InputError("mask: needs an image to inpaint (give `image` too; white areas of the mask are repainted)")
        if not -1.0 <= req.lora_scale <= 3.0:
            raise InputError(f"lora_scale: must be between -1 and 3, got {req.lora_scale:g}")
        args: dict[str, Any] = {}
        kind = "txt2img"
        try:
            if req.image:
                img = mlimages.open_image(req.image, field="image")
                if req.aspect_ratio != "1:1":
                    log(f"[flux] aspect_ratio={req.aspect_ratio} is ignored: the input image sets the aspect ratio")
                size = sizes.output_size(req.aspect_ratio, req.megapixels, req.width, req.height, image_wh=img.size)
                args["image"] = mlimages.resize_image(img, size)
                kind = "img2img"
                if req.mask:
                    args["mask_image"] = mlimages.binarize_mask(mlimages.open_mask(req.mask, field="mask"), size)
                    kind = "inpaint"
                if not 0 < req.prompt_strength <= 1:
                    raise InputError(
                        f"prompt_strength: must be above 0 and at most 1 with an image, got {req.prompt_strength:g} "
                        "(0 would return the image unchanged)")
                args["strength"] = req.prompt_strength
            else:
                size = sizes.output_size(req.aspect_ratio, req.megapixels, req.width, req.height)
        except (sizes.SizeError, mlimages.ImageInputError) as exc:
            raise InputError(str(exc)) from None
        args.update(width=size[0], height=size[1], num_inference_steps=steps, guidance_scale=guidance,
                    max_sequence_length=v.max_sequence_length)
        return {"kind": kind, "args": args, "size": size, "steps": steps}

    def generate(self, req: Request, *, quiet: bool = False) -> list[Image.Image]:
        """Run one request; returns PIL images (no safety check, nothing written)."""
        prepared = self.prepare(req)
        kind, args = prepared["kind"], prepared["args"]
        self.loras.activate(req.lora_weights or self.default_lora, req.lora_scale)  # a LoraError is an InputError
        fast = bool(req.go_fast and self.fast is not None)
        if req.go_fast and self.fast is None and not quiet:
            log("[flux] go_fast: not available in this setup; running the bf16 path")
        if fast:
            self._sync_fast_lora()
        seed = resolve_seed(req.seed) if not quiet else (req.seed or 0)
        embeds, pooled = self.encode(req.prompt)
        n = req.num_outputs
        configure_vae(self.pipe.vae, prepared["size"][0], prepared["size"][1], n, self.plan)
        pipe = self.pipeline(kind, fast)
        if not quiet:
            w, h = prepared["size"]
            log(f"[flux] {kind} {w}x{h} x{n}, {prepared['steps']} steps"
                + (f", guidance {args['guidance_scale']:g}" if self.variant.default_guidance is not None else "")
                + (f", strength {args['strength']:g}" if "strength" in args else "")
                + (", go_fast" if fast else ", bf16" if self.plan.dtype == torch.bfloat16 else "")
                + (f", LoRA x {req.lora_scale:g}" if req.lora_weights or self.default_lora else ""))
        with torch.inference_mode():
            out = pipe(
                prompt_embeds=embeds.repeat(n, 1, 1),
                pooled_prompt_embeds=pooled.repeat(n, 1),
                generator=generators(seed, n),
                callback_on_step_end=None if quiet else DenoiseProgress(),
                output_type="pil",
                **args,
            )
        return list(out.images)

    def predict(self, req: Request) -> list[Any]:
        """Run one request and write the images; returns cogkit Paths."""
        t0 = time.perf_counter()
        images = self.generate(req)
        t1 = time.perf_counter()
        images = filter_nsfw(self.safety, images, req.disable_safety_checker, "flux")
        paths = save_images(images, req.output_format, req.output_quality)
        t2 = time.perf_counter()
        log(f"[flux] generated in {t1 - t0:.2f}s, checked and encoded {req.output_format} in {t2 - t1:.2f}s")
        return paths
