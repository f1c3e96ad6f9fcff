"""``cogkit init``: scaffold cog.yaml, predict.py and .dockerignore in a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cogkit.exceptions import CogkitError

COG_YAML = """\
# Configuration for cogkit (and Cog): https://cog.run/yaml
build:
  # set to true if your model needs a GPU
  gpu: false
  python_version: "{python}"
  # python packages your model needs, one per line, in a requirements file
  # python_requirements: requirements.txt
  # system packages from apt
  # system_packages:
  #   - "libgl1"

# predict.py defines how predictions run on your model
run: "predict.py:Predictor"
"""

PREDICT_PY = '''\
# Prediction interface for cogkit (Cog-compatible): https://cog.run/python
from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def setup(self) -> None:
        """Load the model into memory once, so that predictions are fast."""
        # self.model = torch.load("./weights.pth")

    def predict(
        self,
        text: str = Input(description="Text to write into the output file"),
        repeat: int = Input(description="How many times to repeat it", default=1, ge=1, le=100),
    ) -> Path:
        """Run a single prediction on the model."""
        out = Path("/tmp/output.txt")
        out.write_text((text + "\\n") * repeat)
        return out
'''

DOCKERIGNORE = """\
# Files that should not be sent to the image build (as with .gitignore)
**/.git
**/__pycache__
**/*.pyc
**/.venv
**/.cog
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create cog.yaml, predict.py and .dockerignore")
    p.add_argument("directory", nargs="?", default=".", help="folder to scaffold (default: current)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    folder = Path(args.directory)
    folder.mkdir(parents=True, exist_ok=True)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    files = {"cog.yaml": COG_YAML.format(python=python), "predict.py": PREDICT_PY, ".dockerignore": DOCKERIGNORE}
    existing = [name for name in files if (folder / name).exists()]
    if existing and not args.force:
        raise CogkitError(f"{', '.join(existing)} already exist in {folder}; use --force to overwrite")
    for name, text in files.items():
        (folder / name).write_text(text)
        print(f"Wrote {folder / name}")
    print("\nTry it: cogkit predict -i text=hello")
    return 0
