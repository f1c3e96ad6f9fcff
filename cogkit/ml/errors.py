"""The error a model predictor raises for a request it cannot run.

One class for every engine (SDXL, FLUX, PhotoMaker) and the shared helpers that
check requests for them (e.g. cogkit.ml.safety), so callers catch one type.
"""

from __future__ import annotations


class InputError(ValueError):
    """A request the model cannot run; the message names the input and the rule."""
