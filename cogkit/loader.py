"""Resolve a predictor reference (``predict.py:Predictor``) to the Python object it names."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cogkit.compat import install_cog_alias
from cogkit.exceptions import PredictorError


@dataclass(frozen=True)
class PredictorRef:
    """``file.py:Name`` split into its parts; ``name`` is None when the ref has no ``:Name``."""

    file: str
    name: str | None

    @classmethod
    def parse(cls, ref: str) -> PredictorRef:
        ref = ref.strip()
        if ".py:" in ref:
            file, _, name = ref.partition(".py:")
            if not file or not name or ":" in name:
                raise PredictorError(
                    f"invalid predictor reference {ref!r}: must be in the form 'predict.py:Predictor'"
                )
            return cls(file + ".py", name)
        if ref.endswith(".py"):
            return cls(ref, None)
        raise PredictorError(
            f"invalid predictor reference {ref!r}: must be in the form 'predict.py:Predictor'"
        )

    def __str__(self) -> str:
        return f"{self.file}:{self.name}" if self.name else self.file


def import_file(path: Path) -> ModuleType:
    """Import a predictor file as a top-level module named after it (as Cog does)."""
    if not path.is_file():
        raise PredictorError(f"predictor file {str(path)!r} does not exist")
    install_cog_alias()
    project_dir = str(path.parent.resolve())
    if project_dir not in sys.path:
        # Predictors import their sibling modules (``from helpers import x``).
        sys.path.insert(0, project_dir)
    module_name = path.stem
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PredictorError(f"cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_target(ref: str | PredictorRef, project_dir: str | os.PathLike[str] = ".") -> Any:
    """Import the file of ``ref`` and return the class or function it names."""
    pref = ref if isinstance(ref, PredictorRef) else PredictorRef.parse(ref)
    path = Path(project_dir) / pref.file
    module = import_file(path)
    if pref.name is not None:
        if not hasattr(module, pref.name):
            raise PredictorError(f"{pref.file} has no attribute {pref.name!r}")
        return getattr(module, pref.name)
    for default in ("Runner", "Predictor"):
        if hasattr(module, default):
            return getattr(module, default)
    raise PredictorError(f"{pref.file} defines neither a Runner nor a Predictor class")


def instantiate(target: Any) -> Any:
    """Classes are instantiated with no arguments; functions are used as they are."""
    if isinstance(target, type):
        return target()
    return target
