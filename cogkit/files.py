"""File codecs and limits shared by every side: data URLs, MIME types, safe names,
the limits on fetched inputs and the one size- and time-capped ``download`` under them,
and ``InputFileError``.

This is a leaf: it imports nothing else from cogkit but the exceptions. Preparing a
prediction's file inputs (fetching URLs into its work folder) is the worker's parent
side, ``cogkit.worker.inputs``; the server encodes returned files with ``data_url``, and
the CLI writes them to disk (``cogkit.cli.outputs``) with names from ``safe_filename``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import mimetypes
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pybase64

from cogkit.exceptions import CogkitError

# Limits for fetched inputs; overridable per deployment (COGKIT_MAX_INPUT_FILE_BYTES is the
# older name of the size cap).
MAX_INPUT_BYTES = int(os.environ.get("COGKIT_MAX_INPUT_BYTES") or os.environ.get("COGKIT_MAX_INPUT_FILE_BYTES")
                      or str(1 << 30))
FETCH_TIMEOUT = float(os.environ.get("COGKIT_INPUT_FETCH_TIMEOUT", "10"))  # connect, and each read
FETCH_DEADLINE = float(os.environ.get("COGKIT_INPUT_FETCH_DEADLINE", "300"))  # the whole download
MAX_REDIRECTS = 5
FETCHED_SCHEMES = ("http", "https")
CHUNK_BYTES = 1 << 20
_MAX_NAME_BYTES = 200

# Types Python's table lacks or gets wrong on some systems.
for _ext, _mime in {
    ".webp": "image/webp",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".txt": "text/plain",
    ".json": "application/json",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".mp4": "video/mp4",
    ".safetensors": "application/octet-stream",
}.items():
    mimetypes.add_type(_mime, _ext)
_PREFERRED_EXT = {"image/jpeg": ".jpg", "text/plain": ".txt", "image/png": ".png", "image/webp": ".webp"}


class InputFileError(CogkitError):
    """A file input could not be fetched or is not allowed. ``loc`` names the input (and
    the list index) once ``cogkit.worker.inputs.prepare_inputs`` knows it."""

    def __init__(self, message: str, loc: list[str | int] | None = None) -> None:
        super().__init__(message)
        self.loc = loc or []

    @property
    def field(self) -> str:
        return ".".join(str(part) for part in self.loc)


# --------------------------------------------------------------------------- names and types


def guess_mime(path: str | os.PathLike[str]) -> str:
    mime, _ = mimetypes.guess_type(os.fspath(path), strict=False)
    return mime or "application/octet-stream"


def extension_for(mime: str) -> str:
    mime = mime.split(";")[0].strip().lower()
    return _PREFERRED_EXT.get(mime) or mimetypes.guess_extension(mime, strict=False) or ""


def safe_filename(name: str) -> str:
    """A file name from an untrusted source: no directories, no NUL, at most 200 bytes.

    Long names keep their extension and get ``~`` before it, as Cog does.
    """
    name = name.replace("\x00", "_").replace("/", "_").replace("\\", "_")
    if name in ("", ".", ".."):
        name = "file"
    if len(name.encode()) > _MAX_NAME_BYTES:
        stem, ext = os.path.splitext(name)
        ext_b = ext.encode()[:32]
        budget = _MAX_NAME_BYTES - len(ext_b) - 1
        stem_b = stem.encode()[:budget].decode(errors="ignore")
        name = f"{stem_b}~{ext_b.decode(errors='ignore')}"
    return name


_DEVICE_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def filename_from_url(url: str) -> str:
    """The name a downloaded input gets: the URL's last path segment, decoded, with no
    directories, not hidden (no leading dot) and not a device name."""
    path = urllib.parse.urlparse(url).path
    name = safe_filename(urllib.parse.unquote_plus(os.path.basename(path))).lstrip(".") or "file"
    if name.split(".", 1)[0].lower() in _DEVICE_NAMES:
        name = "_" + name
    return name


def redact_url(url: str) -> str:
    """``url`` fit for messages and records: without userinfo (``user:pass@``) and without
    the query and fragment (signed URLs and index tokens carry credentials there)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<an unreadable URL>"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


# --------------------------------------------------------------------------- data URLs


def decode_data_url(url: str) -> tuple[str, bytes]:
    """(mime type, bytes) of a ``data:`` URL (base64 or percent-encoded)."""
    if not url.startswith("data:") or "," not in url:
        raise InputFileError(f"invalid data URL: {url[:40]!r}")
    header, _, payload = url[5:].partition(",")
    params = header.split(";")
    mime = params[0] or "text/plain"
    try:
        if "base64" in params[1:]:
            data = base64.b64decode(payload, validate=False)
        else:
            data = urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise InputFileError(f"invalid data URL: {exc}") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise InputFileError(f"data URL is larger than the {MAX_INPUT_BYTES}-byte limit")
    return mime, data


def data_url(path: str | os.PathLike[str], mime: str | None = None) -> str:
    """The file as ``data:<mime>;base64,...``."""
    with open(path, "rb") as f:
        raw = f.read()
    # pybase64 (SIMD): ~0.06 ms per MiB here against ~2.5 ms for the standard library.
    return f"data:{mime or guess_mime(path)};base64,{pybase64.b64encode_as_string(raw)}"


def path_to_data_url(path: str | os.PathLike[str]) -> str:
    """Read a local file the CLI was given (``-i image=@photo.jpg``) into a data URL."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_file():
        raise CogkitError(f"no such file: {os.fspath(path)!r}")
    return data_url(p)


def fetch_client() -> Any:
    """An httpx.AsyncClient with the fetch limits (timeouts, redirects) for ``download``."""
    import httpx

    return httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True, max_redirects=MAX_REDIRECTS)


@dataclass(frozen=True)
class FetchLimits:
    """The caps of one ``download`` (without one: prediction inputs' caps, read when used).

    ``*_setting`` names the variable that sets a cap, added to its message when given
    (build-time weights have their own caps and say which)."""

    max_bytes: int
    deadline: float
    what: str = "input limit"
    size_setting: str = ""
    deadline_setting: str = ""

    def too_large(self, shown: str) -> str:
        return f"{shown} is larger than the {self.max_bytes}-byte {self.what}" + _named(self.size_setting)

    def too_slow(self, shown: str) -> str:
        return f"{shown} did not arrive within {self.deadline:g} s" + _named(self.deadline_setting)


def _named(setting: str) -> str:
    return f" ({setting})" if setting else ""


async def download(client: Any, url: str, dest: str | os.PathLike[str], *, limits: FetchLimits | None = None,
                   headers: dict[str, str] | None = None, on_chunk: Callable[[int, int | None], None] | None = None,
                   shown: str | None = None) -> Any:
    """Stream an http(s) URL to ``dest`` under the limits: the size cap (on Content-Length and
    while streaming), connect/read timeouts, a deadline for the whole download (headers
    included: the whole fetch is under one ``wait_for``, so a server trickling bytes cannot
    outlast it), redirects only to http(s). Every failure is an InputFileError saying why.

    ``headers`` are added to the request, ``on_chunk(n, content_length)`` is called per chunk
    written, ``shown`` is how messages name the URL (default: the URL). Returns the (closed)
    response, whose status and headers the caller may read; a 304 writes nothing."""
    limits = limits or FetchLimits(MAX_INPUT_BYTES, FETCH_DEADLINE)
    shown = url if shown is None else shown
    try:
        return await asyncio.wait_for(_stream(client, url, dest, limits, headers or {}, on_chunk, shown),
                                      limits.deadline)
    except asyncio.TimeoutError:
        raise InputFileError(limits.too_slow(shown)) from None


async def _stream(client: Any, url: str, dest: str | os.PathLike[str], limits: FetchLimits,
                  extra_headers: dict[str, str], on_chunk: Callable[[int, int | None], None] | None,
                  shown: str) -> Any:
    import httpx

    headers = {"User-Agent": os.environ["COG_USER_AGENT"]} if os.environ.get("COG_USER_AGENT") else {}
    headers.update(extra_headers)
    try:
        async with client.stream("GET", url, headers=headers) as resp:
            if resp.status_code >= 400:
                kind = "Client" if resp.status_code < 500 else "Server"
                raise InputFileError(f"{resp.status_code} {kind} Error: {resp.reason_phrase} for url: {shown}")
            if resp.status_code == 304:  # the caller's cached copy is current
                return resp
            length = resp.headers.get("content-length", "")
            total = int(length) if length.isdigit() else None
            if total is not None and total > limits.max_bytes:  # refused before a byte is stored
                raise InputFileError(limits.too_large(shown))
            size = 0
            with open(dest, "wb") as f:
                async for chunk in resp.aiter_bytes(CHUNK_BYTES):
                    size += len(chunk)
                    if size > limits.max_bytes:  # Content-Length may be missing or understated
                        raise InputFileError(limits.too_large(shown))
                    f.write(chunk)
                    if on_chunk is not None:
                        on_chunk(len(chunk), total)
            return resp
    except httpx.TimeoutException as exc:
        raise InputFileError(f"timed out after {FETCH_TIMEOUT:g} s fetching {shown}") from exc
    except httpx.UnsupportedProtocol as exc:  # a redirect to file://, ftp://, ...
        raise InputFileError(f"could not fetch {shown}: it redirects to a URL that is not http(s)") from exc
    except httpx.TooManyRedirects as exc:
        raise InputFileError(f"could not fetch {shown}: more than {MAX_REDIRECTS} redirects") from exc
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, OSError) as exc:
        # ValueError covers URLs the client cannot even parse (bad IDNA host names, ...)
        raise InputFileError(f"could not fetch {shown}: {_redacted_error(exc, url, shown)}") from exc


def _redacted_error(exc: BaseException, url: str, shown: str) -> str:
    # httpx puts the request URL in some messages; keep the caller's redaction there too.
    return str(exc).replace(url, shown)


def fetch_to(url: str, dest: str | os.PathLike[str]) -> None:
    """Blocking fetch of an http(s) or data URL to ``dest`` (for URLPath.convert), under the
    same limits as ``download``. Runs its own event loop in a thread: the caller may be
    inside one (an async predictor)."""
    if url.startswith("data:"):
        _, data = decode_data_url(url)
        Path(dest).write_bytes(data)
        return
    if urllib.parse.urlparse(url).scheme.lower() not in FETCHED_SCHEMES:
        raise InputFileError(f"{url[:100]!r}: only http, https and data URLs are fetched")

    async def run() -> None:
        async with fetch_client() as client:
            await download(client, url, dest)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cogkit-fetch") as pool:
        pool.submit(asyncio.run, run()).result()
