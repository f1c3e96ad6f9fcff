"""cogkit: package, run and serve machine-learning models the way Cog does.

The names here are the SDK a predictor uses; they match Cog's, and ``from cog import
...`` resolves to them when Cog itself is not installed. This module imports no
torch and no server code, so predictors and the CLI start fast.
"""

from cogkit._version import __version__
from cogkit.exceptions import CancelationException, ExperimentalFeatureWarning
from cogkit.input import FieldInfo, Input
from cogkit.predictor import BasePredictor, BaseRunner, concurrent, streaming
from cogkit.scope import current_scope, emit_metric
from cogkit.types import (
    AsyncConcatenateIterator,
    BaseModel,
    ConcatenateIterator,
    File,
    Opaque,
    Path,
    Secret,
    URLFile,
    URLPath,
)

__all__ = [
    "AsyncConcatenateIterator",
    "BaseModel",
    "BasePredictor",
    "BaseRunner",
    "CancelationException",
    "ConcatenateIterator",
    "ExperimentalFeatureWarning",
    "FieldInfo",
    "File",
    "Input",
    "Opaque",
    "Path",
    "Secret",
    "URLFile",
    "URLPath",
    "__version__",
    "concurrent",
    "current_scope",
    "emit_metric",
    "streaming",
]
