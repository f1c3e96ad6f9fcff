"""The PhotoMaker engine: an SDXL pipeline with TencentARC's LoRA fused in, plus the
ID encoder; runs one request from 1-4 ID images.

One request, in order: style template; trigger-word rules (photomaker_prompt.py);
ID images opened by the shared image rules and CLIP-preprocessed; the text-only,
ID and negative prompts encoded by both text encoders in one batch; the ID
encoder fuses one embedding per image into the class-word rows of the ID prompt;
then diffusers' own SDXL denoising loop runs on the text-only prompt and, from
the step after ``start_merge_step``, on the ID-fused one (the swap is a
``callback_on_step_end`` that hands the pipeline new ``prompt_embeds`` and
``add_text_embeds``); finally the optional safety checker.

Switches (environment): COGKIT_COMPILE=1/0 (regional torch.compile of the UNet and
the VAE decoder plus a warm-up generation in setup; default on for CUDA),
COGKIT_COMPILE_BACKEND, COGKIT_COMPILE_CACHE, COGKIT_DEVICE / COGKIT_DTYPE
(cogkit.ml.device). Weights: see photomaker_weights.py.
"""

from __future__ import annotations

import dataclasses
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
from cogkit.ml.progress import DenoiseProgress, quiet_libraries, quiet_pipeline
from cogkit.ml.safety import SafetyChecker, filter_nsfw, load_safety_checker
from cogkit.ml.schedulers import make_scheduler
from cogkit.ml.seeds import generators
from cogkit.ml.weights import WeightsError

import photomaker_prompt as prompts
from photomaker_id_encoder import IDEncoder, IDEncoderError, load_id_encoder
from photomaker_styles import DEFAULT_NEGATIVE, DEFAULT_PROMPT, DEFAULT_STYLE, apply_style

IMAGE_FIELDS = ("input_image", "input_image2", "input_image3", "input_image4")


@dataclasses.dataclass
class Request:
    images: list[str]                      # 1-4 paths, in input_image, input_image2.. order
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE
    style_name: str = DEFAULT_STYLE
    style_strength_ratio: float = 20.0
    num_steps: int = 20
    guidance_scale: float = 5.0
    num_outputs: int = 1
    seed: int = 0
    disable_safety_checker: bool = False
    fields: list[str] | None = None        # the input name of each image, for error messages


@dataclasses.dataclass
class Prepared:
    prompt: str                            # after the style template
    negative_prompt: str
    id_prompts: tuple[prompts.IdPrompt, prompts.IdPrompt]   # per tokenizer
    negative_ids: tuple[list[int], list[int]]
    images: list[Image.Image]
    merge_step: int


class MergeCallback:
    """``callback_on_step_end``: progress lines, and after step ``merge_step`` the
    ID-fused prompt embeddings replace the text-only ones for the remaining steps."""

    def __init__(self, merge_step: int, embeds: torch.Tensor, pooled: torch.Tensor,
                 negative: torch.Tensor, negative_pooled: torch.Tensor, num_outputs: int) -> None:
        self.merge_step = merge_step
        self.parts = (embeds, pooled, negative, negative_pooled)
        self.num_outputs = num_outputs
        self.progress = DenoiseProgress()
        self.merged_at: int | None = None  # index of the first step on the ID-fused prompt

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        self.progress(pipe, step, timestep, callback_kwargs)
        if step != self.merge_step:
            return {}
        n = self.num_outputs
        embeds, pooled, negative, negative_pooled = (t.repeat_interleave(n, dim=0) for t in self.parts)
        if pipe.do_classifier_free_guidance:  # the pipeline's batch is [negatives, positives]
            embeds, pooled = torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])
        self.merged_at = step + 1
        return {"prompt_embeds": embeds, "add_text_embeds": pooled}


def _variant(root: pathlib.Path) -> str | None:
    """'fp16' when the base ships only fp16-variant UNet weights (as RealVisXL does in
    some copies), else None."""
    unet = root / "unet"
    plain = any(unet.glob("diffusion_pytorch_model.safetensors")) or any(unet.glob("diffusion_pytorch_model.bin"))
    return "fp16" if not plain and any(unet.glob("*.fp16.safetensors")) else None


class PhotoMakerEngine:
    def __init__(self, pipe: Any, id_encoder: IDEncoder, plan: DevicePlan, *,
                 safety: SafetyChecker | None = None) -> None:
        self.pipe = quiet_pipeline(pipe)
        self.id_encoder = id_encoder
        self.plan = plan
        self.safety = safety
        te1, te2 = pipe.text_encoder.config.hidden_size, pipe.text_encoder_2.config.hidden_size
        widths = (id_encoder.visual_projection.out_features, id_encoder.visual_projection_2.out_features)
        if widths != (te1, te2) or id_encoder.width != pipe.unet.config.cross_attention_dim:
            raise WeightsError(
                f"weights: the PhotoMaker ID encoder makes {widths[0]}+{widths[1]}-wide embeddings but this "
                f"SDXL base's text encoders are {te1}+{te2} wide (UNet cross-attention "
                f"{pipe.unet.config.cross_attention_dim}); the checkpoint does not belong to this base")
        self.trigger_ids = (prompts.add_trigger_token(pipe.tokenizer), prompts.add_trigger_token(pipe.tokenizer_2))
        # the reference samples with Euler, whatever scheduler the base ships with
        pipe.scheduler = make_scheduler("K_EULER", pipe.scheduler.config)

    @classmethod
    def from_weights(cls, weights: Any = None) -> PhotoMakerEngine:
        from diffusers import StableDiffusionXLPipeline

        from photomaker_weights import SAFETY_ENV, fuse_lora, read_checkpoint, resolve_base, resolve_checkpoint

        t0 = time.perf_counter()
        quiet_libraries()
        plan = plan_device()
        root = resolve_base(weights)
        checkpoint = resolve_checkpoint(root)
        id_state, lora = read_checkpoint(checkpoint)
        pipe = StableDiffusionXLPipeline.from_pretrained(
            root, dtype=plan.dtype, add_watermarker=False, variant=_variant(root)).to(plan.device)
        log(f"[photomaker] SDXL base loaded from {root}")
        place_vae(pipe.vae, plan)
        layers = fuse_lora(pipe, lora)
        try:
            encoder = load_id_encoder(id_state).to(plan.device, plan.dtype)
        except IDEncoderError as exc:
            raise WeightsError(f"weights: {checkpoint}: {exc}") from None
        cfg = encoder.vision_model.config
        log(f"[photomaker] checkpoint {checkpoint.name}: LoRA fused into {layers} UNet layers; ID encoder CLIP "
            f"ViT {cfg.hidden_size}x{cfg.num_hidden_layers} layers, patch {cfg.patch_size}, {cfg.image_size}px")
        apply_speedups(pipe, plan)  # after the fuse: fused QKV would hide the LoRA's target layers
        safety = load_safety_checker(root, SAFETY_ENV, plan, "photomaker")
        engine = cls(pipe, encoder, plan, safety=safety)
        if env_flag("COGKIT_COMPILE", default=plan.device == "cuda"):
            engine.compile_and_warm_up()
        log(f"[photomaker] setup took {time.perf_counter() - t0:.2f}s")
        return engine

    def compile_and_warm_up(self) -> None:
        from cogkit.ml.compile import compile_unet_pipeline, warm_up

        compile_unet_pipeline(self.pipe)
        face = Image.new("RGB", (self.id_encoder.image_size,) * 2, (128, 128, 128))
        prep = self.prepare_text(Request(images=[]), 1)
        prep.images = [face]
        warm_up(lambda: self.generate(prep, num_steps=2), runs=1, label="compile warm-up")

    # ------------------------------------------------------------------ one request

    def prepare(self, req: Request) -> Prepared:
        """Check a request and resolve it into token ids and images (no model calls).
        The prompt rules are checked before any image is opened."""
        if not 1 <= len(req.images) <= 4:
            raise InputError(f"input_image: give 1 to 4 ID images (got {len(req.images)})")
        prep = self.prepare_text(req, len(req.images))
        fields = req.fields or list(IMAGE_FIELDS[: len(req.images)])
        prep.images = [mlimages.open_image(path, field=field) for path, field in zip(req.images, fields)]
        return prep

    def prepare_text(self, req: Request, num_images: int) -> Prepared:
        """The styled prompts as token ids for ``num_images`` ID images (images left empty)."""
        tok1, tok2 = self.pipe.tokenizer, self.pipe.tokenizer_2
        for tok, trigger in zip((tok1, tok2), self.trigger_ids):
            prompts.check_trigger(tok, trigger, req.prompt)
            prompts.check_no_trigger(tok, trigger, req.negative_prompt)
        try:
            styled, styled_negative = apply_style(req.style_name, req.prompt, req.negative_prompt)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        id1 = prompts.id_prompt(tok1, self.trigger_ids[0], styled, num_images)
        id2 = prompts.id_prompt(tok2, self.trigger_ids[1], styled, num_images)
        if id1.class_positions != id2.class_positions:  # SDXL's two tokenizers share one vocabulary
            raise RuntimeError("the two tokenizers split the prompt differently; PhotoMaker needs them to agree")
        neg1, dropped_negative = prompts.plain_ids(tok1, styled_negative)
        neg2, _ = prompts.plain_ids(tok2, styled_negative)
        if id2.dropped:
            log(f"[photomaker] prompt: CLIP reads {tok2.model_max_length} tokens; this part was cut off: {id2.dropped!r}")
        if dropped_negative:
            log(f"[photomaker] negative prompt: CLIP reads {tok2.model_max_length} tokens; this part was cut off: "
                f"{dropped_negative!r}")
        return Prepared(styled, styled_negative, (id1, id2), (neg1, neg2), [],
                        prompts.start_merge_step(req.style_strength_ratio, req.num_steps))

    def encode(self, prep: Prepared) -> dict[str, torch.Tensor]:
        """Both text encoders on [text-only, ID, negative] ids in one batch each:
        penultimate hidden states concatenated (SDXL's prompt embeddings) and text
        encoder 2's pooled projection, as diffusers' encode_prompt computes them."""
        device = self.plan.device
        hidden = []
        pooled = None
        for k, encoder in enumerate((self.pipe.text_encoder, self.pipe.text_encoder_2)):
            p = prep.id_prompts[k]
            ids = torch.tensor([p.text_ids, p.id_ids, prep.negative_ids[k]], device=device)
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]
        embeds = torch.cat(hidden, dim=-1).to(self.pipe.text_encoder_2.dtype)
        return {"text": embeds[0:1], "id": embeds[1:2], "negative": embeds[2:3],
                "text_pooled": pooled[0:1], "id_pooled": pooled[1:2], "negative_pooled": pooled[2:3]}

    def generate(self, prep: Prepared, *, num_steps: int, guidance_scale: float = 5.0, num_outputs: int = 1,
                 seed: int = 0) -> tuple[list[Image.Image], MergeCallback]:
        e = self.encode(prep)
        pixels = self.id_encoder.preprocess(prep.images).to(self.plan.device, self.id_encoder.visual_projection.weight.dtype)
        fused = self.id_encoder(pixels, e["id"], prep.id_prompts[1].class_positions)
        merge = MergeCallback(prep.merge_step, fused, e["id_pooled"], e["negative"], e["negative_pooled"], num_outputs)
        out = self.pipe(
            prompt_embeds=e["text"], pooled_prompt_embeds=e["text_pooled"],
            negative_prompt_embeds=e["negative"], negative_pooled_prompt_embeds=e["negative_pooled"],
            num_inference_steps=num_steps, guidance_scale=guidance_scale, num_images_per_prompt=num_outputs,
            generator=generators(seed, num_outputs), callback_on_step_end=merge,
        )
        return out.images, merge

    def run(self, req: Request) -> list[Image.Image]:
        prep = self.prepare(req)
        size = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        configure_vae(self.pipe.vae, size, size, req.num_outputs, self.plan)
        p = prep.id_prompts[1]
        log(f"[photomaker] {len(prep.images)} ID image(s) on class word {p.class_token!r} (tokens "
            f"{p.class_positions.start}-{p.class_positions.stop - 1}); {size}x{size} steps={req.num_steps} "
            f"guidance={req.guidance_scale:g} style={req.style_name!r} "
            f"style_strength_ratio={req.style_strength_ratio:g} -> text-only steps 0-{prep.merge_step}")
        if prep.merge_step >= req.num_steps - 1:
            log(f"[photomaker] note: with style_strength_ratio {req.style_strength_ratio:g} and {req.num_steps} "
                "steps every step runs on the text-only prompt, so the ID images have no effect; "
                "use more steps or a lower ratio")
        with torch.inference_mode():
            images, merge = self.generate(prep, num_steps=req.num_steps, guidance_scale=req.guidance_scale,
                                          num_outputs=req.num_outputs, seed=req.seed)
        if merge.merged_at is not None:
            log(f"[photomaker] ID embedding used from step {merge.merged_at + 1} of {req.num_steps}")
        return filter_nsfw(self.safety, images, req.disable_safety_checker, "photomaker")
