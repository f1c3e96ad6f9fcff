"""PhotoMaker: identity-preserving SDXL generation from 1-4 photos of a person, without
fine-tuning; the inputs and defaults of TencentARC's tencentarc/photomaker plus output
format/quality. Heavy imports happen in setup(), so `cogkit schema` stays torch-free."""

from __future__ import annotations

from cogkit import BasePredictor, Input, Path

from photomaker_styles import DEFAULT_NEGATIVE, DEFAULT_PROMPT, DEFAULT_STYLE, STYLE_NAMES  # torch-free


class Predictor(BasePredictor):
    def setup(self, weights: str | None = None) -> None:
        from photomaker_engine import PhotoMakerEngine  # torch/diffusers load here, not at import

        self.engine = PhotoMakerEngine.from_weights(weights)

    def predict(
        self,
        input_image: Path = Input(description="The input image, for example a photo of your face."),
        input_image2: Path = Input(description="Additional input image (optional)", default=None),
        input_image3: Path = Input(description="Additional input image (optional)", default=None),
        input_image4: Path = Input(description="Additional input image (optional)", default=None),
        prompt: str = Input(
            description="Prompt. Example: 'a photo of a man/woman img'. The phrase 'img' is the trigger word: "
            "it must come once, right after the class word (man, woman, person, ...)",
            default=DEFAULT_PROMPT,
        ),
        style_name: str = Input(
            description="Style template. The style template will add a style-specific prompt and negative prompt "
            "to the user's prompt.",
            choices=STYLE_NAMES, default=DEFAULT_STYLE,
        ),
        negative_prompt: str = Input(
            description="Negative Prompt. The negative prompt should NOT contain the trigger word.", default=DEFAULT_NEGATIVE
        ),
        num_steps: int = Input(description="Number of sample steps (20-30 recommended)", default=20, ge=1, le=100),
        style_strength_ratio: float = Input(
            description="Style strength (%): the share of the steps run on the text-only prompt before the ID "
            "images are merged in (higher = more style, less likeness; 30-50 for stylisation)",
            default=20, ge=15, le=50,
        ),
        num_outputs: int = Input(description="Number of output images", default=1, ge=1, le=4),
        guidance_scale: float = Input(
            description="Guidance scale. A guidance scale of 1 corresponds to doing no classifier free guidance.",
            default=5, ge=1, le=10,
        ),
        seed: int = Input(description="Seed. Leave blank to use a random number", default=None, ge=0, le=2**32 - 1),
        disable_safety_checker: bool = Input(description="Disable safety checker for generated images.", default=False),
        output_format: str = Input(description="Format of the output images", default="png", choices=["webp", "jpg", "png"]),
        output_quality: int = Input(
            description="Quality when saving jpg/webp outputs, 0-100 (ignored for png)", default=80, ge=0, le=100
        ),
    ) -> list[Path]:
        from cogkit.ml.outputs import save_images
        from cogkit.ml.seeds import resolve_seed
        from photomaker_engine import IMAGE_FIELDS, Request

        given = [(f, p) for f, p in zip(IMAGE_FIELDS, (input_image, input_image2, input_image3, input_image4)) if p]
        request = Request(
            images=[str(p) for _, p in given], fields=[f for f, _ in given], prompt=prompt,
            negative_prompt=negative_prompt, style_name=style_name, style_strength_ratio=style_strength_ratio,
            num_steps=num_steps, guidance_scale=guidance_scale, num_outputs=num_outputs, seed=resolve_seed(seed),
            disable_safety_checker=disable_safety_checker,
        )
        images = self.engine.run(request)
        return save_images(images, output_format, output_quality)
