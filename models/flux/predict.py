"""FLUX.1 predictor (schnell or dev, from the weights): txt2img, img2img, inpaint,
aspect-ratio presets and megapixels, go_fast (fp8 + torch.compile), LoRA.

Inputs follow Replicate's black-forest-labs/flux-schnell / flux-dev (same names,
order and defaults), plus inpainting for both variants and custom sizes.
Heavy imports (torch, diffusers) happen in setup(), so `cogkit schema` stays fast.
"""

from __future__ import annotations

from cogkit import BasePredictor, Input, Path

from flux_sizes import ASPECT_RATIO_CHOICES, CUSTOM_MAX, CUSTOM_MIN, MEGAPIXELS_CHOICES  # torch-free


class Predictor(BasePredictor):
    def setup(self, weights: str | None = None) -> None:
        from flux_engine import FluxEngine  # torch/diffusers load here, not at import

        self.engine = FluxEngine(weights)

    def predict(
        self,
        prompt: str = Input(description="Prompt for generated image"),
        aspect_ratio: str = Input(
            description="Aspect ratio for the generated image ('custom' uses width and height). "
                        "Ignored when an input image is given: the output keeps its aspect ratio.",
            default="1:1", choices=ASPECT_RATIO_CHOICES,
        ),
        width: int = Input(
            description="Width of the generated image when aspect_ratio is 'custom' (rounded up to a multiple of 16)",
            default=None, ge=CUSTOM_MIN, le=CUSTOM_MAX,
        ),
        height: int = Input(
            description="Height of the generated image when aspect_ratio is 'custom' (rounded up to a multiple of 16)",
            default=None, ge=CUSTOM_MIN, le=CUSTOM_MAX,
        ),
        image: Path = Input(
            description="Input image for image-to-image or inpainting mode. The output has its aspect ratio.",
            default=None,
        ),
        prompt_strength: float = Input(
            description="Prompt strength when using an input image. 1.0 corresponds to full destruction of "
                        "information in the image",
            default=0.8, ge=0, le=1,
        ),
        mask: Path = Input(
            description="Mask for inpainting `image`: white areas are repainted, black areas are kept",
            default=None,
        ),
        num_outputs: int = Input(description="Number of outputs to generate", default=1, ge=1, le=4),
        num_inference_steps: int = Input(
            description="Number of denoising steps (default: 4 for FLUX.1-schnell, which takes at most 4; "
                        "28 for FLUX.1-dev, 28-50 recommended)",
            default=None, ge=1, le=50,
        ),
        guidance: float = Input(
            description="Guidance for the generated image (FLUX.1-dev; default 3.5). FLUX.1-schnell has no "
                        "guidance and ignores it",
            default=None, ge=0, le=10,
        ),
        seed: int = Input(description="Random seed. Set for reproducible generation", default=None),
        output_format: str = Input(
            description="Format of the output images", default="webp", choices=["webp", "jpg", "png"]
        ),
        output_quality: int = Input(
            description="Quality when saving the output images, from 0 to 100. 100 is best quality, 0 is lowest "
                        "quality. Not relevant for .png outputs",
            default=80, ge=0, le=100,
        ),
        disable_safety_checker: bool = Input(description="Disable safety checker for generated images.", default=False),
        go_fast: bool = Input(
            description="Run faster predictions with a model optimized for speed (fp8 weights and torch.compile). "
                        "The images then differ slightly from go_fast=false, which is the exact bf16 model.",
            default=True,
        ),
        lora_weights: str = Input(
            description="LoRA weights: a local path, an http(s) URL to a .safetensors file (or a tar holding one), "
                        "or a Hugging Face repo ('owner/name' or 'huggingface.co/owner/name[/file.safetensors]')",
            default=None,
        ),
        lora_scale: float = Input(
            description="How strongly the LoRA is applied", default=1.0, ge=-1, le=3,
        ),
        megapixels: str = Input(
            description="Approximate number of megapixels for the generated image ('match_input': the input "
                        "image's own size, fitted into 1440x1440)",
            default="1", choices=MEGAPIXELS_CHOICES,
        ),
    ) -> list[Path]:
        from flux_engine import Request

        if seed is not None and seed < 0:
            seed = None  # Replicate's convention: a negative seed means "pick one"
        return self.engine.predict(Request(
            prompt=prompt, aspect_ratio=aspect_ratio, width=width, height=height,
            image=str(image) if image is not None else None, prompt_strength=prompt_strength,
            mask=str(mask) if mask is not None else None, num_outputs=num_outputs,
            num_inference_steps=num_inference_steps, guidance=guidance, seed=seed,
            output_format=output_format, output_quality=output_quality,
            disable_safety_checker=disable_safety_checker, go_fast=go_fast,
            lora_weights=lora_weights, lora_scale=lora_scale, megapixels=megapixels,
        ))
