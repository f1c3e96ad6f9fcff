"""Request/response helpers: JSON bodies, content types, and coglet's error texts."""

from __future__ import annotations

import json
from typing import Any

from cogkit.server import jsonio

JSON_HEADERS = [(b"content-type", b"application/json")]
TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]

JSON_PARSE_PREFIX = "Failed to parse the request body as JSON: "
WRONG_CONTENT_TYPE = "Expected request with `Content-Type: application/json`"


def json_response(status: int, value: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, JSON_HEADERS, jsonio.dumps(value)


def text_response(status: int, text: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, TEXT_HEADERS, text.encode()


def is_json_content_type(value: str | None) -> bool:
    if not value:
        return False
    mime = value.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1)
    return line, col


def json_error_text(raw: bytes, exc: Exception) -> str:
    """A parse error worded as coglet (serde_json) words it, e.g.
    ``expected ident at line 1 column 2`` for ``notjson``, ``EOF while parsing a value
    at line 1 column 0`` for an empty body. Columns count characters, 1-based at the
    offending one, 0 for "nothing read yet" at end of input."""
    if not isinstance(exc, json.JSONDecodeError):
        return JSON_PARSE_PREFIX + "invalid UTF-8 in the request body"
    text, pos, msg = exc.doc, exc.pos, exc.msg
    if msg == "Expecting value":
        stripped_end = len(text.rstrip(" \t\r\n"))
        if pos >= stripped_end:
            line, col = _line_col(text, len(text))
            return f"{JSON_PARSE_PREFIX}EOF while parsing a value at line {line} column {col}"
        ch = text[pos]
        if ch in "ntf":
            word = {"n": "null", "t": "true", "f": "false"}[ch]
            i = 0
            while i < len(word) and pos + i < len(text) and text[pos + i] == word[i]:
                i += 1
            if pos + i >= len(text):
                line, col = _line_col(text, len(text))
                return f"{JSON_PARSE_PREFIX}EOF while parsing a value at line {line} column {col}"
            line, col = _line_col(text, pos + i)
            return f"{JSON_PARSE_PREFIX}expected ident at line {line} column {col + 1}"
        line, col = _line_col(text, pos)
        return f"{JSON_PARSE_PREFIX}expected value at line {line} column {col + 1}"
    line, col = _line_col(text, pos)
    wording = {
        "Extra data": "trailing characters",
        "Expecting property name enclosed in double quotes": "key must be a string",
        "Expecting ':' delimiter": "expected `:`",
        "Expecting ',' delimiter": "expected `,` or `}`",
        "Unterminated string starting at": "EOF while parsing a string",
        "Invalid control character at": "control character (\\u0000-\\u001F) found while parsing a string",
    }.get(msg, msg[:1].lower() + msg[1:])
    return f"{JSON_PARSE_PREFIX}{wording} at line {line} column {col + 1}"


def parse_json(raw: bytes) -> Any:
    """Decode a request body; raises ValueError with coglet's 400 text."""
    try:
        return jsonio.loads(raw)
    except ValueError:
        pass
    # Invalid: re-parse with the standard library only to locate the error for the message.
    try:
        json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(json_error_text(raw, exc)) from None
    except (RecursionError, ValueError):
        pass
    raise ValueError(JSON_PARSE_PREFIX + "invalid JSON (nesting too deep, NaN/Infinity, or not UTF-8)")
