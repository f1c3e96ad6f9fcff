"""Denoising progress as cogkit progress lines (``[progress] denoising: 3/30``).

``DenoiseProgress`` is a diffusers ``callback_on_step_end``: it prints one line
per step to stderr, which ``cogkit predict`` draws as a progress bar and the
server keeps in the prediction's logs.
"""

from __future__ import annotations

from typing import Any, TextIO

from cogkit import progress as _lines


class DenoiseProgress:
    """Callback for ``pipe(..., callback_on_step_end=DenoiseProgress())``.

    The total comes from the pipeline's own count of timesteps for this call
    (img2img and refiner hand-offs run fewer than ``num_inference_steps``),
    unless ``total`` is given.
    """

    def __init__(self, label: str = "denoising", total: int | None = None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.steps = 0

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        total = self.total or int(getattr(pipe, "num_timesteps", 0) or 0) or step + 1
        self.steps = step + 1
        _lines.report(self.label, min(step + 1, total), total, self.stream)
        return callback_kwargs


def quiet_pipeline(pipe: Any) -> Any:
    """Turn off diffusers' own tqdm bar (the progress lines replace it)."""
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def quiet_libraries() -> None:
    """Turn off the loading bars diffusers/transformers draw while reading weights
    (they would fill setup logs with carriage-return noise)."""
    try:
        import diffusers.utils.logging as dlog

        dlog.disable_progress_bar()
    except ImportError:
        pass
    try:
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
    except ImportError:
        pass
