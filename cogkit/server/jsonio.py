"""JSON encoding for responses and webhooks (one place, so the encoder can be swapped)."""

from __future__ import annotations

import json
from typing import Any

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> bytes:
    return _encoder.encode(value).encode("utf-8")


def loads(data: bytes | str) -> Any:
    return json.loads(data)
