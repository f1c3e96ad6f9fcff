"""Read a predictor's signature into a PredictorInfo: its inputs, output and calling style.

Everything downstream (OpenAPI schema, validation, the worker's input conversion,
the CLI) works from this one description, so the rules of Cog's SDK live here:
which annotations are allowed, when an input is required or nullable, and what
an output looks like.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import io
import os
import types
import typing
from dataclasses import dataclass
from typing import Any

from cogkit.exceptions import PredictorError
from cogkit.input import MISSING, FieldInfo
from cogkit.types import AsyncConcatenateIterator, ConcatenateIterator, Opaque

# Scalar kinds an input or output item can have.
STR, INT, FLOAT, BOOL = "str", "int", "float", "bool"
PATH, FILE, SECRET, OBJECT, ANY = "path", "file", "secret", "object", "any"
FILE_KINDS = (PATH, FILE)


@dataclass(frozen=True)
class TypeSpec:
    """A normalised annotation.

    kind: one of the constants above, "list", "union" or "model".
    item: the element spec of a list.
    members: the member specs of a union (JSON-native members only).
    fields: for "model" (structured outputs): (name, spec, required, nullable).
    choices: the values of a ``Literal[...]`` annotation.
    additional: for dict outputs ``dict[str, V]``: the spec of V.
    """

    kind: str
    item: TypeSpec | None = None
    members: tuple[TypeSpec, ...] = ()
    fields: tuple[tuple[str, TypeSpec, bool, bool], ...] = ()
    choices: tuple[Any, ...] | None = None
    additional: TypeSpec | None = None
    model_name: str | None = None

    @property
    def is_file(self) -> bool:
        return self.kind in FILE_KINDS or (self.kind == "list" and self.item is not None and self.item.is_file)


@dataclass(frozen=True)
class InputField:
    name: str
    order: int
    type: TypeSpec
    nullable: bool
    default: Any  # MISSING when the input has none
    info: FieldInfo

    @property
    def required(self) -> bool:
        return self.default is MISSING and not self.nullable

    @property
    def choices(self) -> list[Any] | None:
        if self.info.choices is not None:
            return list(self.info.choices)
        if self.type.choices is not None:
            return list(self.type.choices)
        return None


@dataclass(frozen=True)
class OutputSpec:
    type: TypeSpec  # for iterators: the item type
    iterator: bool = False
    concatenate: bool = False


@dataclass
class PredictorInfo:
    mode: str  # "predict" or "train"
    method: str  # name of the method (or function) that runs a prediction
    inputs: list[InputField]
    output: OutputSpec
    is_async: bool
    is_generator: bool
    is_function: bool
    streaming: bool = False
    concurrency: int | None = None
    setup_takes_weights: bool = False
    has_healthcheck: bool = False

    def input(self, name: str) -> InputField | None:
        for f in self.inputs:
            if f.name == name:
                return f
        return None


# --------------------------------------------------------------------------- annotations


def _is_pathlike(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, os.PathLike)


def _is_file(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, io.IOBase)


def _is_secret(tp: Any) -> bool:
    return isinstance(tp, type) and tp.__name__ == "Secret" and hasattr(tp, "get_secret_value")


def _is_model(tp: Any) -> bool:
    if not isinstance(tp, type):
        return False
    if dataclasses.is_dataclass(tp):
        return True
    return hasattr(tp, "model_fields") and hasattr(tp, "model_dump")  # pydantic v2


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__annotations__") and hasattr(tp, "__total__")


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            if len(args) == 1:
                return args[0], True
            return typing.Union[tuple(args)], True  # type: ignore[return-value]
    return tp, False


def _scalar(tp: Any, where: str, allow_model: bool) -> TypeSpec:
    if tp is str:
        return TypeSpec(STR)
    if tp is bool:
        return TypeSpec(BOOL)
    if tp is int:
        return TypeSpec(INT)
    if tp is float:
        return TypeSpec(FLOAT)
    if _is_secret(tp):
        return TypeSpec(SECRET)
    if _is_pathlike(tp):
        return TypeSpec(PATH)
    if _is_file(tp):
        return TypeSpec(FILE)
    if tp is Any or tp is dict or tp is typing.Dict or tp is object:  # noqa: UP006
        return TypeSpec(ANY if tp is Any else OBJECT)
    if _is_typeddict(tp):
        return TypeSpec(OBJECT)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = tuple(m.value for m in tp)
        kinds = {type(v) for v in values}
        if kinds <= {str} or kinds <= {int}:
            return TypeSpec(STR if kinds <= {str} else INT, choices=values)
    if allow_model and _is_model(tp):
        return _model_spec(tp, where)
    raise PredictorError(f"{where}: unsupported type {_type_name(tp)}")


def _model_spec(tp: type, where: str) -> TypeSpec:
    fields: list[tuple[str, TypeSpec, bool, bool]] = []
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        for f in dataclasses.fields(tp):
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            inner, nullable = _strip_optional(hints.get(f.name, Any))
            spec = _output_value(inner, f"{where}.{f.name}")
            fields.append((f.name, spec, not (has_default or nullable), nullable))
    else:  # pydantic v2 model
        hints = typing.get_type_hints(tp, include_extras=True)
        for name, finfo in tp.model_fields.items():  # type: ignore[attr-defined]
            inner, nullable = _strip_optional(hints.get(name, Any))
            spec = _output_value(inner, f"{where}.{name}")
            fields.append((name, spec, finfo.is_required() and not nullable, nullable))
    return TypeSpec("model", fields=tuple(fields), model_name=tp.__name__)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


def _literal(tp: Any, where: str) -> TypeSpec:
    values = typing.get_args(tp)
    kinds = {type(v) for v in values}
    if kinds == {str}:
        return TypeSpec(STR, choices=values)
    if kinds == {int}:
        return TypeSpec(INT, choices=values)
    raise PredictorError(f"{where}: Literal values must be all str or all int, got {values!r}")


def _annotated_base(tp: Any) -> tuple[Any, bool]:
    """Unwrap ``Annotated[T, ...]``; the flag says whether ``Opaque`` was among the extras."""
    if typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        return args[0], any(a is Opaque for a in args[1:])
    return tp, False


def input_type(tp: Any, where: str) -> tuple[TypeSpec, bool]:
    """Normalise an input annotation; returns (spec, nullable)."""
    tp, opaque = _annotated_base(tp)
    tp, nullable = _strip_optional(tp)
    tp, opaque2 = _annotated_base(tp)
    opaque = opaque or opaque2
    origin = typing.get_origin(tp)
    if opaque:
        if origin in (list, typing.List):  # noqa: UP006
            return TypeSpec("list", item=TypeSpec(OBJECT)), nullable
        return TypeSpec(OBJECT), nullable
    if origin is typing.Literal:
        return _literal(tp, where), nullable
    if origin in (list, typing.List, collections.abc.Sequence):  # noqa: UP006
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        item_tp, item_nullable = _strip_optional(item_tp)
        if item_nullable or typing.get_origin(item_tp) in (list, typing.List, dict, typing.Union):  # noqa: UP006
            raise PredictorError(f"{where}: nested generic types such as {tp!r} are not supported")
        if typing.get_origin(item_tp) is typing.Literal:
            return TypeSpec("list", item=_literal(item_tp, where)), nullable
        return TypeSpec("list", item=_scalar(item_tp, where, allow_model=False)), nullable
    if origin in (dict, typing.Dict, collections.abc.Mapping):  # noqa: UP006
        return TypeSpec(OBJECT), nullable
    if origin is typing.Union or origin is types.UnionType:
        members = []
        for arg in typing.get_args(tp):
            spec, _ = input_type(arg, where)
            if spec.kind in (PATH, FILE, SECRET) or spec.is_file:
                raise PredictorError(f"{where}: unions may not contain Path, File or Secret")
            members.append(spec)
        return TypeSpec("union", members=tuple(members)), nullable
    if _is_model(tp) and not _is_typeddict(tp) and not _is_secret(tp):
        raise PredictorError(f"{where}: unsupported input type {_type_name(tp)} (structured types are outputs only)")
    return _scalar(tp, where, allow_model=False), nullable


def _output_value(tp: Any, where: str) -> TypeSpec:
    tp, opaque = _annotated_base(tp)
    if opaque:
        return TypeSpec(OBJECT)
    if tp in (list, tuple, set, frozenset):  # bare ``-> list``: an array of anything
        return TypeSpec("list", item=TypeSpec(ANY))
    origin = typing.get_origin(tp)
    if origin in (list, typing.List, tuple, set, frozenset):  # noqa: UP006
        args = typing.get_args(tp)
        return TypeSpec("list", item=_output_value(args[0], where) if args else TypeSpec(ANY))
    if origin in (dict, typing.Dict, collections.abc.Mapping):  # noqa: UP006
        args = typing.get_args(tp)
        additional = _output_value(args[1], where) if len(args) == 2 and args[1] is not Any else None
        return TypeSpec(OBJECT, additional=additional)
    if origin is typing.Union or origin is types.UnionType:
        inner, nullable = _strip_optional(tp)
        if nullable:
            raise PredictorError(f"{where}: output must not be Optional")
        return TypeSpec("union", members=tuple(_output_value(a, where) for a in typing.get_args(inner)))
    if origin is typing.Literal:
        return _literal(tp, where)
    return _scalar(tp, where, allow_model=True)


_ITERATORS = {
    collections.abc.Iterator,
    collections.abc.Generator,
    collections.abc.Iterable,
    collections.abc.AsyncIterator,
    collections.abc.AsyncGenerator,
    collections.abc.AsyncIterable,
}


def output_spec(tp: Any, where: str) -> OutputSpec:
    if tp is inspect.Signature.empty:
        raise PredictorError(f"{where}: a return type annotation is required")
    if tp is None or tp is type(None):
        raise PredictorError(f"{where}: the return type must not be None")
    origin = typing.get_origin(tp) or tp
    if origin in (ConcatenateIterator, AsyncConcatenateIterator) or (
        isinstance(origin, type) and origin.__name__ in ("ConcatenateIterator", "AsyncConcatenateIterator")
    ):
        args = typing.get_args(tp)
        if args and args[0] is not str:
            raise PredictorError(f"{where}: ConcatenateIterator items must be str")
        return OutputSpec(TypeSpec(STR), iterator=True, concatenate=True)
    if origin in _ITERATORS:
        args = typing.get_args(tp)
        item = args[0] if args else Any
        _, nullable = _strip_optional(item)
        if nullable:
            raise PredictorError(f"{where}: iterator items must not be Optional")
        return OutputSpec(_output_value(item, where), iterator=True)
    inner, nullable = _strip_optional(tp)
    if nullable:
        raise PredictorError(f"{where}: output must not be Optional")
    return OutputSpec(_output_value(tp, where))


# --------------------------------------------------------------------------- predictors


def _is_fieldinfo(value: Any) -> bool:
    # Duck-typed so the real ``cog.Input`` works too when Cog itself is installed.
    return isinstance(value, FieldInfo) or (
        type(value).__name__ == "FieldInfo" and hasattr(value, "ge") and hasattr(value, "choices")
    )


def _fieldinfo_of(default: Any) -> tuple[FieldInfo, Any]:
    """(FieldInfo, default) for a parameter's default value; default is MISSING if none."""
    if default is inspect.Parameter.empty:
        return FieldInfo(), MISSING
    if _is_fieldinfo(default):
        if isinstance(default, FieldInfo):
            return default, default.default
        # the real cog.FieldInfo: copy its fields; its "no default" is a None we cannot tell apart
        kwargs = {f.name: getattr(default, f.name, None) for f in dataclasses.fields(FieldInfo)}
        info = FieldInfo(**kwargs)
        return info, info.default
    return FieldInfo(default=default), default


def _check_field(f: InputField, where: str) -> None:
    info, spec = f.info, f.type
    base = spec.item if spec.kind == "list" and spec.item is not None else spec
    numeric = base.kind in (INT, FLOAT)
    if (info.ge is not None or info.le is not None) and not numeric:
        raise PredictorError(f"{where}: ge/le apply to int and float inputs only")
    if (info.min_length is not None or info.max_length is not None or info.regex is not None) and base.kind != STR:
        raise PredictorError(f"{where}: min_length/max_length/regex apply to str inputs only")
    if info.accept is not None and not spec.is_file:
        raise PredictorError(f"{where}: accept= applies to Path and File inputs only")
    if info.choices is not None:
        if spec.kind not in (STR, INT):
            raise PredictorError(f"{where}: choices apply to str and int inputs only")
        if len(info.choices) < 2:
            raise PredictorError(f"{where}: choices must have at least 2 values")
        want = str if spec.kind == STR else int
        bad = [c for c in info.choices if type(c) is not want]
        if bad:
            raise PredictorError(f"{where}: every choice must be a {want.__name__}, got {bad[0]!r}")
        if any(x is not None for x in (info.ge, info.le, info.min_length, info.max_length)):
            raise PredictorError(f"{where}: choices cannot be combined with ge/le/min_length/max_length")
    default = f.default
    if default is MISSING or default is None:
        return
    values = default if isinstance(default, list) else [default]
    for v in values:
        if info.ge is not None and isinstance(v, (int, float)) and v < info.ge:
            raise PredictorError(f"{where}: default {v!r} is less than ge={info.ge}")
        if info.le is not None and isinstance(v, (int, float)) and v > info.le:
            raise PredictorError(f"{where}: default {v!r} is greater than le={info.le}")
        if isinstance(v, str):
            if info.min_length is not None and len(v) < info.min_length:
                raise PredictorError(f"{where}: default {v!r} is shorter than min_length={info.min_length}")
            if info.max_length is not None and len(v) > info.max_length:
                raise PredictorError(f"{where}: default {v!r} is longer than max_length={info.max_length}")
            if info.regex is not None:
                import re

                if not re.search(info.regex, v):
                    raise PredictorError(f"{where}: default {v!r} does not match regex {info.regex!r}")
    choices = f.choices
    if choices is not None and default not in choices:
        raise PredictorError(f"{where}: default {default!r} is not one of the choices {choices!r}")


def _method_of(target: Any, mode: str) -> tuple[Any, str]:
    if not isinstance(target, type):
        if callable(target):
            return target, getattr(target, "__name__", "predict")
        raise PredictorError(f"{target!r} is neither a class nor a function")
    if mode == "train":
        if "train" not in dir(target):
            raise PredictorError(f"{target.__name__} has no train() method")
        return target.train, "train"
    has_run = _defined_by_user(target, "run")
    has_predict = _defined_by_user(target, "predict")
    if has_run and has_predict:
        raise PredictorError(f"{target.__name__} must define either run() or predict(), not both")
    if not has_run and not has_predict:
        raise PredictorError(f"{target.__name__}: run or predict method not found")
    name = "run" if has_run else "predict"
    return getattr(target, name), name


def _defined_by_user(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        if klass.__module__.startswith(("cogkit.", "cog.")) or klass is object:
            continue
        if name in vars(klass):
            return True
    return False


def inspect_predictor(target: Any, mode: str = "predict") -> PredictorInfo:
    """Describe the class or function ``target`` (what ``predict.py:Predictor`` names)."""
    fn, method = _method_of(target, mode)
    owner = target.__name__ if isinstance(target, type) else ""
    label = f"{owner}.{method}()" if owner else f"{method}()"
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - bad forward refs etc.
        raise PredictorError(f"{label}: cannot resolve type annotations: {exc}") from exc
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if isinstance(target, type):
        params = params[1:]  # self
    inputs: list[InputField] = []
    for order, p in enumerate(params):
        where = f"{label} input {p.name!r}"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY):
            raise PredictorError(f"{where}: *args, **kwargs, keyword-only and positional-only parameters are not supported")
        if p.name not in hints:
            raise PredictorError(f"{where}: every input needs a type annotation")
        spec, nullable = input_type(hints[p.name], where)
        info, default = _fieldinfo_of(p.default)
        if default is None:
            # Cog <= 0.16 semantics (cogkit deviation D1): default=None makes any input optional.
            nullable = True
            default = MISSING
        if default is not MISSING and isinstance(default, (list, dict)):
            default = type(default)(default)
        f = InputField(p.name, order, spec, nullable, default, info)
        _check_field(f, where)
        inputs.append(f)
    output = output_spec(hints.get("return", inspect.Signature.empty), label)
    is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    is_gen = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    setup_weights = False
    has_health = False
    if isinstance(target, type):
        setup = getattr(target, "setup", None)
        if setup is not None:
            sp = list(inspect.signature(setup).parameters.values())[1:]
            if any(p.name != "weights" or p.kind not in (p.POSITIONAL_OR_KEYWORD,) for p in sp):
                raise PredictorError(f"{owner}.setup() may take only an optional 'weights' parameter")
            setup_weights = bool(sp)
        has_health = callable(getattr(target, "healthcheck", None))
    return PredictorInfo(
        mode=mode,
        method=method,
        inputs=inputs,
        output=output,
        is_async=is_async,
        is_generator=is_gen,
        is_function=not isinstance(target, type),
        streaming=bool(getattr(fn, "_cogkit_streaming", False) or getattr(fn, "_cog_streaming", False)),
        concurrency=getattr(fn, "_cogkit_concurrency", None),
        setup_takes_weights=setup_weights,
        has_healthcheck=has_health,
    )
