"""README.md's "Fine-tuning FLUX and SDXL" example runs as written (in a temp folder that
links the repository's models/ in): it trains a LoRA on tiny FLUX and predicts with it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_training_example(tmp_path: Path) -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## Fine-tuning FLUX and SDXL", 1)[1].split("\n## ", 1)[0]
    script = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("/tmp/tiny-flux", str(tmp_path / "tiny"))
    (tmp_path / "models").symlink_to(REPO / "models")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", COGKIT_FLUX_GO_FAST="0",
               COGKIT_WEIGHTS_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(["bash", "-c", "set -e\n" + script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with tarfile.open(tmp_path / "weights.tar") as tar:
        assert sorted(tar.getnames()) == ["config.json", "lora.safetensors"]
    assert (tmp_path / "tuned.0.webp").read_bytes()[8:12] == b"WEBP"
    assert "LoRA x 1" in proc.stderr  # the prediction ran with the LoRA
