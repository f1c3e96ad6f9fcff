"""Temp folders for output files that a predictor hands over to the runtime.

A file returned from a folder made by ``output_dir()`` belongs to cogkit once it is
returned: the server deletes it after encoding or uploading it, ``cogkit predict``
moves it into place, and the folder goes with its last file. Without this, every
prediction of a long-running server would leave its images behind in /tmp. Files
returned from anywhere else are never deleted (they may be the predictor's own).
"""

from __future__ import annotations

import os
import tempfile

PREFIX = "cogkit-out-"


def output_dir() -> str:
    """A new temp folder whose returned files the runtime cleans up."""
    return tempfile.mkdtemp(prefix=PREFIX)


def is_handed_over(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies directly in a folder made by ``output_dir()``."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    return os.path.basename(folder).startswith(PREFIX) and os.path.dirname(folder) == os.path.abspath(tempfile.gettempdir())
