"""The FLUX trainer end to end through the command line, as a user runs it: `cogkit
train` on a zip writes weights.tar, `cogkit predict -i lora_weights=weights.tar` uses
it; Ctrl-C stops a training at the next step and leaves no half-written file; a bad
input is refused in Cog's words before setup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from cogkit.ml.tiny.photos import build_photo_archive
from tests.tiny_models import tiny_flux_schnell  # noqa: F401  (fixture)

FLUX_YAML = Path(__file__).resolve().parents[3] / "models" / "flux" / "cog.yaml"
TRAIN = ["-i", "steps=20", "-i", "resolution=64", "-i", "lora_rank=4", "-i", "learning_rate=0.01", "-i", "seed=1",
         "-i", "batch_size=2", "-i", "optimizer=adamw", "-i", "trigger_word=zxqvbn"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "COGKIT_TRAIN_CHECKPOINTS": str(tmp_path / "checkpoints"),
            "COGKIT_WEIGHTS_CACHE": str(tmp_path / "cache"), "COGKIT_FLUX_GO_FAST": "0"}


def cogkit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cogkit", *args, "-f", str(FLUX_YAML)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path))


def test_train_then_predict_with_the_lora(tiny_flux_schnell, tmp_path) -> None:
    photos = build_photo_archive(tmp_path / "photos.zip", 6)
    r = cogkit(tmp_path, "train", "--weights", str(tiny_flux_schnell), "-i", f"input_images=@{photos}", *TRAIN)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"weights": "weights.tar"}
    assert "Written output to: weights.tar" in r.stderr and "[train] loss on a fixed batch" in r.stderr
    with tarfile.open(tmp_path / "weights.tar") as tar:
        assert sorted(tar.getnames()) == ["config.json", "lora.safetensors"]

    def predict(out: str, *extra: str) -> np.ndarray:
        p = cogkit(tmp_path, "predict", "--weights", str(tiny_flux_schnell), "-i", "prompt=zxqvbn", "-i", "seed=5",
                   "-i", "megapixels=0.25", "-i", "go_fast=false", "-i", "output_format=png", "-o", out, *extra)
        assert p.returncode == 0, p.stderr
        stem, ext = out.split(".")
        return np.asarray(Image.open(tmp_path / f"{stem}.0.{ext}").convert("RGB"), dtype=np.int16)  # a list of one

    base = predict("base.png")
    # a str input: the predictor runs in the project folder (as in Cog's /src), so give the full path
    tuned = predict("tuned.png", "-i", f"lora_weights={tmp_path / 'weights.tar'}")
    assert np.abs(tuned - base).mean() > 0.5


def test_ctrl_c_stops_at_the_next_step_and_keeps_nothing_half_written(tiny_flux_schnell, tmp_path) -> None:
    photos = build_photo_archive(tmp_path / "photos.zip", 4)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cogkit", "train", "-f", str(FLUX_YAML), "--weights", str(tiny_flux_schnell),
         "-i", f"input_images=@{photos}", *[a.replace("steps=20", "steps=6000") for a in TRAIN], "-i", "save_every=1"],
        cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(tmp_path))
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("[progress] training: 3/"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Canceling the training" in err and 'training failed with status "canceled"' in err
    assert not (tmp_path / "weights.tar").exists()
    leftovers = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert leftovers and all(n.startswith("checkpoint-") and n.endswith(".tar") for n in leftovers), leftovers
    for name in leftovers:  # each one whole: a tar with its LoRA and training state
        with tarfile.open(tmp_path / "checkpoints" / name) as tar:
            assert {"lora.safetensors", "config.json", "training_state.pt"} <= set(tar.getnames())


def test_bad_input_is_refused_before_setup(tiny_flux_schnell, tmp_path) -> None:
    photos = build_photo_archive(tmp_path / "photos.zip", 2)
    r = cogkit(tmp_path, "train", "--weights", str(tiny_flux_schnell), "-i", f"input_images=@{photos}", "-i", "steps=0")
    assert r.returncode == 1
    assert 'invalid input "steps": must be greater than or equal to 1' in r.stderr
    assert "[train]" not in r.stderr  # the trainer never ran
    empty = tmp_path / "empty.zip"
    empty.write_bytes(b"")
    r = cogkit(tmp_path, "train", "--weights", str(tiny_flux_schnell), "-i", f"input_images=@{empty}", *TRAIN)
    assert r.returncode == 1 and "input_images: the archive is empty" in r.stderr
    assert "loaded from" not in r.stderr  # refused before the model loaded
