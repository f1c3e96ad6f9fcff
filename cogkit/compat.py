"""``import cog`` for predictors written against Cog, when the real ``cog`` is absent.

An import hook, not a ``cog`` package on disk: a real Cog installation always wins
(the hook only answers when no other finder can), and nothing named ``cog`` is
ever installed into site-packages where it would shadow it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence

# Cog module name -> cogkit module providing it (None: an empty package, there only
# so that its submodules import).
_ALIASES: dict[str, str | None] = {
    "cog": "cogkit",
    "cog.server": None,
    "cog.types": "cogkit.types",
    "cog.input": "cogkit.input",
    "cog.predictor": "cogkit.predictor",
    "cog.model": "cogkit.types",
    "cog.errors": "cogkit.exceptions",
    "cog.exceptions": "cogkit.exceptions",
    "cog.server.exceptions": "cogkit.exceptions",
}


_PACKAGES = {"cog", "cog.server"}


class _CogAliasLoader(importlib.abc.Loader):
    def __init__(self, target: str | None) -> None:
        self._target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # default module creation

    def exec_module(self, module: types.ModuleType) -> None:
        module.__cogkit_alias__ = self._target
        if self._target is None:
            return
        # A fresh module holding the cogkit module's public names: cogkit itself is
        # never renamed or mutated by the alias.
        source = importlib.import_module(self._target)
        names = getattr(source, "__all__", None) or [n for n in vars(source) if not n.startswith("_")]
        for name in names:
            setattr(module, name, getattr(source, name))
        if hasattr(source, "__version__"):
            module.__version__ = source.__version__


class CogAliasFinder(importlib.abc.MetaPathFinder):
    """Resolves ``cog`` and its public submodules to cogkit's, as a last resort."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _ALIASES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            if finder.find_spec(fullname, path, target) is not None:
                return None  # a real cog is installed: let it load
        return importlib.util.spec_from_loader(
            fullname, _CogAliasLoader(_ALIASES[fullname]), is_package=fullname in _PACKAGES
        )


def install_cog_alias() -> None:
    """Make ``import cog`` work in this process (idempotent)."""
    if not any(isinstance(f, CogAliasFinder) for f in sys.meta_path):
        sys.meta_path.append(CogAliasFinder())
