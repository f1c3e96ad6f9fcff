"""Model versions from project folders: a content-addressed id (the project's files and
its schema) and the OpenAPI document ``cogkit schema`` prints, computed in a child
process so the hub never imports user code."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cogkit.exceptions import ConfigError

_SKIP_DIRS = {".git", "__pycache__", ".cog", ".venv", "node_modules"}
_BIG = 1 << 20  # files above this are identified by size and mtime, not read


def project_digest(project_dir: str) -> str:
    h = hashlib.sha256()
    root = Path(project_dir)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            rel = p.relative_to(root).as_posix()
            st = p.stat()
            h.update(rel.encode() + b"\0")
            if st.st_size > _BIG:
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            else:
                h.update(p.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def project_schema(project_dir: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "cogkit", "schema"], cwd=project_dir, capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        raise ConfigError(f"cannot read the schema of {project_dir}: {proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads(proc.stdout)


def version_id(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
