"""Validate a request's ``input`` object against the predictor's Input schema.

A strict pydantic model is built once per schema from the same declarations the
schema was made from (the Input component), so every rule (type, required,
ge/le, lengths, regex, choices) is enforced and all errors are reported at once.
Errors come out in Cog's 422 item shape with coglet's messages
(``5 is not of type "string"``), because clients parse them.

Values that pass are forwarded as the client sent them (an int for a float input
stays an int, as in Cog 0.23.1); pydantic's coerced copy is not used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional, Union

import pydantic
from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from cogkit.openapi import Interface, resolve_property

_TYPE_NAMES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean", "array": "array", "object": "object"}


@dataclass
class ValidationResult:
    inputs: dict[str, Any]  # the valid fields as sent, unknown keys removed
    errors: list[dict[str, Any]] = field(default_factory=list)  # Cog 422 "detail" items
    # the same problems, one line each, in the words of current Cog's CLI (cogkit predict)
    problems: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # keys dropped because no input has that name

    @property
    def ok(self) -> bool:
        return not self.errors


def json_repr(value: Any) -> str:
    """A value as coglet's validator prints it: compact JSON."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


@dataclass(frozen=True)
class _Rules:
    """The constraint part of one property, kept for error messages."""

    type: str | None
    minimum: Any = None
    maximum: Any = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    enum: list[Any] | None = None
    items: _Rules | None = None
    nullable: bool = False
    secret: bool = False


def _rules(prop: dict[str, Any], schemas: dict[str, Any]) -> _Rules:
    p = resolve_property(prop, schemas)
    items = p.get("items")
    return _Rules(
        type=p.get("type"),
        minimum=p.get("minimum"),
        maximum=p.get("maximum"),
        min_length=p.get("minLength"),
        max_length=p.get("maxLength"),
        pattern=p.get("pattern"),
        enum=p.get("enum"),
        items=_rules(items, schemas) if isinstance(items, dict) else None,
        nullable=bool(p.get("nullable")),
        secret=bool(p.get("x-cog-secret")),
    )


def _annotation(rules: _Rules, prop: dict[str, Any], schemas: dict[str, Any]) -> Any:
    """The strict pydantic annotation for one property."""
    p = resolve_property(prop, schemas)
    if "anyOf" in p:
        members = [_annotation(_rules(m, schemas), m, schemas) for m in p["anyOf"]]
        return Union[tuple(members)]  # type: ignore[return-value]  # noqa: UP007
    t = rules.type
    if rules.enum is not None:
        base = StrictInt if t == "integer" else StrictStr if t == "string" else Any
        return Annotated[base, pydantic.AfterValidator(_one_of(rules.enum))]
    if t == "string":
        return Annotated[
            StrictStr,
            pydantic.StringConstraints(min_length=rules.min_length, max_length=rules.max_length),
        ]
    if t == "integer":
        return Annotated[StrictInt, pydantic.Field(ge=rules.minimum, le=rules.maximum)]
    if t == "number":
        return Annotated[Union[StrictInt, StrictFloat], pydantic.Field(ge=rules.minimum, le=rules.maximum)]  # noqa: UP007
    if t == "boolean":
        return StrictBool
    if t == "array":
        item = _annotation(rules.items, p["items"], schemas) if rules.items else Any
        return list[item]  # type: ignore[valid-type]
    if t == "object":
        return dict[str, Any]
    return Any


def _one_of(values: list[Any]) -> Any:
    allowed = list(values)

    def check(value: Any) -> Any:
        # compare with types too: True must not pass for the integer choice 1
        if not any(type(value) is type(a) and value == a for a in allowed):
            raise PydanticCustomError("literal_error", "not one of the choices")
        return value

    return check


def _pattern_ok(pattern: str, value: Any) -> bool:
    # JSON Schema patterns are unanchored searches (as coglet's validator applies them).
    return not isinstance(value, str) or re.search(pattern, value) is not None


class InputValidator:
    """Validates ``input`` objects for one predictor; build once, call per request."""

    def __init__(self, openapi_doc: dict[str, Any], mode: str = "predict") -> None:
        self.interface = iface = Interface.of(openapi_doc, mode)
        schemas = iface.schemas
        self.properties: dict[str, dict[str, Any]] = iface.properties
        self.required: set[str] = set(iface.required)
        self._rules = {name: _rules(prop, schemas) for name, prop in self.properties.items()}
        fields: dict[str, Any] = {}
        for name, prop in self.properties.items():
            rules = self._rules[name]
            ann = _annotation(rules, prop, schemas)
            if rules.nullable:
                ann = Optional[ann]  # noqa: UP007 - cogkit deviation D2: explicit null allowed
            fields[name] = (ann, ... if name in self.required else None)
        self._model = pydantic.create_model(  # type: ignore[call-overload]
            "Input",
            __config__=pydantic.ConfigDict(extra="ignore", strict=True),
            **{_safe(n): (a, pydantic.Field(d, alias=n)) for n, (a, d) in fields.items()},
        )
        self._patterns = {n: r.pattern for n, r in self._rules.items() if r.pattern}

    def validate(self, payload: Any) -> ValidationResult:
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            return ValidationResult(
                {},
                [_err("__root__", f"{json_repr(payload)} is not of type \"object\"")],
                [f"the inputs must be an object, got {_json_type(payload)}"],
            )
        unknown = [k for k in payload if k not in self.properties]
        inputs = {k: v for k, v in payload.items() if k in self.properties}
        found: list[tuple[dict[str, Any], str]] = []  # (422 item, CLI line)
        try:
            self._model.model_validate(inputs)
        except pydantic.ValidationError as exc:
            seen: set[tuple[Any, ...]] = set()
            for e in exc.errors(include_url=False):
                item = self._translate(e, inputs)
                key = tuple(item["loc"]) + (item["msg"],)
                if key not in seen:
                    seen.add(key)
                    found.append((item, self._problem(e, inputs)))
        for name, pattern in self._patterns.items():
            value, rules = inputs.get(name), self._rules[name]
            line = f"must match the pattern {json_repr(pattern)}"
            if isinstance(value, str) and not _pattern_ok(pattern, value):
                found.append((_err(name, f"{_shown(value, rules)} does not match {json_repr(pattern)}"),
                              f'invalid input "{name}": {line}'))
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    if not _pattern_ok(pattern, v):
                        found.append((_err(name, f"{_shown(v, rules)} does not match {json_repr(pattern)}", i),
                                      f'invalid input "{name}" (item {i}): {line}'))
        order = {n: i for i, n in enumerate(self.properties)}
        found.sort(key=lambda pair: order.get(pair[0]["loc"][2], -1))
        errors = [item for item, _ in found]
        return ValidationResult(inputs if not errors else {}, errors, [line for _, line in found], unknown)

    def _problem(self, e: dict[str, Any], inputs: dict[str, Any]) -> str:
        """One pydantic error as current Cog's CLI words it."""
        loc = e["loc"]
        name = loc[0] if loc else "__root__"
        if e["type"] == "missing":
            return f'missing required input "{name}"'
        index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        rules = self._rules.get(name)
        value = inputs.get(name)
        label = f'invalid input "{name}"'
        if index is not None and isinstance(value, list) and index < len(value):
            value, rules = value[index], rules.items if rules else None
            label += f" (item {index})"
        return f"{label}: {_rule_text(e, value, rules)}"

    def _translate(self, e: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        loc = e["loc"]
        name = loc[0] if loc else "__root__"
        index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        rules = self._rules.get(name)
        if e["type"] == "missing":
            return {"loc": ["body", "input", name], "msg": "Field required", "type": "value_error.missing"}
        value = inputs.get(name)
        if index is not None and isinstance(value, list) and index < len(value):
            value = value[index]
            rules = rules.items if rules else None
        return _err(name, _message(e, value, rules), index)


def _safe(name: str) -> str:
    # pydantic rejects field names with a leading underscore; the alias keeps the real name
    return name if not name.startswith("_") else f"f{name}"


def _err(name: str, msg: str, index: int | None = None) -> dict[str, Any]:
    loc: list[Any] = ["body", "input", name]
    if index is not None:
        loc.append(index)
    return {"loc": loc, "msg": msg, "type": "value_error"}


def _plural(n: int) -> str:
    return "character" if n == 1 else "characters"


def _shown(value: Any, rules: _Rules | None) -> str:
    """How a message quotes the offending value: never a Secret's."""
    return '"**********"' if rules is not None and rules.secret else json_repr(value)


def _message(e: dict[str, Any], value: Any, rules: _Rules | None) -> str:
    """coglet's wording for one pydantic error."""
    t = e["type"]
    v = _shown(value, rules)
    if rules is None:
        return e["msg"]
    if rules.enum is not None and (t == "literal_error" or t.endswith("_type")):
        if rules.type and not _matches_type(value, rules.type):
            return f'{v} is not of type "{_TYPE_NAMES.get(rules.type, rules.type)}"'
        return f"{v} is not one of {json_repr(rules.enum)}"
    if t == "greater_than_equal":
        return f"{v} is less than the minimum of {json_repr(rules.minimum)}"
    if t == "less_than_equal":
        return f"{v} is greater than the maximum of {json_repr(rules.maximum)}"
    if t == "string_too_short":
        return f"{v} is shorter than {rules.min_length} {_plural(rules.min_length or 0)}"
    if t == "string_too_long":
        return f"{v} is longer than {rules.max_length} {_plural(rules.max_length or 0)}"
    if rules.type:
        return f'{v} is not of type "{_TYPE_NAMES.get(rules.type, rules.type)}"'
    return e["msg"]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _rule_text(e: dict[str, Any], value: Any, rules: _Rules | None) -> str:
    """The broken rule, for ``invalid input "name": <this>``."""
    t = e["type"]
    if rules is None:
        return e["msg"]
    if value is None:
        return "must not be null"
    if rules.type and not _matches_type(value, rules.type):
        return f"expected {_TYPE_NAMES.get(rules.type, rules.type)}, got {_json_type(value)}"
    if rules.enum is not None and (t == "literal_error" or t.endswith("_type")):
        return "must be one of: " + ", ".join(str(v) for v in rules.enum)
    if t == "greater_than_equal":
        return f"must be greater than or equal to {json_repr(rules.minimum)}"
    if t == "less_than_equal":
        return f"must be less than or equal to {json_repr(rules.maximum)}"
    if t == "string_too_short":
        return f"must be at least {rules.min_length} {_plural(rules.min_length or 0)} long"
    if t == "string_too_long":
        return f"must be at most {rules.max_length} {_plural(rules.max_length or 0)} long"
    return e["msg"]


def _matches_type(value: Any, json_type: str) -> bool:
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if json_type == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if json_type == "boolean":
        return isinstance(value, bool)
    if json_type == "array":
        return isinstance(value, list)
    if json_type == "object":
        return isinstance(value, dict)
    return True
