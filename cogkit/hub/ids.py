"""Ids, capability keys and timestamps in Replicate's shapes."""

from __future__ import annotations

import base64
import os
import secrets
import time
from datetime import datetime, timezone


def new_id() -> str:
    """26 lowercase base32 characters, like Replicate's prediction ids."""
    return base64.b32encode(os.urandom(16)).decode().lower().rstrip("=")[:26]


def new_key() -> str:
    return secrets.token_urlsafe(32)


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
