"""Shared test setup. Environment first: these must be set before torch or
huggingface_hub are imported anywhere in the test process."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a stray hub id must fail at once, not hang
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 threads on a busy 2-core box run tiny models 10-30x slower
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# The read-only reference kit beside the checkout (../shared); overridable, and found at
# /work/shared too when the checkout was cloned elsewhere (e.g. a clean clone in /tmp).
SHARED = Path(
    os.environ.get("COGKIT_SHARED_DIR")
    or next((str(p) for p in (REPO.parent / "shared", Path("/work/shared")) if p.is_dir()), REPO.parent / "shared")
)
CONFORMANCE = SHARED / "conformance" / "cog-0.23.1"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"conformance kit not found at {CONFORMANCE} (set COGKIT_SHARED_DIR)")
    return CONFORMANCE
