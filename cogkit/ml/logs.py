"""The one place ML helpers write their log lines.

Lines go to stderr (flushed), which the worker captures into the prediction's or
setup's logs; ``cogkit predict`` shows them as they come.
"""

from __future__ import annotations

import sys


def log(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
