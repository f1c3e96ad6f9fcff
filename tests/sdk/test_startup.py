"""`cogkit --help` and `cogkit schema` must not import torch/diffusers/transformers."""

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "diffusers", "transformers", "numpy")

PROBE = """
import sys, io, contextlib
from cogkit.cli.main import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    try:
        code = main({argv!r})
    except SystemExit as e:
        code = e.code
assert code in (0, None), (code, buf.getvalue())
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})
print(",".join(heavy))
"""


def _heavy_modules(argv: list[str], cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=set(HEAVY))],
                         cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    assert _heavy_modules(["--help"], tmp_path) == ""


def test_schema_imports_nothing_heavy(conformance_dir: Path) -> None:
    assert _heavy_modules(["schema"], conformance_dir / "predictors" / "types_zoo") == ""


@pytest.mark.parametrize("model", ["flux", "sdxl", "llama", "photomaker"])
def test_model_schema_is_torch_free(model: str) -> None:
    folder = Path(__file__).resolve().parents[2] / "models" / model
    if not (folder / "cog.yaml").is_file():
        pytest.skip(f"models/{model} not present")
    assert _heavy_modules(["schema"], folder) == ""
