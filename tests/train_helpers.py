"""Helpers for the LoRA trainer tests (models/flux, models/sdxl): load a model's train.py
under a name of its own (both folders hold a train.py), read what a trained_model.tar
holds, and run a short training with test-sized defaults."""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any


def load_train_module(model_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{model_dir.name}_train_entry", model_dir / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # BaseModel (a dataclass) looks its module up there
    spec.loader.exec_module(module)
    return module


def member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def config(archive: Path) -> dict[str, Any]:
    return json.loads(member(archive, "config.json"))


SHORT = dict(trigger_word="zxqvbn", steps=20, lora_rank=4, learning_rate=1e-2, batch_size=2, resolution=64,
             seed=1, caption_dropout=0.1, optimizer="adamw", save_every=0, resume_from=None)


def short_training(module: ModuleType, images: Path, **overrides: Any) -> Path:
    """trained_model.tar of a 20-step training on ``images`` (the test defaults above)."""
    return Path(module.train(input_images=images, **{**SHORT, **overrides}).weights)
