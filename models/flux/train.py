"""FLUX.1 LoRA trainer: a zip of photos and a trigger word in, a LoRA out.

Inputs follow the ostris flux-dev-lora-trainer on Replicate (same names and
defaults where they exist). The result, ``trained_model.tar``, goes straight into
this model's ``lora_weights`` input (a local path, a URL, or the hub's file URL);
prompts then name the trigger word.

Everything about the images and the settings is checked before the base model
loads, so a bad archive fails in a second, not after a minute of loading. The
base weights are the predictor's: COG_WEIGHTS (``cogkit train --weights``) or
FLUX.1-schnell's default; they stay loaded between trainings of one server.
"""

from __future__ import annotations

from cogkit import BaseModel, Input, Path


class TrainingOutput(BaseModel):
    weights: Path


_loaded: dict[str, object] = {}


def _load() -> object:
    """The FluxLora for the base weights, loaded once per process."""
    import os
    import time

    import torch
    from flux_engine import DEFAULT_WEIGHTS, HUB_PATTERNS, VARIANTS, detect_variant, load_pipeline
    from flux_train import FluxLora

    from cogkit.ml.logs import log
    from cogkit.ml.lora_train import base_weights_source, training_plan
    from cogkit.ml.progress import quiet_libraries
    from cogkit.ml.weights import resolve_weights

    root = resolve_weights(os.environ.get("COG_WEIGHTS"), default=DEFAULT_WEIGHTS, allow_patterns=HUB_PATTERNS)
    if str(root) not in _loaded:
        quiet_libraries()
        _loaded.clear()  # one base model in memory at a time
        plan = training_plan()
        t0 = time.perf_counter()
        pipe = load_pipeline(root, plan)
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
        variant = VARIANTS[detect_variant(dict(pipe.transformer.config))]
        log(f"[flux] {variant.title} loaded from {root} in {time.perf_counter() - t0:.2f}s ({plan.summary()})")
        _loaded[str(root)] = FluxLora(pipe, plan, variant, base_weights_source(DEFAULT_WEIGHTS))
    return _loaded[str(root)]


def train(
    input_images: Path = Input(
        description="A zip or tar of the training images (JPEG, PNG or WEBP; 10-20 are typical). A .txt file "
                    "with the same name as an image is its caption; otherwise the caption is 'a photo of "
                    "TRIGGER'."),
    trigger_word: str = Input(
        description="The word that calls up what the LoRA learned: put it in your prompts. Pick a word the "
                    "model does not know yet.",
        default="TOK"),
    steps: int = Input(description="Number of training steps (500-4000 are typical)", default=1000, ge=1, le=6000),
    lora_rank: int = Input(
        description="Rank of the LoRA: higher learns more detail, in a bigger file (16 is typical; 32 for "
                    "complex subjects)", default=16, ge=1, le=128),
    learning_rate: float = Input(description="Learning rate", default=4e-4, ge=1e-7, le=1e-2),
    batch_size: int = Input(description="Images per training step", default=1, ge=1, le=8),
    resolution: int = Input(
        description="Training resolution: each image is scaled to about this many pixels squared, its aspect "
                    "ratio kept (sides a multiple of 16)", default=1024, ge=64, le=2048),
    seed: int = Input(description="Random seed; the same seed and inputs give the same LoRA", default=None),
    caption_dropout: float = Input(
        description="Chance that a step sees an image without its caption (helps the LoRA generalise)",
        default=0.05, ge=0, le=1),
    optimizer: str = Input(
        description="adamw8bit (bitsandbytes, on a GPU; falls back to adamw elsewhere) or adamw",
        default="adamw8bit", choices=["adamw8bit", "adamw"]),
    save_every: int = Input(
        description="Write a checkpoint every N steps into ./checkpoints (0: none); resume_from continues one",
        default=0, ge=0),
    resume_from: Path = Input(description="A checkpoint-<step>.tar to continue from", default=None),
) -> TrainingOutput:
    from cogkit.ml.lora_train import TrainSettings, fine_tune
    from cogkit.ml.seeds import resolve_seed

    settings = TrainSettings(
        steps=steps, learning_rate=learning_rate, lora_rank=lora_rank, batch_size=batch_size,
        seed=resolve_seed(None if seed is None or seed < 0 else seed), caption_dropout=caption_dropout,
        optimizer=optimizer, save_every=save_every, resume_from=str(resume_from) if resume_from else None,
        trigger_word=trigger_word.strip(), resolution=resolution,
    )
    result = fine_tune(_load, input_images=input_images, multiple=16, settings=settings, config={})
    return TrainingOutput(weights=Path(result.archive))
