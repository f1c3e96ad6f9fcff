"""The 11 style templates and the default prompts of TencentARC's PhotoMaker demo (torch-free).

Each style is a (positive, negative) pair: the positive wraps the user's prompt at
``{prompt}``; the user's negative prompt is appended after the style's negative,
separated by a space. "(No style)" passes both through. The default style comes
first in ``STYLE_NAMES`` (the input's choices), the rest in the reference's order.
"""

from __future__ import annotations

DEFAULT_STYLE = "Photographic (Default)"
DEFAULT_PROMPT = "A photo of a person img"
DEFAULT_NEGATIVE = (
    "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry"
)

# name -> (positive template, negative prompt); strings exactly as the reference has them
STYLES: dict[str, tuple[str, str]] = {
    "(No style)": ("{prompt}", ""),
    "Cinematic": (
        "cinematic still {prompt} . emotional, harmonious, vignette, highly detailed, high budget, bokeh, "
        "cinemascope, moody, epic, gorgeous, film grain, grainy",
        "anime, cartoon, graphic, text, painting, crayon, graphite, abstract, glitch, deformed, mutated, ugly, "
        "disfigured",
    ),
    "Disney Charactor": (
        "A Pixar animation character of {prompt} . pixar-style, studio anime, Disney, high-quality",
        "lowres, bad anatomy, bad hands, text, bad eyes, bad arms, bad legs, error, missing fingers, extra digit, "
        "fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, "
        "blurry, grayscale, noisy, sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    "Digital Art": (
        "concept art {prompt} . digital artwork, illustrative, painterly, matte painting, highly detailed",
        "photo, photorealistic, realism, ugly",
    ),
    "Photographic (Default)": (
        "cinematic photo {prompt} . 35mm photograph, film, bokeh, professional, 4k, highly detailed",
        "drawing, painting, crayon, sketch, graphite, impressionist, noisy, blurry, soft, deformed, ugly",
    ),
    "Fantasy art": (
        "ethereal fantasy concept art of  {prompt} . magnificent, celestial, ethereal, painterly, epic, majestic, "
        "magical, fantasy art, cover art, dreamy",
        "photographic, realistic, realism, 35mm film, dslr, cropped, frame, text, deformed, glitch, noise, noisy, "
        "off-center, deformed, cross-eyed, closed eyes, bad anatomy, ugly, disfigured, sloppy, duplicate, mutated, "
        "black and white",
    ),
    "Neonpunk": (
        "neonpunk style {prompt} . cyberpunk, vaporwave, neon, vibes, vibrant, stunningly beautiful, crisp, "
        "detailed, sleek, ultramodern, magenta highlights, dark purple shadows, high contrast, cinematic, "
        "ultra detailed, intricate, professional",
        "painting, drawing, illustration, glitch, deformed, mutated, cross-eyed, ugly, disfigured",
    ),
    "Enhance": (
        "breathtaking {prompt} . award-winning, professional, highly detailed",
        "ugly, deformed, noisy, blurry, distorted, grainy",
    ),
    "Comic book": (
        "comic {prompt} . graphic illustration, comic art, graphic novel art, vibrant, highly detailed",
        "photograph, deformed, glitch, noisy, realistic, stock photo",
    ),
    "Lowpoly": (
        "low-poly style {prompt} . low-poly game art, polygon mesh, jagged, blocky, wireframe edges, "
        "centered composition",
        "noisy, sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    "Line art": (
        "line art drawing {prompt} . professional, sleek, modern, minimalist, graphic, line art, vector graphics",
        "anime, photorealistic, 35mm film, deformed, glitch, blurry, noisy, off-center, deformed, cross-eyed, "
        "closed eyes, bad anatomy, ugly, disfigured, mutated, realism, realistic, impressionism, expressionism, "
        "oil, acrylic",
    ),
}

STYLE_NAMES: list[str] = [DEFAULT_STYLE] + [name for name in STYLES if name != DEFAULT_STYLE]


def apply_style(style_name: str, prompt: str, negative_prompt: str = "") -> tuple[str, str]:
    """(styled prompt, styled negative prompt)."""
    try:
        positive, negative = STYLES[style_name]
    except KeyError:
        raise ValueError(f"style_name: unknown style {style_name!r}; choose one of {', '.join(STYLE_NAMES)}") from None
    return positive.replace("{prompt}", prompt), f"{negative} {negative_prompt}"
