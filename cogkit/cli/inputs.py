"""Turn ``-i name=value`` flags and ``--json`` into an input object, guided by the schema.

Rules follow Cog's CLI: values are coerced by the property's type; a value that
does not parse stays a string (validation then says why); ``name=@path`` reads a
file; repeating ``-i name=...`` builds a list. Unlike the server, unknown names
are an error here, with a did-you-mean suggestion (deviation D3).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from cogkit.exceptions import CogkitError
from cogkit.files import path_to_data_url
from cogkit.openapi import Interface
from cogkit.worker.protocol import find_files, map_files


@dataclass(frozen=True)
class LocalFile:
    """A file input named on the command line (``-i image=@photo.png``), before it is
    checked, sent (as a data URL) or copied into the work folder."""

    path: str  # absolute


def did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return f'; did you mean "{close[0]}"?' if close else f" (inputs: {', '.join(candidates) or 'none'})"


def _read_file_value(raw: str, prop: dict[str, Any]) -> Any:
    """``@path``: a file input gets the file; a string input gets its text."""
    path = os.path.expanduser(raw[1:])
    is_file = prop.get("format") == "uri" or (prop.get("items") or {}).get("format") == "uri"
    if is_file:
        return LocalFile(os.path.abspath(path))
    return _read_text(path)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise CogkitError(f"no such file: {path!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CogkitError(f"cannot read {path!r} as text: {exc}") from None


def coerce(raw: str, prop: dict[str, Any]) -> Any:
    """One ``-i`` value, coerced to the JSON type the schema asks for."""
    if raw.startswith("@") and len(raw) > 1:
        return _read_file_value(raw, prop)
    t = prop.get("type")
    if t == "boolean":
        low = raw.lower()
        return True if low == "true" else False if low == "false" else raw
    if t == "integer":
        try:
            return int(raw)
        except ValueError:
            return raw
    if t == "number":
        try:
            value = float(raw)
        except ValueError:
            return raw
        return int(value) if value.is_integer() and "." not in raw and "e" not in raw.lower() else value
    if t == "object":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    if t == "array":
        if raw.lstrip().startswith("["):
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                pass
        return [coerce(raw, prop.get("items") or {})]
    return raw


def parse_flags(flags: list[str], openapi_doc: dict[str, Any], mode: str = "predict") -> dict[str, Any]:
    """``["prompt=hi", "seed=3"]`` -> ``{"prompt": "hi", "seed": 3}``."""
    iface = Interface.of(openapi_doc, mode)
    props = iface.properties
    values: dict[str, Any] = {}
    repeated: dict[str, list[Any]] = {}
    for flag in flags:
        if "=" not in flag:
            raise CogkitError(f"failed to parse input {flag!r}: expected the form name=value")
        name, _, raw = flag.partition("=")
        name = name.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        if name not in props:
            raise CogkitError(f'unknown input "{name}"{did_you_mean(name, list(props))}')
        prop = iface.prop(name)
        if prop.get("type") == "array":
            item = coerce(raw, prop.get("items") or {}) if not raw.lstrip().startswith("[") else None
            if item is None:
                values[name] = coerce(raw, prop)
            else:
                repeated.setdefault(name, []).append(item)
                values[name] = repeated[name]
        else:
            if name in values:
                raise CogkitError(f'input "{name}" was given twice, but it is not a list')
            values[name] = coerce(raw, prop)
    return values


def parse_json(text: str, openapi_doc: dict[str, Any], mode: str = "predict") -> dict[str, Any]:
    """``--json '{...}'``, ``--json @file.json`` or ``--json -`` (stdin)."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = _read_text(os.path.expanduser(text[1:]))
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CogkitError(f"--json is not valid JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise CogkitError("--json must be a JSON object of inputs")
    iface = Interface.of(openapi_doc, mode)
    props = iface.properties
    for name, value in values.items():
        if name not in props:
            raise CogkitError(f'unknown input "{name}"{did_you_mean(name, list(props))}')
        prop = iface.prop(name)
        if isinstance(value, str) and value.startswith("@"):
            values[name] = _read_file_value(value, prop)
        elif isinstance(value, list):
            values[name] = [
                _read_file_value(v, prop.get("items") or {}) if isinstance(v, str) and v.startswith("@") else v for v in value
            ]
    return values


def file_markers_to_data_urls(values: dict[str, Any]) -> dict[str, Any]:
    """Replace ``LocalFile`` markers by data URLs (for sending over HTTP)."""
    return map_files(values, lambda f, _: path_to_data_url(f.path), LocalFile)


def check_file_markers(values: dict[str, Any]) -> None:
    for f in find_files(values, LocalFile):
        if not os.path.isfile(f.path):
            raise CogkitError(f"no such file: {f.path!r}")


def for_validation(values: dict[str, Any]) -> dict[str, Any]:
    """The input object as the validator should see it (file markers as their path string)."""
    return map_files(values, lambda f, _: f.path, LocalFile)


def env_flags(flags: list[str]) -> dict[str, str]:
    """``-e NAME=VALUE`` flags as a mapping."""
    env = {}
    for flag in flags:
        if "=" not in flag:
            raise CogkitError(f"failed to parse -e {flag!r}: expected NAME=VALUE")
        name, _, value = flag.partition("=")
        env[name] = value
    return env


def print_problems(problems: list[str]) -> None:
    """Input problems found before the model runs, one ``error:`` line each (Cog's words)."""
    for line in problems:
        print(f"error: {line}", file=sys.stderr)


def print_validation_errors(errors: list[dict[str, Any]]) -> None:
    """A server's 422 ``detail`` items (cogkit predict --image)."""
    print("error: invalid input:", file=sys.stderr)
    for e in errors:
        field = ".".join(str(x) for x in e["loc"][2:])
        print(f"  - {field}: {e['msg']}", file=sys.stderr)
