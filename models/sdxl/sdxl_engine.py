"""The SDXL engine: loads the pipelines once, then runs one request in any mode.

Modes: txt2img; img2img (``image``); inpaint (``image`` + ``mask``); outpaint
(``image`` + ``outpaint``, canvas and mask built here); each optionally with a
ControlNet (canny/depth) and a refiner (expert ensemble or base-image refine);
few-step modes LCM-LoRA / SDXL-Turbo / SDXL-Lightning (a Lightning folder, or one of its
``*_unet.safetensors`` files on a base SDXL: sdxl_unet_file.py). Every pipeline is built
from the base's components (``from_pipe``), so the weights live in memory once.

Optional extras are looked up, in order, as a sub-folder of the weights folder,
an environment variable, then a Hugging Face id (only when that resolves; with
HF_HUB_OFFLINE=1 only the local cache counts):

=================  ================================  ==========================================
extra              environment variable              default
=================  ================================  ==========================================
refiner/           COGKIT_SDXL_REFINER               stabilityai/stable-diffusion-xl-refiner-1.0
controlnet-canny/  COGKIT_SDXL_CONTROLNET_CANNY      diffusers/controlnet-canny-sdxl-1.0
controlnet-depth/  COGKIT_SDXL_CONTROLNET_DEPTH      diffusers/controlnet-depth-sdxl-1.0-small
depth-annotator/   COGKIT_SDXL_DEPTH_ANNOTATOR       Intel/dpt-hybrid-midas
safety-checker/    COGKIT_SDXL_SAFETY_CHECKER        CompVis/stable-diffusion-safety-checker
lcm-lora/          COGKIT_SDXL_LCM_LORA              latent-consistency/lcm-lora-sdxl
=================  ================================  ==========================================

Switches (environment): COGKIT_COMPILE=1/0 (regional torch.compile of the UNet and
the VAE decoder plus a warm-up generation in setup; default on for CUDA, off
elsewhere), COGKIT_COMPILE_BACKEND (e.g. "eager" for tests), COGKIT_COMPILE_CACHE
(inductor cache folder), COGKIT_SDXL_FP8=1 (fp8 weight-only transformer-block
linears; no LoRAs then), COGKIT_DEVICE / COGKIT_DTYPE (see cogkit.ml.device),
COGKIT_SDXL_LORA_SLOT=0 / COGKIT_SDXL_LORA_RANK (the compiled UNet's LoRA hot-swap slot,
default on with rank 64: cogkit.ml.lora_hotswap), COGKIT_SDXL_BASE (the base SDXL folder
or Hugging Face id a UNet-only weights file goes on).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import pathlib
import time
from typing import Any

import torch
from PIL import Image

from cogkit.ml import images as mlimages
from cogkit.ml.device import apply_speedups, configure_vae, place_vae, plan_device
from cogkit.ml.env import env_flag
from cogkit.ml.errors import InputError
from cogkit.ml.logs import log
from cogkit.ml.lora import adapter_name, resolve_lora_file, trained_lora
from cogkit.ml.progress import DenoiseProgress, quiet_libraries, quiet_pipeline
from cogkit.ml.safety import filter_nsfw, load_safety_checker
from cogkit.ml.schedulers import make_scheduler
from cogkit.ml.seeds import generators
from cogkit.ml.weights import WeightsError, diffusers_variant, resolve_optional, resolve_weights

DEFAULT_WEIGHTS = "stabilityai/stable-diffusion-xl-base-1.0"
EXTRAS = {
    "refiner": ("COGKIT_SDXL_REFINER", "stabilityai/stable-diffusion-xl-refiner-1.0"),
    "controlnet-canny": ("COGKIT_SDXL_CONTROLNET_CANNY", "diffusers/controlnet-canny-sdxl-1.0"),
    "controlnet-depth": ("COGKIT_SDXL_CONTROLNET_DEPTH", "diffusers/controlnet-depth-sdxl-1.0-small"),
    "depth-annotator": ("COGKIT_SDXL_DEPTH_ANNOTATOR", "Intel/dpt-hybrid-midas"),
    "lcm-lora": ("COGKIT_SDXL_LCM_LORA", "latent-consistency/lcm-lora-sdxl"),
}

# Per fast mode: default steps, guidance, size, and limits that keep results good.
MODES = {
    "standard": dict(steps=30, guidance=7.5, size=1024, max_steps=500, max_guidance=50.0),
    "lcm": dict(steps=6, guidance=1.5, size=1024, max_steps=8, max_guidance=2.0),
    "turbo": dict(steps=1, guidance=0.0, size=512, max_steps=4, max_guidance=1.0),
    "lightning": dict(steps=4, guidance=0.0, size=1024, max_steps=8, max_guidance=1.0),
}
MAX_INPUT_PIXELS = 1024 * 1024  # SDXL's native area; larger inputs are scaled down to it
REFINE_STRENGTH = 0.3           # base_image_refiner: how much of the base image the refiner redoes
MAX_USER_LORAS = 4              # LoRAs kept loaded for hot-swapping (least recently used evicted)


@dataclasses.dataclass
class Request:
    prompt: str = "An astronaut riding a rainbow unicorn"
    negative_prompt: str = ""
    image: str | None = None
    mask: str | None = None
    width: int | None = None
    height: int | None = None
    num_outputs: int = 1
    scheduler: str = "K_EULER"
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    prompt_strength: float = 0.8
    seed: int = 0
    refine: str = "no_refiner"
    high_noise_frac: float = 0.8
    refine_steps: int | None = None
    apply_watermark: bool = True
    lora_scale: float = 0.6
    lora_weights: str | None = None
    disable_safety_checker: bool = False
    outpaint: str | None = None
    controlnet_image: str | None = None
    controlnet_type: str = "canny"
    controlnet_preprocess: bool = True
    controlnet_conditioning_scale: float = 0.75
    controlnet_start: float = 0.0
    controlnet_end: float = 1.0
    fast_mode: str = "auto"
    sizing_strategy: str = "input_image"


def detect_fast_mode(root: pathlib.Path) -> str:
    """What the loaded weights are: an LCM-distilled UNet, SDXL-Turbo/Lightning, or
    standard. Turbo/Lightning are told by name (the folder, or the Hub cache folder a
    few levels up, e.g. models--stabilityai--sdxl-turbo/snapshots/<sha>)."""
    names = root.name.lower()
    if root.parent.name == "snapshots":  # inside huggingface_hub's cache: the repo folder names it
        names += " " + root.parent.parent.name.lower()
    try:
        unet_cfg = json.loads((root / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        unet_cfg = {}
    if unet_cfg.get("time_cond_proj_dim"):
        return "lcm"
    if "lightning" in names:
        return "lightning"
    if "turbo" in names:
        return "turbo"
    return "standard"


def quantize_unet_fp8(unet: Any, *, use_scaled_mm: bool | None = None) -> int:
    """fp8 weight-only linears (per-row scales) for the attention and feed-forward
    projections of the UNet's transformer blocks; convolutions stay as they are.
    ``use_scaled_mm``: see cogkit.ml.fp8.FP8Linear."""
    from cogkit.ml.fp8 import quantize_linears

    return quantize_linears(unet, granularity="row", include=lambda name, layer: ".transformer_blocks." in name,
                            use_scaled_mm=use_scaled_mm)


_PARAMS: dict[type, frozenset[str]] = {}


def _call_params(cls: type) -> frozenset[str]:
    if cls not in _PARAMS:
        import inspect

        _PARAMS[cls] = frozenset(inspect.signature(cls.__call__).parameters)
    return _PARAMS[cls]


def _lora_error(spec: str, exc: BaseException) -> InputError:
    return InputError(f"lora_weights: cannot load a LoRA from {spec}: {type(exc).__name__}: {exc}")


class SDXLEngine:
    def __init__(self, weights: Any = None) -> None:
        t0 = time.perf_counter()
        quiet_libraries()
        from diffusers import StableDiffusionXLPipeline

        self.plan = plan_device()
        self.root = resolve_weights(weights, default=DEFAULT_WEIGHTS, one_copy=True)
        self.default_lora: str | None = None  # used when a request names no lora_weights
        trained = trained_lora(self.root, "sdxl")
        if trained is not None:  # a fine-tuned version: its base, with the LoRA on by default
            self.default_lora = str(trained.file)
            log(f"[sdxl] weights are a trained LoRA ({trained.file}); base: {trained.base or DEFAULT_WEIGHTS}")
            self.root = resolve_weights(trained.base or DEFAULT_WEIGHTS, one_copy=True)
        unet_file = self._unet_file()
        if not (self.root / "model_index.json").is_file():
            raise WeightsError(f"weights: {self.root} is not a diffusers SDXL folder (no model_index.json)")
        self.base = quiet_pipeline(
            StableDiffusionXLPipeline.from_pretrained(self.root, dtype=self.plan.dtype, add_watermarker=False,
                                                      variant=diffusers_variant(self.root))
        ).to(self.plan.device)
        place_vae(self.base.vae, self.plan)  # the refiner shares this VAE
        self.weights_mode = detect_fast_mode(self.root)
        self.lightning_steps: int | None = None  # a Lightning UNet's own step count
        if unet_file is not None:
            from sdxl_unet_file import lightning_steps, load_unet_file

            n = load_unet_file(self.base.unet, unet_file)
            self.lightning_steps = lightning_steps(unet_file.name)
            if self.lightning_steps is not None or "lightning" in unet_file.name.lower():
                self.weights_mode = "lightning"
            log(f"[sdxl] UNet replaced by {unet_file.name} ({n} tensors)"
                + (f", distilled for {self.lightning_steps} steps" if self.lightning_steps else ""))
        log(f"[sdxl] base model loaded from {self.root} (weights look like: {self.weights_mode})")
        self._qkv_fused = bool(apply_speedups(self.base, self.plan, fuse_qkv=self.plan.fuse_qkv)) and self.plan.fuse_qkv
        self._pipes: dict[tuple[str, str | None, bool], Any] = {}
        self._schedulers: dict[tuple[str, bool, bool], Any] = {}
        # Schedulers are built from the weights' own config: a request replaces the
        # txt2img pipeline's scheduler, whose config must not leak into the next one built.
        self._scheduler_configs = {False: self.base.scheduler.config}
        if self.lightning_steps == 1:  # the 1-step Lightning UNet predicts the sample, not the noise
            self._scheduler_configs[False] = {**self.base.scheduler.config, "prediction_type": "sample"}
        self._controlnets: dict[str, Any] = {}
        self._adapters: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lcm_adapter: str | None = None
        self._depth: Any = None
        from sdxl_watermark import make_watermarker

        self.watermarker = make_watermarker()
        self.refiner = self._load_refiner()
        if self.refiner is not None:
            self._scheduler_configs[True] = self.refiner.scheduler.config
        self.safety = load_safety_checker(self.root, "COGKIT_SDXL_SAFETY_CHECKER", self.plan, "sdxl")
        self.lcm_lora_path = self._extra("lcm-lora")
        if self.lcm_lora_path is None and self.weights_mode != "lcm":
            log("[sdxl] LCM-LoRA: weights not available; fast_mode=lcm needs them")
        self.fp8 = bool(env_flag("COGKIT_SDXL_FP8", default=False))
        self.slot: Any = None  # the compiled UNet's LoRA hot-swap slot (cogkit.ml.lora_hotswap)
        if self.fp8:
            quantize_unet_fp8(self.base.unet)
        self.compiled = bool(env_flag("COGKIT_COMPILE", default=self.plan.device == "cuda"))
        if self.compiled:
            self._compile_and_warm_up()
        log(f"[sdxl] setup took {time.perf_counter() - t0:.2f}s")

    def _unet_file(self) -> pathlib.Path | None:
        """When the weights are one .safetensors file holding a UNet (SDXL-Lightning's
        ``*_unet.safetensors``), point ``self.root`` at the base SDXL folder the rest of the
        pipeline comes from (COGKIT_SDXL_BASE, else the default) and return the file."""
        if not self.root.is_file():
            return None
        from sdxl_unet_file import file_kind

        path = self.root
        kind = file_kind(path) if path.suffix == ".safetensors" else "not .safetensors"
        if kind != "unet":
            hint = {
                "lora": "it is a LoRA: pass it as lora_weights (SDXL-Lightning's LoRAs work with fast_mode=lightning)",
                "checkpoint": "it is an original-layout single-file checkpoint; give a diffusers folder "
                              "(model_index.json) or a UNet file in diffusers' layout, such as "
                              "SDXL-Lightning's *_unet.safetensors",
            }.get(kind, "give a diffusers SDXL folder, or one .safetensors file with a UNet in diffusers' layout")
            raise WeightsError(f"weights: {path.name}: {hint}")
        base = os.environ.get("COGKIT_SDXL_BASE", "").strip() or DEFAULT_WEIGHTS
        log(f"[sdxl] weights are a UNet file ({path.name}); the rest of the pipeline from {base}")
        self.root = resolve_weights(base, one_copy=True)
        return path

    def _compile_and_warm_up(self) -> None:
        """Regional compile of the UNet (its repeated transformer blocks) and the VAE
        decoder, then one short generation so the first request does not pay for it."""
        from cogkit.ml.compile import compile_unet_pipeline, warm_up

        if not self.fp8 and env_flag("COGKIT_SDXL_LORA_SLOT", default=True):
            from cogkit.ml.lora_hotswap import DEFAULT_RANK, HotswapSlot

            self._unfuse_qkv()  # LoRAs address the separate q/k/v projections
            rank = int(os.environ.get("COGKIT_SDXL_LORA_RANK") or DEFAULT_RANK)
            self.slot = HotswapSlot(self.base.unet, rank=rank)
        compile_unet_pipeline(self.base)
        size = MODES[self.weights_mode]["size"] if self.plan.device == "cuda" else 64

        def generate() -> None:
            self.base("warm-up", width=size, height=size, num_inference_steps=2,
                      guidance_scale=MODES[self.weights_mode]["guidance"], output_type="pil")

        if self.slot is not None:  # both graphs: with the (empty) LoRA slot on, and without
            self.slot.activate()
            warm_up(generate, runs=1, label=f"compile warm-up at {size}x{size}, LoRA slot on")
            self.slot.disable()
        warm_up(generate, runs=1, label=f"compile warm-up at {size}x{size}")

    # ------------------------------------------------------------------ extras

    def _extra(self, key: str) -> pathlib.Path | None:
        env, default = EXTRAS[key]
        return resolve_optional(self.root, key, env, default, tag="sdxl")

    def _load_refiner(self) -> Any:
        path = self._extra("refiner")
        if path is None:
            log("[sdxl] refiner: weights not available; refine=no_refiner only")
            return None
        from diffusers import StableDiffusionXLImg2ImgPipeline

        refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(
            path, text_encoder_2=self.base.text_encoder_2, vae=self.base.vae,
            dtype=self.plan.dtype, add_watermarker=False, variant=diffusers_variant(path),
        ).to(self.plan.device)
        log(f"[sdxl] refiner loaded from {path}")
        return quiet_pipeline(refiner)

    def _controlnet(self, kind: str) -> Any:
        if kind not in self._controlnets:
            path = self._extra(f"controlnet-{kind}")
            if path is None:
                raise InputError(
                    f"controlnet_type: no ControlNet weights for {kind!r} are available "
                    f"(add controlnet-{kind}/ to the weights or set {EXTRAS['controlnet-' + kind][0]})"
                )
            from diffusers import ControlNetModel

            cn = ControlNetModel.from_pretrained(path, dtype=self.plan.dtype,
                                                 variant=diffusers_variant(path)).to(self.plan.device)
            if self.plan.channels_last:
                cn.to(memory_format=torch.channels_last)
            self._controlnets[kind] = cn
            log(f"[sdxl] ControlNet {kind} loaded from {path}")
        return self._controlnets[kind]

    def _depth_estimator(self) -> Any:
        if self._depth is None:
            path = self._extra("depth-annotator")
            if path is None:
                raise InputError(
                    "controlnet_type: depth needs a depth-estimation model and none is available "
                    "(add depth-annotator/ to the weights or set COGKIT_SDXL_DEPTH_ANNOTATOR), "
                    "or pass a ready depth map with controlnet_preprocess=false"
                )
            from sdxl_control import DepthEstimator

            self._depth = DepthEstimator(path, self.plan.device)
            log(f"[sdxl] depth annotator loaded from {path}")
        return self._depth

    # ------------------------------------------------------------------ pipelines

    def _derive(self, cls: type, source: Any, **extra: Any) -> Any:
        """``cls`` on ``source``'s modules (shared, nothing copied). from_pipe casts every module
        to one dtype, fp32 unless told, and they are the base pipeline's own: without ``dtype``
        the first img2img request would turn the whole GPU model into fp32."""
        pipe = cls.from_pipe(source, dtype=self.plan.dtype, **extra)
        place_vae(pipe.vae, self.plan)  # from_pipe cast an fp32 VAE down with the rest
        return pipe

    def pipeline(self, kind: str, control: str | None = None) -> Any:
        """The base pipeline for kind txt2img|img2img|inpaint, with a ControlNet or not."""
        key = (kind, control, False)
        if key not in self._pipes:
            import diffusers as D

            if control is None:
                cls = {"txt2img": None, "img2img": D.StableDiffusionXLImg2ImgPipeline,
                       "inpaint": D.StableDiffusionXLInpaintPipeline}[kind]
                pipe = self.base if cls is None else self._derive(cls, self.base)
            else:
                cls = {"txt2img": D.StableDiffusionXLControlNetPipeline,
                       "img2img": D.StableDiffusionXLControlNetImg2ImgPipeline,
                       "inpaint": D.StableDiffusionXLControlNetInpaintPipeline}[kind]
                pipe = self._derive(cls, self.base, controlnet=self._controlnet(control))
            self._pipes[key] = quiet_pipeline(pipe)
        return self._pipes[key]

    def refiner_pipeline(self, kind: str) -> Any:
        key = ("refine-inpaint" if kind == "inpaint" else "refine", None, True)
        if key not in self._pipes:
            from diffusers import StableDiffusionXLInpaintPipeline

            pipe = self.refiner if kind != "inpaint" else self._derive(StableDiffusionXLInpaintPipeline, self.refiner)
            self._pipes[key] = quiet_pipeline(pipe)
        return self._pipes[key]

    def scheduler(self, name: str, trailing: bool, refiner: bool = False) -> Any:
        key = (name, trailing, refiner)
        if key not in self._schedulers:
            self._schedulers[key] = make_scheduler(name, self._scheduler_configs[refiner], trailing=trailing)
        return self._schedulers[key]

    # ------------------------------------------------------------------ LoRA

    def _unfuse_qkv(self) -> None:
        if self._qkv_fused:
            self.base.unfuse_qkv_projections()
            self._qkv_fused = False
            log("[sdxl] fused QKV turned off (LoRA layers need the separate projections)")

    def _load_adapter(self, path: pathlib.Path, name: str) -> None:
        self._unfuse_qkv()
        t0 = time.perf_counter()
        if path.is_file():
            self.base.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        else:
            self.base.load_lora_weights(str(path), adapter_name=name)
        log(f"[sdxl] LoRA {name} loaded from {path} in {time.perf_counter() - t0:.2f}s")

    def set_loras(self, lora_weights: str | None, lora_scale: float, lcm: bool) -> None:
        """Activate the requested LoRA and/or the LCM-LoRA; deactivate all when none is
        wanted. Loaded LoRAs stay loaded (least recently used evicted). On a compiled UNet
        a LoRA is copied into the hot-swap slot instead, so no request recompiles it."""
        names, scales = [], []
        if (lora_weights or lcm) and self.fp8:
            raise InputError(("lora_weights" if lora_weights else "fast_mode") +
                             ": LoRAs cannot be applied to the fp8 UNet (COGKIT_SDXL_FP8=1)")
        if lcm:
            if self._lcm_adapter is None:
                assert self.lcm_lora_path is not None
                self._load_adapter(self.lcm_lora_path, "lcm")
                self._lcm_adapter = "lcm"
            names.append("lcm")
            scales.append(1.0)
        in_slot = False
        if lora_weights:
            path = resolve_lora_file(lora_weights)
            name = adapter_name(path)  # by content: one adapter per LoRA, whatever path or URL named it
            in_slot = name not in self._adapters and self._swap_into_slot(path, name, lora_weights)
            if not in_slot:
                if name not in self._adapters:
                    while len(self._adapters) >= MAX_USER_LORAS:
                        old, _ = self._adapters.popitem(last=False)
                        self.base.delete_adapters(old)
                    try:
                        self._load_adapter(path, name)
                    except Exception as exc:
                        raise _lora_error(lora_weights, exc) from None
                    self._adapters[name] = str(path)
                self._adapters.move_to_end(name)
                names.append(name)
                scales.append(lora_scale)
        if names:  # ordinary adapters: LCM, or LoRAs loaded the usual way (this sets only their scales)
            self.base.enable_lora()
            self.base.set_adapters(names, adapter_weights=scales)
        elif self._adapters or self._lcm_adapter:
            self.base.disable_lora()
        if self.slot is not None:  # then the UNet's adapters: the slot's scale in place, and which are on
            if in_slot:
                self.slot.set_scale(lora_scale)
            self.slot.activate(names, slot=in_slot)

    def _swap_into_slot(self, path: pathlib.Path, name: str, spec: str) -> bool:
        """Copy the LoRA at ``path`` into the compiled UNet's slot; False when there is no
        slot or the LoRA does not fit it (then it is loaded as an ordinary adapter)."""
        if self.slot is None:
            return False
        if self.slot.current == name:
            return True
        from diffusers.utils import convert_unet_state_dict_to_peft

        from cogkit.ml.lora_hotswap import SlotMismatch

        try:
            state_dict, alphas = self.base.lora_state_dict(str(path), unet_config=self.base.unet.config)
        except Exception as exc:
            raise _lora_error(spec, exc) from None
        unet = {k.removeprefix("unet."): v for k, v in state_dict.items() if k.startswith("unet.")}
        if unet and not any("lora_A" in k for k in unet):
            unet = convert_unet_state_dict_to_peft(unet)
        try:
            if len(unet) < len(state_dict):
                raise SlotMismatch("it has text-encoder layers (the slot is on the UNet only)")
            self.slot.check(unet, {k: v for k, v in (alphas or {}).items() if k.startswith("unet.")})
        except SlotMismatch as exc:
            log(f"[sdxl] LoRA {name}: {exc}; loading it as its own adapter (the compiled UNet recompiles for it)")
            return False
        try:
            self.slot.swap(name, lambda slot: self.base.load_lora_into_unet(
                state_dict, network_alphas=alphas, unet=self.base.unet, adapter_name=slot,
                _pipeline=self.base, hotswap=True))
        except Exception as exc:
            if self.slot.broken:
                log("[sdxl] the LoRA hot-swap slot was lost; LoRAs load as ordinary adapters from now on")
                self.slot = None
            raise _lora_error(spec, exc) from None
        log(f"[sdxl] LoRA {name} from {path} in the hot-swap slot")
        return True

    # ------------------------------------------------------------------ one request

    def resolve_mode(self, req: Request) -> str:
        mode = self.weights_mode if req.fast_mode == "auto" else ("standard" if req.fast_mode == "off" else req.fast_mode)
        if mode == "lcm" and self.weights_mode != "lcm" and self.lcm_lora_path is None:
            raise InputError("fast_mode: lcm needs LCM-LoRA weights and none are available "
                             "(add lcm-lora/ to the weights or set COGKIT_SDXL_LCM_LORA)")
        return mode

    def prepare(self, req: Request) -> dict[str, Any]:
        """Validate and resolve a request into pipeline arguments (no model calls)."""
        mode = self.resolve_mode(req)
        d = MODES[mode]
        if mode == "lightning" and self.lightning_steps:  # the steps its UNet was distilled for
            d = {**d, "steps": self.lightning_steps, "max_steps": max(d["max_steps"], self.lightning_steps)}
        steps = req.num_inference_steps or d["steps"]
        guidance = d["guidance"] if req.guidance_scale is None else req.guidance_scale
        if steps > d["max_steps"]:
            raise InputError(f"num_inference_steps: {mode} mode works with at most {d['max_steps']} steps (got {steps})")
        if guidance > d["max_guidance"]:
            raise InputError(f"guidance_scale: {mode} mode works with at most {d['max_guidance']:g} (got {guidance:g})")
        for field in ("width", "height"):
            v = getattr(req, field)
            if v is not None and v % 8:
                raise InputError(f"{field}: must be a multiple of 8 (got {v})")
        if req.mask and not req.image:
            raise InputError("mask: needs an image to inpaint (give `image` too)")
        if req.outpaint and not req.image:
            raise InputError("outpaint: needs an image to extend (give `image` too)")
        if req.outpaint and req.mask:
            raise InputError("outpaint: builds its own mask; do not give `mask` with it")
        if req.controlnet_start >= req.controlnet_end:
            raise InputError("controlnet_start: must be below controlnet_end")
        if req.refine != "no_refiner":
            if self.refiner is None:
                raise InputError(f"refine: {req.refine} needs refiner weights and none are available "
                                 "(add refiner/ to the weights or set COGKIT_SDXL_REFINER)")
            if mode != "standard":
                raise InputError(f"refine: the refiner is for standard SDXL, not fast_mode {mode}")

        size = (req.width or d["size"], req.height or d["size"])
        args: dict[str, Any] = {}
        kind = "txt2img"
        strength = req.prompt_strength
        if req.image:
            img = mlimages.open_image(req.image, field="image")
            if req.sizing_strategy == "input_image":  # else: exactly width x height
                size = mlimages.fit_size(*img.size, multiple=8, max_pixels=MAX_INPUT_PIXELS)
            img = mlimages.resize_image(img, size)
            kind = "img2img"
            mask = None
            if req.mask:
                mask = mlimages.binarize_mask(mlimages.open_mask(req.mask, field="mask"), size)
            elif req.outpaint:
                try:
                    pads = mlimages.parse_outpaint(req.outpaint, *img.size)
                except ValueError as exc:
                    raise InputError(str(exc)) from None
                img, mask = mlimages.outpaint_canvas(img, pads, multiple=8)
                if img.size[0] * img.size[1] > MAX_INPUT_PIXELS * 2:
                    size = mlimages.fit_size(*img.size, multiple=8, max_pixels=MAX_INPUT_PIXELS * 2)
                    img, mask = mlimages.resize_image(img, size), mlimages.binarize_mask(mask, size)
                size = img.size
                strength = 1.0  # the padding holds only stretched edge pixels: repaint it fully
                log(f"[sdxl] outpaint: canvas {size[0]}x{size[1]} (pads l/r/u/d {pads}), strength 1.0")
            if int(steps * strength) < 1 and req.num_inference_steps is None and strength > 0:
                # few-step defaults (e.g. Turbo's 1 step) would run no step at this strength
                steps = min(d["max_steps"], math.ceil(1 / strength))
            if int(steps * strength) < 1:
                raise InputError(
                    f"prompt_strength: {strength:g} of {steps} steps is no denoising step at all; "
                    "raise prompt_strength or num_inference_steps"
                )
            args["image"] = img
            if mask is not None:
                kind = "inpaint"
                args["mask_image"] = mask
            args["strength"] = strength
        control = None
        if req.controlnet_image:
            control = req.controlnet_type
            cimg = mlimages.resize_image(mlimages.open_image(req.controlnet_image, field="controlnet_image"), size)
            if req.controlnet_preprocess:
                if control == "canny":
                    from sdxl_control import canny

                    cimg = canny(cimg)
                else:
                    cimg = self._depth_estimator()(cimg)
            args["image" if kind == "txt2img" else "control_image"] = cimg
            args["controlnet_conditioning_scale"] = req.controlnet_conditioning_scale
            args["control_guidance_start"] = req.controlnet_start
            args["control_guidance_end"] = req.controlnet_end
        args.update(
            prompt=req.prompt, negative_prompt=req.negative_prompt or None,
            width=size[0], height=size[1], num_inference_steps=steps, guidance_scale=guidance,
            num_images_per_prompt=req.num_outputs,
        )
        return {"mode": mode, "kind": kind, "control": control, "args": args, "size": size}

    def run(self, req: Request) -> list[Image.Image]:
        plan = self.prepare(req)
        mode, kind, args = plan["mode"], plan["kind"], plan["args"]
        pipe = self.pipeline(kind, plan["control"])
        accepted = _call_params(type(pipe))
        if req.refine == "expert_ensemble_refiner" and "denoising_end" not in accepted:
            raise InputError("refine: expert_ensemble_refiner is not available for ControlNet img2img; use base_image_refiner")
        args = {k: v for k, v in args.items() if k in accepted}  # img2img takes its size from the image
        lcm = mode == "lcm" and self.weights_mode != "lcm"
        self.set_loras(req.lora_weights or self.default_lora, req.lora_scale, lcm)
        sched_name = "LCM" if mode == "lcm" else req.scheduler
        pipe.scheduler = self.scheduler(sched_name, trailing=mode in ("turbo", "lightning"))
        pipe.watermark = self.watermarker if req.apply_watermark else None
        configure_vae(pipe.vae, *plan["size"], req.num_outputs, self.plan)
        gens = generators(req.seed, req.num_outputs)
        log(f"[sdxl] {kind}{' + controlnet ' + plan['control'] if plan['control'] else ''} "
            f"{plan['size'][0]}x{plan['size'][1]} steps={args['num_inference_steps']} "
            f"guidance={args['guidance_scale']:g} scheduler={sched_name} mode={mode}"
            + (f" lora_scale={req.lora_scale:g}" if req.lora_weights else ""))
        with torch.inference_mode():
            if req.refine == "no_refiner":
                out = pipe(**args, generator=gens, callback_on_step_end=DenoiseProgress())
                images = out.images
            else:
                images = self._run_refined(req, pipe, kind, args, gens)
        return filter_nsfw(self.safety, images, req.disable_safety_checker, "sdxl")

    def _run_refined(self, req: Request, pipe: Any, kind: str, args: dict[str, Any], gens: list[Any]) -> list[Image.Image]:
        refiner = self.refiner_pipeline(kind)
        refiner.scheduler = self.scheduler(req.scheduler, trailing=False, refiner=True)
        refiner.watermark = self.watermarker if req.apply_watermark else None
        common = dict(prompt=req.prompt, negative_prompt=req.negative_prompt or None,
                      guidance_scale=args["guidance_scale"], num_images_per_prompt=req.num_outputs)
        extra = ({"mask_image": args["mask_image"], "width": args["width"], "height": args["height"]}
                 if kind == "inpaint" else {})
        if req.refine == "expert_ensemble_refiner":
            latents = pipe(**args, generator=gens, denoising_end=req.high_noise_frac, output_type="latent",
                           callback_on_step_end=DenoiseProgress()).images
            # the refiner continues the same schedule; each output keeps its own generator
            out = refiner(**common, **extra, image=latents, num_inference_steps=args["num_inference_steps"],
                          denoising_start=req.high_noise_frac, generator=gens, callback_on_step_end=DenoiseProgress("refining"))
        else:
            refine_steps = req.refine_steps or args["num_inference_steps"]
            if int(refine_steps * REFINE_STRENGTH) < 1:
                raise InputError(f"refine_steps: base_image_refiner refines {REFINE_STRENGTH:g} of the steps, "
                                 f"so it needs at least {math.ceil(1 / REFINE_STRENGTH)} (got {refine_steps})")
            latents = pipe(**args, generator=gens, output_type="latent", callback_on_step_end=DenoiseProgress()).images
            out = refiner(**common, **extra, image=latents, strength=REFINE_STRENGTH,
                          num_inference_steps=refine_steps,
                          generator=gens,
                          callback_on_step_end=DenoiseProgress("refining"))
        return out.images
