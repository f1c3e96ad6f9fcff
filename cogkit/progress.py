"""One line format for progress of long work (denoising steps, downloads, tokens).

Model code prints these lines to stderr; they land in the prediction's logs
(server), and ``cogkit predict`` recognises them and draws a progress bar instead.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

# An optional detail after the count (``loss=0.0412``) is shown beside the bar.
_LINE = re.compile(r"^\[progress\] (?P<label>[^:]+): (?P<done>\d+)/(?P<total>\d+)(?:[ \t]+(?P<detail>\S[^\n]*?))?\s*$")


def format_progress(label: str, done: int, total: int, detail: str = "") -> str:
    return f"[progress] {label}: {done}/{total}" + (f" {detail}" if detail else "")


def parse_progress(line: str) -> tuple[str, int, int] | None:
    """(label, done, total) for a progress line, else None."""
    m = _LINE.match(line.strip())
    if not m:
        return None
    return m["label"], int(m["done"]), int(m["total"])


def progress_detail(line: str) -> str:
    """The detail a progress line carries after its count (``loss=0.0412``), or ""."""
    m = _LINE.match(line.strip())
    return (m["detail"] or "") if m else ""


def report(label: str, done: int, total: int, stream: TextIO | None = None, detail: str = "") -> None:
    out = stream or sys.stderr
    out.write(format_progress(label, done, total, detail) + "\n")
    out.flush()
