"""Environment switches of the model predictors, read one way everywhere.

* ``env_flag(name, default=None)``: 1/true/yes/on -> True, 0/false/no/off -> False
  (any case, surrounding blanks ignored); unset or empty -> ``default``; anything
  else is a ValueError naming the variable (a typo must not silently mean "off").
* ``env_int(name, default=None)``: an integer; unset or empty -> ``default``.

Torch-free, so predict.py files may import it at the top.
"""

from __future__ import annotations

import os

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_flag(name: str, default: bool | None = None) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}: expected 1/true/yes/on or 0/false/no/off, got {value!r}")


def env_int(name: str, default: int | None = None) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}: must be an integer, got {raw!r}") from None
