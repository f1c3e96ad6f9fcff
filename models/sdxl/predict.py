"""SDXL predictor: the inputs of Replicate's stability-ai/sdxl plus outpainting,
ControlNet, fast modes and output formats. Heavy imports happen in setup()."""

from __future__ import annotations

from cogkit import BasePredictor, Input, Path
from cogkit.ml.schedulers import SCHEDULER_NAMES  # torch-free


class Predictor(BasePredictor):
    def setup(self, weights: str | None = None) -> None:
        from sdxl_engine import SDXLEngine  # torch/diffusers load here, not at import

        self.engine = SDXLEngine(weights)

    def predict(
        self,
        prompt: str = Input(description="Input prompt", default="An astronaut riding a rainbow unicorn"),
        negative_prompt: str = Input(description="Input negative prompt", default=""),
        image: Path = Input(description="Input image for img2img or inpaint mode", default=None),
        mask: Path = Input(
            description="Input mask for inpaint mode. Black areas will be preserved, white areas will be inpainted.",
            default=None,
        ),
        width: int = Input(
            description="Width of output image, a multiple of 8 (default 1024; 512 for SDXL-Turbo)",
            default=None, ge=64, le=2048,
        ),
        height: int = Input(
            description="Height of output image, a multiple of 8 (default 1024; 512 for SDXL-Turbo)",
            default=None, ge=64, le=2048,
        ),
        num_outputs: int = Input(description="Number of images to output.", default=1, ge=1, le=4),
        scheduler: str = Input(description="scheduler", default="K_EULER", choices=SCHEDULER_NAMES),
        num_inference_steps: int = Input(
            description="Number of denoising steps (default 30; LCM 6, Turbo 1, Lightning 4)",
            default=None, ge=1, le=500,
        ),
        guidance_scale: float = Input(
            description="Scale for classifier-free guidance (default 7.5; LCM 1.5, Turbo/Lightning 0)",
            default=None, ge=0, le=50,
        ),
        prompt_strength: float = Input(
            description="Prompt strength when using img2img / inpaint. 1.0 corresponds to full destruction of information in image",
            default=0.8, ge=0, le=1,
        ),
        seed: int = Input(description="Random seed. Leave blank to randomize the seed", default=None, ge=0, le=2**32 - 1),
        refine: str = Input(
            description="Which refine style to use",
            default="no_refiner", choices=["no_refiner", "expert_ensemble_refiner", "base_image_refiner"],
        ),
        high_noise_frac: float = Input(
            description="For expert_ensemble_refiner, the fraction of noise to use", default=0.8, ge=0, le=1
        ),
        refine_steps: int = Input(
            description="For base_image_refiner, the number of steps to refine, defaults to num_inference_steps",
            default=None, ge=1, le=500,
        ),
        apply_watermark: bool = Input(
            description="Applies a watermark to enable determining if an image is generated in downstream applications.",
            default=True,
        ),
        lora_scale: float = Input(
            description="LoRA additive scale. Only applicable on trained models.", default=0.6, ge=0, le=1
        ),
        lora_weights: str = Input(
            description="LoRA weights: a local path, an http(s) URL to a .safetensors file (or a tar holding one), "
                        "or a Hugging Face repo ('owner/name' or 'huggingface.co/owner/name[/file.safetensors]')",
            default=None,
        ),
        disable_safety_checker: bool = Input(
            description="Disable safety checker for generated images.", default=False
        ),
        outpaint: str = Input(
            description="Outpaint `image`: pixels to add per side ('left=256,right=256', 'up=128') or a target aspect ratio ('16:9')",
            default=None,
        ),
        controlnet_image: Path = Input(
            description="Image whose structure guides generation through a ControlNet", default=None
        ),
        controlnet_type: str = Input(
            description="ControlNet kind: canny edges or a depth map computed from controlnet_image",
            default="canny", choices=["canny", "depth"],
        ),
        controlnet_preprocess: bool = Input(
            description="Compute the edges/depth map from controlnet_image (false: it already is one)", default=True
        ),
        controlnet_conditioning_scale: float = Input(
            description="How strongly the ControlNet steers the image", default=0.75, ge=0, le=4
        ),
        controlnet_start: float = Input(
            description="Fraction of the steps at which the ControlNet starts applying", default=0.0, ge=0, le=1
        ),
        controlnet_end: float = Input(
            description="Fraction of the steps at which the ControlNet stops applying", default=1.0, ge=0, le=1
        ),
        fast_mode: str = Input(
            description="Few-step mode: auto (from the loaded weights), off, lcm (LCM-LoRA), turbo (SDXL-Turbo weights), lightning (SDXL-Lightning weights)",
            default="auto", choices=["auto", "off", "lcm", "turbo", "lightning"],
        ),
        sizing_strategy: str = Input(
            description="With an input image: input_image keeps its aspect ratio (scaled to about 1 MP); width_height resizes it to exactly width x height",
            default="input_image", choices=["input_image", "width_height"],
        ),
        output_format: str = Input(
            description="Format of the output images", default="webp", choices=["webp", "jpg", "png"]
        ),
        output_quality: int = Input(
            description="Quality when saving jpg/webp outputs, 0-100 (ignored for png)", default=80, ge=0, le=100
        ),
    ) -> list[Path]:
        from cogkit.ml.outputs import save_images
        from cogkit.ml.seeds import resolve_seed
        from sdxl_engine import Request

        request = Request(
            prompt=prompt, negative_prompt=negative_prompt,
            image=str(image) if image else None, mask=str(mask) if mask else None,
            width=width, height=height, num_outputs=num_outputs, scheduler=scheduler,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            prompt_strength=prompt_strength, seed=resolve_seed(seed), refine=refine,
            high_noise_frac=high_noise_frac, refine_steps=refine_steps, apply_watermark=apply_watermark,
            lora_scale=lora_scale, lora_weights=lora_weights, disable_safety_checker=disable_safety_checker,
            outpaint=outpaint, controlnet_image=str(controlnet_image) if controlnet_image else None,
            controlnet_type=controlnet_type, controlnet_preprocess=controlnet_preprocess,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
            controlnet_start=controlnet_start, controlnet_end=controlnet_end,
            fast_mode=fast_mode, sizing_strategy=sizing_strategy,
        )
        images = self.engine.run(request)
        return save_images(images, output_format, output_quality)
