"""Write a tiny random-weight FLUX checkpoint (a real diffusers folder, ~0.8 MB) to try
the FLUX predictor offline on a CPU in seconds.

    python models/flux/make_tiny_weights.py /tmp/tiny-flux            # schnell-like
    python models/flux/make_tiny_weights.py /tmp/tiny-flux-dev --variant dev
    cd models/flux && cogkit predict --weights /tmp/tiny-flux -i prompt="a cat" -o output.webp

The images are noise-like (the weights are random); everything else (tokenizers, text
encoders, transformer, VAE, schedulers, sizes, formats, go_fast) is the real code path.
The builder is cogkit.ml.tiny.flux (installed with cogkit; no test dependencies needed).
"""

from __future__ import annotations

import argparse
import os
import pathlib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (must not exist yet, or be empty)")
    parser.add_argument("--variant", choices=["schnell", "dev"], default="schnell")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    if out.exists() and any(out.iterdir()):
        if (out / "model_index.json").is_file():
            print(f"{out} already holds a checkpoint; keeping it")
            return 0
        parser.error(f"{out} exists and is not empty")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from cogkit.ml.tiny.flux import build_flux

    build_flux(out, variant=args.variant, seed=args.seed)
    print(f"wrote a tiny random FLUX.1-{args.variant} checkpoint to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
