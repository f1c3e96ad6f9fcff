"""Value conversion in the child: wire inputs -> what predict() expects, and
predict()'s results -> wire values (JSON-like data plus FileOutput markers).

Kept free of pydantic and numpy imports: both are recognised by duck typing, so the
child starts fast and a predictor that uses neither never loads them.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import inspect
import io
import os
import typing
from typing import Any

from cogkit.handover import is_handed_over, output_dir
from cogkit.input import MISSING
from cogkit.signature import FILE, PATH, SECRET, InputField, PredictorInfo, TypeSpec
from cogkit.types import Path, Secret, URLFile
from cogkit.worker.protocol import FileInput, FileOutput

_IMMUTABLE = (str, int, float, bool, type(None), tuple, frozenset, enum.Enum)


class InputConverter:
    """Builds predict()'s keyword arguments from validated wire inputs."""

    def __init__(self, info: PredictorInfo, fn: Any) -> None:
        self._fields = list(info.inputs)
        self._enums = _enum_params(fn)

    def convert(self, inputs: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """(kwargs, objects to close after the prediction). Unknown keys are ignored;
        a missing required input is left out, so the call fails with Python's own
        "missing required argument" message."""
        kwargs: dict[str, Any] = {}
        opened: list[Any] = []
        for f in self._fields:
            if f.name in inputs:
                value = inputs[f.name]
            elif f.default is not MISSING:
                value = f.default if isinstance(f.default, _IMMUTABLE) else copy.deepcopy(f.default)
            elif f.nullable:
                value = None
            else:
                continue
            kwargs[f.name] = self._field_value(f, value, opened)
        return kwargs, opened

    def _field_value(self, f: InputField, value: Any, opened: list[Any]) -> Any:
        if value is None:
            return None
        spec = f.type
        enum_cls = self._enums.get(f.name)
        if spec.kind == "list" and spec.item is not None:
            items = value if isinstance(value, list) else [value]
            return [_enum_value(enum_cls, _scalar(spec.item, v, opened)) for v in items]
        return _enum_value(enum_cls, _scalar(spec, value, opened))


def _scalar(spec: TypeSpec, value: Any, opened: list[Any]) -> Any:
    kind = spec.kind
    if kind == SECRET:
        return Secret(value) if isinstance(value, str) else value
    if kind == PATH:
        if isinstance(value, FileInput):
            return _as_given(value.source) if value.kind == "local" else Path(value.path)
        if isinstance(value, str):
            return _as_given(value)
        if isinstance(value, os.PathLike):
            return Path(value)
        return value
    if kind == FILE:
        if isinstance(value, FileInput):
            if value.kind == "http":
                url_file = URLFile(value.source, value.path)
                opened.append(url_file)
                return url_file
            if value.kind == "data":
                with open(value.path, "rb") as fh:
                    return io.BytesIO(fh.read())
            value = value.source
        if isinstance(value, (str, os.PathLike)):
            fh = open(value, "rb")  # noqa: SIM115 - closed after the prediction
            opened.append(fh)
            return fh
        return value
    return value


class _GivenPath(Path):
    """A Path made from a plain string the client sent: it opens, and prints as, that
    exact string. pathlib would turn "ftp://host/x" into "ftp:/host/x", and Cog reports
    a missing file under the name the client gave."""

    _given: str | None = None

    def __fspath__(self) -> str:
        return self._given if self._given is not None else super().__fspath__()

    def __str__(self) -> str:
        return self._given if self._given is not None else super().__str__()


_GivenPath.__name__ = _GivenPath.__qualname__ = "Path"  # what type(p).__name__ reports, as in Cog


def _as_given(text: str) -> Path:
    path = _GivenPath(text)
    if super(_GivenPath, path).__str__() != text:
        path._given = text
    return path


def _enum_value(enum_cls: type[enum.Enum] | None, value: Any) -> Any:
    if enum_cls is None or value is None or isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        return value


def _enum_params(fn: Any) -> dict[str, type[enum.Enum]]:
    """Parameters annotated with an Enum (or Optional/list of one): predict() gets members."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - the inspector already accepted the signature
        return {}
    found: dict[str, type[enum.Enum]] = {}
    for name, tp in hints.items():
        for cand in (tp, *typing.get_args(tp)):
            for inner in (cand, *typing.get_args(cand)):
                if isinstance(inner, type) and issubclass(inner, enum.Enum):
                    found[name] = inner
    return found


# ----------------------------------------------------------------------------- outputs


def to_wire(value: Any) -> Any:
    """Make ``value`` JSON-like: dataclasses/pydantic models -> dicts, tuples/sets ->
    lists, Enum -> value, datetime -> ISO text, numpy -> Python numbers/lists, paths ->
    FileOutput, file objects -> a temp file -> FileOutput(owned=True)."""
    tp = type(value)
    if tp is str or tp is int or tp is float or tp is bool or value is None:
        return value
    if isinstance(value, enum.Enum):
        return to_wire(value.value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {_key(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)) or inspect.isgenerator(value):
        return [to_wire(v) for v in value]
    if isinstance(value, Secret) or (hasattr(value, "get_secret_value") and not isinstance(value, type)):
        return str(value)  # masked, never the secret itself
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)) and not isinstance(value, type):
        return to_wire(value.model_dump())  # pydantic v2 model
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if tp.__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        return to_wire(value.tolist())  # numpy scalar or array
    if isinstance(value, os.PathLike):
        path = os.path.abspath(os.fspath(value))
        return FileOutput(path, owned=is_handed_over(path))
    if isinstance(value, io.IOBase):
        return FileOutput(_file_object_to_temp(value), owned=True)
    raise TypeError(f"Object of type {tp.__name__} is not JSON serializable")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str(key)
    if isinstance(key, enum.Enum):
        return str(key.value)
    return str(key)


def _file_object_to_temp(fobj: io.IOBase) -> str:
    """Copy a returned file object into its own temp folder, keeping its base name
    (uploads name the file after it). The parent deletes the file and that folder."""
    name = getattr(fobj, "name", None)
    base = os.path.basename(name) if isinstance(name, str) and name else "output"
    folder = output_dir()
    path = os.path.join(folder, base)
    if fobj.seekable():
        fobj.seek(0)
    with open(path, "wb") as out:
        while True:
            chunk = fobj.read(1 << 20)
            if not chunk:
                break
            out.write(chunk.encode() if isinstance(chunk, str) else chunk)
    return path
