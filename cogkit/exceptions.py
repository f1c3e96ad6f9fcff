"""Exceptions shared by the SDK, the worker, the CLI and the server."""


class CancelationException(BaseException):
    """Raised inside a synchronous predict() when its prediction is canceled.

    A BaseException (as in Cog >= 0.17) so that ``except Exception`` in user code
    does not swallow it by accident.
    """


class ExperimentalFeatureWarning(FutureWarning):
    """Cog's warning category for experimental features. cogkit never emits it; it
    exists so that predictors which filter it (``warnings.filterwarnings("ignore",
    category=ExperimentalFeatureWarning)``) import unchanged."""


class CogkitError(Exception):
    """Base class of errors cogkit reports to users (CLI exit code 1, not a traceback)."""


class ConfigError(CogkitError):
    """cog.yaml is missing, unreadable or invalid."""


class PredictorError(CogkitError):
    """The predictor reference or signature is invalid (bad ref, unsupported type, ...)."""
