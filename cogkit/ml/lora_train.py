"""The LoRA training loop shared by the image models' trainers (FLUX, SDXL).

A model trainer (``models/<name>/<name>_train.py``) subclasses ``LoraModel``: it
puts a PEFT LoRA on its denoiser, turns examples into cached tensors (VAE latents,
text embeddings: the frozen parts run once per image, not once per step) and
computes one batch's loss. ``train_lora()`` does the rest, the same for every model:

* batches of ``batch_size`` examples drawn from one aspect-ratio bucket at a time;
  captions dropped (replaced by the empty prompt) with probability ``caption_dropout``;
* AdamW (or bitsandbytes' 8-bit AdamW where it and a GPU exist), gradient clipping;
* a ``[progress] training: i/n loss=...`` line per step (a bar with the loss and ETA
  in ``cogkit train``, tqdm-style logs on the hub);
* ``save_every`` N steps: ``checkpoint-<step>.tar`` in the checkpoint folder
  (the LoRA, its config, the optimizer and random states); ``resume_from`` continues
  such a checkpoint exactly where it stopped (same seed ⇒ the same weights as an
  uninterrupted run);
* the result, ``trained_model.tar``: ``lora.safetensors`` in diffusers' key layout
  (what the model's ``lora_weights`` input loads) and ``config.json``.

Everything random comes from generators seeded by ``seed``, so two runs with the
same inputs give bit-identical LoRA weights on the CPU. Files are written to a temp
name and renamed, so a canceled or failed training leaves no half-written file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import random
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from cogkit import progress
from cogkit.handover import output_dir
from cogkit.ml.errors import InputError
from cogkit.ml.logs import log
from cogkit.ml.train_data import Example

OPTIMIZERS = ("adamw8bit", "adamw")
LORA_FILE = "lora.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "training_state.pt"
FORMAT = 1  # of the checkpoint's training_state.pt


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    steps: int
    learning_rate: float
    lora_rank: int
    batch_size: int = 1
    seed: int = 0
    caption_dropout: float = 0.05
    optimizer: str = "adamw8bit"
    save_every: int = 0                     # 0: no checkpoints
    resume_from: str | None = None          # a checkpoint-<step>.tar
    trigger_word: str = ""
    resolution: int = 1024
    checkpoint_dir: str | None = None       # default: $COGKIT_TRAIN_CHECKPOINTS or ./checkpoints

    def check(self) -> None:
        """The rules the schema cannot say (it already holds the bounds)."""
        if self.steps <= 0:
            raise InputError(f"steps: must be at least 1, got {self.steps}")
        if self.lora_rank <= 0:
            raise InputError(f"lora_rank: must be at least 1, got {self.lora_rank}")
        if self.batch_size <= 0:
            raise InputError(f"batch_size: must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise InputError(f"learning_rate: must be greater than 0, got {self.learning_rate}")
        if not 0 <= self.caption_dropout <= 1:
            raise InputError(f"caption_dropout: must be between 0 and 1, got {self.caption_dropout}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer: must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.save_every < 0:
            raise InputError(f"save_every: must be 0 (never) or more, got {self.save_every}")


class LoraModel:
    """What a model gives the loop (see the module docstring). The LoRA bookkeeping
    on the denoiser (add, read, restore, remove) is the same for every model and
    lives here; a model says which module is its denoiser and how to encode, score
    and save."""

    name = "model"
    target_modules: Sequence[str] = ()
    adapter = "cogkit_train"

    def __init__(self, pipe: Any, plan: Any, base_weights: str | None = None) -> None:
        self.pipe, self.plan = pipe, plan
        self.base_weights = base_weights  # recorded, so the trained tar can be run as weights alone

    @property
    def denoiser(self) -> Any:
        """The module that gets the LoRA (FLUX's transformer, SDXL's UNet)."""
        raise NotImplementedError

    def encode_prompt(self, text: str) -> Any:
        """A caption's embeddings, as ``loss`` takes them in ``prompts``."""
        raise NotImplementedError

    def encode_image(self, example: Example) -> dict[str, Any]:
        """An example's cached tensors (at least "latents")."""
        raise NotImplementedError

    def encode(self, examples: list[Example]) -> tuple[list[dict[str, Any]], Any]:
        """(one cached item per example, with its "prompt", the prompt item for an
        empty caption): the frozen parts run once, each distinct caption once."""
        prompts: dict[str, Any] = {}

        def prompt(text: str) -> Any:
            if text not in prompts:
                prompts[text] = self.encode_prompt(text)
            return prompts[text]

        with torch.no_grad():
            items = [{**self.encode_image(ex), "prompt": prompt(ex.caption)} for ex in examples]
            return items, prompt("")

    def loss(self, items: list[dict[str, Any]], prompts: list[Any], generator: torch.Generator) -> torch.Tensor:
        """The mean denoising loss of one batch; noise and timesteps from ``generator``."""
        raise NotImplementedError

    def save_lora(self, folder: pathlib.Path) -> None:
        """Write ``folder/lora.safetensors`` in diffusers' layout (the pipeline's
        save_lora_weights), which the predictor's ``lora_weights`` loads."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the trained_model.tar's config.json should say of the base model."""
        return {}

    def device(self) -> torch.device:
        return torch.device(self.plan.device)

    def pixels(self, img: Any, dtype: torch.dtype) -> torch.Tensor:
        """An RGB image as a [1, 3, H, W] tensor in [-1, 1], what VAEs encode."""
        import numpy as np

        arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
        return arr.permute(2, 0, 1).unsqueeze(0).to(device=self.device(), dtype=dtype)

    def add_lora(self, rank: int) -> list[torch.nn.Parameter]:
        """Put a LoRA of ``rank`` on the denoiser; return its trainable parameters."""
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        d = self.denoiser
        d.requires_grad_(False)
        d.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                 target_modules=list(self.target_modules)), adapter_name=self.adapter)
        d.set_adapter(self.adapter)
        cast_training_params(d, dtype=torch.float32)  # LoRA weights in fp32 over a bf16 base
        if self.plan.device == "cuda":
            d.enable_gradient_checkpointing()  # activations for 1024² do not fit otherwise
        d.train()
        return [p for p in d.parameters() if p.requires_grad]

    encoders = ("text_encoder", "text_encoder_2")

    def park_encoders(self, device: str) -> None:
        """Move the text encoders to ``device``: off the GPU while the denoiser trains
        (their embeddings are cached; T5-XXL alone holds 9.5 GB), back for the next
        training. Nothing to do on the CPU."""
        if self.plan.device != "cuda":
            return
        for name in self.encoders:
            module = getattr(self.pipe, name, None)
            if module is not None:
                module.to(device)
        torch.cuda.empty_cache()

    def remove_lora(self) -> None:
        """Take the LoRA off again (the next training in this process starts clean)."""
        d = self.denoiser
        if getattr(d, "is_gradient_checkpointing", False):
            d.disable_gradient_checkpointing()
        d.eval()
        if self.adapter in (getattr(d, "peft_config", None) or {}):
            d.delete_adapters(self.adapter)
        d.requires_grad_(False)

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The LoRA weights in PEFT's layout (module.lora_A.weight ...), on the CPU."""
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.denoiser, adapter_name=self.adapter)
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft.utils import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.denoiser, state, adapter_name=self.adapter)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise InputError(f"resume_from: the checkpoint holds LoRA layers this model does not have "
                             f"(e.g. {unexpected[0]})")


@dataclasses.dataclass
class TrainResult:
    archive: pathlib.Path
    losses: list[float]
    eval_before: float
    eval_after: float
    seconds: float
    step_seconds: list[float]  # wall time of each step run here (loss, backward, optimizer)


def _optimizer(params: list[torch.nn.Parameter], s: TrainSettings, device: torch.device) -> torch.optim.Optimizer:
    if s.optimizer == "adamw8bit":
        if device.type == "cuda":
            try:
                import bitsandbytes as bnb

                return bnb.optim.AdamW8bit(params, lr=s.learning_rate, weight_decay=1e-4)
            except ImportError:
                log("[train] optimizer: bitsandbytes is not installed; using AdamW")
        else:
            log("[train] optimizer: adamw8bit needs a GPU; using AdamW")
    return torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=1e-4)


class _Batches:
    """Which examples each step trains on: one bucket per batch (same image size),
    buckets drawn in proportion to their number of images."""

    def __init__(self, examples: list[Example], batch_size: int, dropout: float, seed: int) -> None:
        self.by_size: dict[tuple[int, int], list[int]] = {}
        for i, ex in enumerate(examples):
            self.by_size.setdefault(ex.size, []).append(i)
        self.sizes = sorted(self.by_size)
        self.weights = [len(self.by_size[s]) for s in self.sizes]
        self.batch_size, self.dropout = batch_size, dropout
        self.rng = random.Random(seed)

    def next(self) -> tuple[list[int], list[bool]]:
        """(example indexes, which of them lose their caption)."""
        size = self.rng.choices(self.sizes, weights=self.weights)[0]
        pool = self.by_size[size]
        if len(pool) >= self.batch_size:
            picked = self.rng.sample(pool, self.batch_size)
        else:
            picked = [self.rng.choice(pool) for _ in range(self.batch_size)]
        return picked, [self.rng.random() < self.dropout for _ in picked]


def _atomic_tar(dest: pathlib.Path, files: dict[str, bytes]) -> None:
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644  # mtime 0: the same bytes every run
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _lora_files(model: LoraModel, config: dict[str, Any]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="cogkit-lora-") as folder:
        model.save_lora(pathlib.Path(folder))
        lora = (pathlib.Path(folder) / LORA_FILE).read_bytes()
    return {LORA_FILE: lora, CONFIG_FILE: (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()}


def _read_checkpoint(spec: str) -> dict[str, Any]:
    path = pathlib.Path(spec)
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile(STATE_FILE)
            if member is None:
                raise KeyError(STATE_FILE)
            state = torch.load(io.BytesIO(member.read()), map_location="cpu", weights_only=True)
    except KeyError:
        raise InputError(f"resume_from: {path.name} is not a training checkpoint (no {STATE_FILE}); "
                         "use a checkpoint-<step>.tar written with save_every") from None
    except (tarfile.TarError, OSError, EOFError, RuntimeError) as exc:
        raise InputError(f"resume_from: cannot read {path.name}: {type(exc).__name__}: {exc}") from None
    if state.get("format") != FORMAT:
        raise InputError(f"resume_from: {path.name} was written by another version of the trainer")
    return state


def checkpoint_folder(s: TrainSettings) -> pathlib.Path:
    return pathlib.Path(s.checkpoint_dir or os.environ.get("COGKIT_TRAIN_CHECKPOINTS") or "checkpoints")


def train_lora(model: LoraModel, examples: list[Example], s: TrainSettings, config: dict[str, Any]) -> TrainResult:
    """Train, and write ``trained_model.tar`` into a handed-over output folder."""
    s.check()
    t0 = time.perf_counter()
    resume = _read_checkpoint(s.resume_from) if s.resume_from else None
    if resume is not None:
        ours = {"lora_rank": s.lora_rank, "seed": s.seed, "model": model.name}
        theirs = resume["settings"]
        mismatch = [f"{k}={theirs.get(k)!r}" for k in ours if theirs.get(k) != ours[k]]
        if mismatch:
            raise InputError(f"resume_from: the checkpoint was trained with other settings ({', '.join(mismatch)})")
    torch.manual_seed(s.seed)  # PEFT initialises lora_A from torch's global generator
    params = model.add_lora(s.lora_rank)
    try:
        log(f"[train] {model.name}: LoRA rank {s.lora_rank} on {sum(p.numel() for p in params):,} parameters; "
            f"{len(examples)} images, {s.steps} steps, batch {s.batch_size}, lr {s.learning_rate:g}")
        cached, empty = model.encode(examples)
        model.park_encoders("cpu")
        opt = _optimizer(params, s, model.device())
        batches = _Batches(examples, s.batch_size, s.caption_dropout, s.seed)
        gen = torch.Generator().manual_seed(s.seed)
        losses: list[float] = []
        start = 0
        if resume is not None:
            model.load_lora_state(resume["lora"])
            opt.load_state_dict(resume["optimizer"])
            gen.set_state(resume["generator"])
            batches.rng.setstate(_as_random_state(resume["batches"]))
            losses, start = list(resume["losses"]), int(resume["step"])
            log(f"[train] resumed from {pathlib.Path(s.resume_from or '').name} at step {start}")
            if start >= s.steps:
                raise InputError(f"steps: the checkpoint is already at step {start}; ask for more than {start} steps")

        # A fixed set (up to 8 images, a batch per bucket, fixed noise) judged before and
        # after: the training loss itself jumps with each step's noise and timesteps.
        judged: dict[tuple[int, int], list[int]] = {}
        for i in range(min(len(cached), 8)):
            judged.setdefault(examples[i].size, []).append(i)

        def judge() -> float:
            g = torch.Generator().manual_seed(s.seed + 1)
            total = 0.0
            with torch.no_grad():
                for idx in judged.values():
                    items = [cached[i] for i in idx]
                    total += float(model.loss(items, [it["prompt"] for it in items], g)) * len(idx)
            return total / sum(len(v) for v in judged.values())

        eval_before = judge() if resume is None else float(resume["eval_before"])
        ema = None
        step_seconds: list[float] = []
        for step in range(start, s.steps):
            t_step = time.perf_counter()
            idx, drop = batches.next()
            items = [cached[i] for i in idx]
            prompts = [empty if d else it["prompt"] for it, d in zip(items, drop)]
            loss = model.loss(items, prompts, gen)
            if not torch.isfinite(loss):
                raise RuntimeError(f"the loss is {float(loss)} at step {step + 1}: lower learning_rate (now {s.learning_rate:g})")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            value = float(loss.detach())  # waits for the GPU: the step's time is its own
            step_seconds.append(time.perf_counter() - t_step)
            losses.append(value)
            ema = value if ema is None else 0.9 * ema + 0.1 * value
            progress.report("training", step + 1, s.steps, detail=f"loss={ema:.4f}")
            done = step + 1
            if s.save_every and done % s.save_every == 0 and done < s.steps:
                folder = checkpoint_folder(s)
                folder.mkdir(parents=True, exist_ok=True)
                state = {
                    "format": FORMAT, "step": done, "lora": model.lora_state(), "optimizer": opt.state_dict(),
                    "generator": gen.get_state(), "batches": _random_state_tensor(batches.rng.getstate()),
                    "losses": losses, "eval_before": eval_before,
                    "settings": {**dataclasses.asdict(s), "model": model.name},
                }
                buf = io.BytesIO()
                torch.save(state, buf)
                dest = folder / f"checkpoint-{done}.tar"
                _atomic_tar(dest, {**_lora_files(model, {**config, "step": done}), STATE_FILE: buf.getvalue()})
                log(f"[train] checkpoint at step {done}: {dest.resolve()} (resume_from continues it)")
        eval_after = judge()
        log(f"[train] loss on a fixed batch: {eval_before:.4f} before, {eval_after:.4f} after "
            f"({time.perf_counter() - t0:.1f}s)")
        archive = pathlib.Path(output_dir()) / "trained_model.tar"
        _atomic_tar(archive, _lora_files(model, {**config, "step": s.steps, "eval_loss_before": round(eval_before, 6),
                                                 "eval_loss_after": round(eval_after, 6)}))
        return TrainResult(archive, losses, eval_before, eval_after, time.perf_counter() - t0, step_seconds)
    finally:
        model.remove_lora()
        model.park_encoders(model.plan.device)


def _random_state_tensor(state: tuple[Any, ...]) -> dict[str, Any]:
    """random.Random's state in types torch.load(weights_only=True) reads back."""
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _as_random_state(d: dict[str, Any]) -> tuple[Any, ...]:
    return d["version"], tuple(int(x) for x in d["internal"].tolist()), d["gauss"]


def fine_tune(
    load: Callable[[], LoraModel],
    *,
    input_images: Any,
    multiple: int,
    settings: TrainSettings,
    config: dict[str, Any],
) -> TrainResult:
    """What a model's ``train()`` does after reading its inputs: check the settings and
    the images (before any weights load), load the model, warn about the trigger
    word, train. ``load`` returns the model's LoraModel (cached by the caller)."""
    from cogkit.ml.train_data import check_trigger_word, load_images

    settings.check()
    examples = load_images(input_images, trigger_word=settings.trigger_word, resolution=settings.resolution,
                           multiple=multiple)
    model = load()
    check_trigger_word(settings.trigger_word, model.pipe.tokenizer)
    config = {
        "model": model.name, "trigger_word": settings.trigger_word, "lora_rank": settings.lora_rank,
        "lora_alpha": settings.lora_rank, "target_modules": list(model.target_modules),
        "learning_rate": settings.learning_rate, "batch_size": settings.batch_size,
        "resolution": settings.resolution, "seed": settings.seed, "caption_dropout": settings.caption_dropout,
        "images": len(examples), "base_weights": model.base_weights, **model.describe(), **config,
    }
    return train_lora(model, examples, settings, config)


def base_weights_source(default: str) -> str:
    """What a trainer was given as base weights (COG_WEIGHTS, else the model's default),
    local paths made absolute, as config.json records it."""
    source = os.environ.get("COG_WEIGHTS", "").strip() or default
    local = pathlib.Path(os.path.expanduser(source))
    return str(local.resolve()) if local.exists() else source


def training_plan() -> Any:
    """The device plan for training: the card's, but fp32 where it would be fp16
    (fp16 training needs loss scaling; bf16 cards keep bf16)."""
    from cogkit.ml.device import plan_device

    plan = plan_device()
    if plan.dtype == torch.float16:
        plan = dataclasses.replace(plan, dtype=torch.float32, reason=plan.reason + "; fp32 for training")
    return plan
