"""``Input(...)``: how a predictor declares the constraints and docs of one input."""

from __future__ import annotations

import dataclasses
from typing import Any


class _Missing:
    """Sentinel: ``Input()`` written without ``default=`` (the input is required)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """What ``Input(...)`` returns; read by the signature inspector."""

    default: Any = MISSING
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: list[Any] | None = None
    deprecated: bool | None = None
    accept: str | None = None


def Input(  # noqa: N802 - the name users write, as in Cog
    default: Any = MISSING,
    *,
    default_factory: Any = None,
    description: str | None = None,
    ge: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    regex: str | None = None,
    choices: list[Any] | None = None,
    deprecated: bool | None = None,
    accept: str | None = None,
) -> Any:
    """Declare an input's default, docs and rules: ``x: int = Input(default=1, ge=0)``."""
    if default_factory is not None:
        raise TypeError(
            "Input(default_factory=...) is not supported: the schema needs a literal default"
        )
    return FieldInfo(
        default=default,
        description=description,
        ge=ge,
        le=le,
        min_length=min_length,
        max_length=max_length,
        regex=regex,
        choices=list(choices) if choices is not None else None,
        deprecated=deprecated,
        accept=accept,
    )
