"""Where a LoRA comes from, and what it is: shared by the image models (SDXL, FLUX).

* ``resolve_lora_file(spec)``: a local file, tar or folder, an http(s) URL (a .safetensors
  file or a tar holding one, such as a trainer's ``trained_model.tar``; downloaded once into the weights cache, see
  cogkit.ml.weights), a Hugging Face repo (``owner/name``,
  ``huggingface.co/owner/name[/file.safetensors]``) -> one local ``.safetensors`` file.
  A folder holding several picks ``pytorch_lora_weights.safetensors`` or
  ``lora.safetensors``, else asks for a name.
* ``content_hash(file)``: sha256 of the file's bytes (memoised by path, size and mtime).
* ``adapter_name(file)``: the PEFT adapter name for a LoRA file, from its content, so
  the same LoRA reached through two URLs or paths is loaded once and a changed file
  under the same URL is loaded again.

Every error is a ``LoraError`` (an InputError) whose message starts with ``lora_weights:``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re

from cogkit.ml.errors import InputError

_HF_URL = re.compile(r"^(?:https?://)?(?:www\.)?huggingface\.co/([\w.-]+/[\w.-]+)(?:/(?!resolve/|blob/)(.+\.safetensors))?/?$")
_PREFERRED = ("pytorch_lora_weights.safetensors", "lora.safetensors")
_hashes: dict[tuple[str, int, int], str] = {}


class LoraError(InputError):
    """A LoRA that cannot be found or loaded; the message names the input."""


def _pick_file(folder: pathlib.Path, wanted: str | None = None) -> pathlib.Path:
    files = sorted(p for p in folder.rglob("*.safetensors") if p.is_file())
    if wanted:
        for p in files:
            if p.relative_to(folder).as_posix() == wanted or p.name == wanted:
                return p
        raise LoraError(f"lora_weights: {wanted!r} is not in {folder}")
    if len(files) == 1:
        return files[0]
    for name in _PREFERRED:
        for p in files:
            if p.name == name:
                return p
    if not files:
        raise LoraError(f"lora_weights: no .safetensors file in {folder}")
    names = ", ".join(p.relative_to(folder).as_posix() for p in files[:8])
    raise LoraError(f"lora_weights: {folder} holds several .safetensors files ({names}); name one of them")


def resolve_lora_file(spec: str) -> pathlib.Path:
    from cogkit.ml.weights import WeightsError, extract_local_tar, hf_snapshot, is_tar, resolve_weights

    spec = spec.strip()
    if not spec:
        raise LoraError("lora_weights: empty")
    try:
        hf = _HF_URL.match(spec)
        if hf:
            folder = hf_snapshot(hf.group(1), allow_patterns=["*.safetensors"])
            return _pick_file(folder, hf.group(2))
        path = resolve_weights(spec)
        if path.is_file() and is_tar(path.name):  # e.g. a trainer's trained_model.tar
            path = extract_local_tar(path)
    except WeightsError as exc:
        raise LoraError("lora_weights: " + str(exc).removeprefix("weights: ")) from None
    if path.is_dir():
        return _pick_file(path)
    if path.suffix != ".safetensors":
        raise LoraError(f"lora_weights: {path.name} is not a .safetensors file")
    return path


def content_hash(path: pathlib.Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(8 << 20), b""):
                h.update(block)
        _hashes[key] = h.hexdigest()
    return _hashes[key]


def adapter_name(path: pathlib.Path) -> str:
    return "lora_" + content_hash(path)[:16]


@dataclasses.dataclass(frozen=True)
class TrainedLora:
    """A trainer's trained_model.tar (cogkit.ml.lora_train) given as a model's weights."""

    file: pathlib.Path         # its lora.safetensors
    base: str | None           # the base weights it was trained on (a path or Hugging Face id)
    model: str                 # "flux", "sdxl"


def trained_lora(root: pathlib.Path, model: str) -> TrainedLora | None:
    """``root`` (resolved weights: a folder, or a local tar) as a trained LoRA of
    ``model``, or None when it is ordinary weights. Replicate's fine-tuning flow runs
    the trained version with the training's output as its weights, so a predictor
    handed one loads the base model and applies the LoRA by default."""
    import json

    import tarfile

    from cogkit.ml.weights import extract_local_tar

    if root.is_file() and tarfile.is_tarfile(root):  # stored files (the hub's) may have no .tar name
        root = extract_local_tar(root)
    config, lora = root / "config.json", root / "lora.safetensors"
    if not (root.is_dir() and config.is_file() and lora.is_file()) or (root / "model_index.json").exists():
        return None
    try:
        info = json.loads(config.read_text())
    except ValueError:
        return None
    if info.get("model") != model:
        raise LoraError(f"weights: {root} holds a LoRA trained for {info.get('model')!r}, not {model!r}")
    return TrainedLora(file=lora, base=info.get("base_weights"), model=model)
