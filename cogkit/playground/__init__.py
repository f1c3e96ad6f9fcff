"""The web playground: a form generated from a model's OpenAPI schema, outputs rendered by
type (images, media, live text, JSON), logs, a progress bar and the code to make the same
call. The pages are plain HTML/CSS and ES modules in ``static/`` — no build step, nothing
from a CDN — so they work offline; ``cogkit serve`` and ``cogkit hub`` embed a small
config in the one HTML shell and serve the files.

Public: ``page(config, title)`` (the HTML), ``asset(path)`` (a static file under
``ASSETS``), ``prefers_html(accept)``, and the header lists to send with each.
Imports nothing from the rest of cogkit, so both servers can use it.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATIC = Path(__file__).with_name("static")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


# every file, read once at import: the shell, the served files and the digest of them all
_FILES = {f.name: f.read_bytes() for f in sorted(STATIC.iterdir()) if f.is_file()}

# The files' digest is in their URL, so they can be cached for good: a new release has a new
# URL, and the ES modules' relative imports stay inside one release's folder.
DIGEST = hashlib.sha256(b"".join(name.encode() + b"\0" + body for name, body in _FILES.items())).hexdigest()[:12]
ASSETS = f"/playground/assets/{DIGEST}"

# Everything the page loads comes from this origin; outputs may be images/media from data:
# URLs or the hub's public file URLs; nothing inline runs (the config is inert JSON).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
       "media-src 'self' data: blob: http: https:; connect-src 'self' http: https:; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
PAGE_HEADERS = [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-cache"),
                ("content-security-policy", CSP), ("x-content-type-options", "nosniff"),
                ("referrer-policy", "no-referrer")]


@dataclass(frozen=True)
class Asset:
    body: bytes
    etag: str
    headers: list[tuple[str, str]]

    def answer(self, if_none_match: str | None) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for a GET: 304 without a body when the client has it."""
        if if_none_match == self.etag:
            return 304, [h for h in self.headers if h[0] != "content-type"], b""
        return 200, self.headers, self.body


def _asset(name: str, body: bytes) -> Asset:
    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
    return Asset(body, etag, [("content-type", _TYPES[Path(name).suffix]), ("etag", etag),
                              ("cache-control", "public, max-age=31536000, immutable"),
                              ("x-content-type-options", "nosniff")])


_ASSETS = {name: _asset(name, body) for name, body in _FILES.items() if Path(name).suffix in _TYPES}
_SHELL = _FILES["page.html"].decode()
_STALE = [("cache-control", "no-cache")]  # an old page asking for this release's files


def asset(path: str) -> Asset | None:
    """The file for ``assets/<digest>/<name>`` (``path`` is what follows ``/playground/``),
    or None. Only the names shipped in ``static/`` exist: nothing else on disk is reachable."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "assets":
        return None
    found = _ASSETS.get(parts[2])
    if found is None or parts[1] == DIGEST:
        return found
    return Asset(found.body, found.etag, [h for h in found.headers if h[0] != "cache-control"] + _STALE)


def page(config: dict[str, Any], title: str) -> bytes:
    """The HTML shell for one page (``config["page"]``: playground, models or predictions)."""
    # inert JSON in a <script type="application/json">: "<" escaped so no value ends the element
    data = json.dumps(config, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")
    text = (_SHELL.replace("__TITLE__", html.escape(title))
            .replace("__ASSETS__", ASSETS)
            .replace("__CONFIG__", data))
    return text.encode()


def prefers_html(accept: str | None) -> bool:
    """A browser's navigation (text/html listed before any JSON type), not an API client."""
    if not accept:
        return False
    kinds = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    if "text/html" not in kinds:
        return False
    html_at = kinds.index("text/html")
    return not any(k in ("application/json", "*/*") for k in kinds[:html_at])
