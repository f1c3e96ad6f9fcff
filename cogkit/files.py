"""Files in and out of predictions, shared by the CLI and the server.

Inputs: values of file-typed inputs (``format: uri`` in the schema) that are http(s)
or data URLs are fetched into a per-prediction work folder before the worker sees
them: streamed to disk under a size cap (``COGKIT_MAX_INPUT_BYTES``, 1 GiB), with
connect/read timeouts and a deadline for the whole download, redirects only to http(s),
and a file name made safe from the URL. A ``file://`` URL is refused with an error
naming the input; anything else (a plain path, ``ftp://...``) is passed through as a path,
never dereferenced, as Cog 0.23.1 does (the CLI's local files). Outputs: ``data_url`` encodes
a file the predictor returned (the server); the CLI writes them to disk instead
(cogkit.cli.outputs), with names made by ``safe_filename``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import pybase64

from cogkit.exceptions import CogkitError
from cogkit.openapi import input_schema
from cogkit.worker.protocol import FileInput

# Limits for fetched inputs; overridable per deployment (COGKIT_MAX_INPUT_FILE_BYTES is the
# older name of the size cap).
MAX_INPUT_BYTES = int(os.environ.get("COGKIT_MAX_INPUT_BYTES") or os.environ.get("COGKIT_MAX_INPUT_FILE_BYTES")
                      or str(1 << 30))
FETCH_TIMEOUT = float(os.environ.get("COGKIT_INPUT_FETCH_TIMEOUT", "10"))  # connect, and each read
FETCH_DEADLINE = float(os.environ.get("COGKIT_INPUT_FETCH_DEADLINE", "300"))  # the whole download
MAX_REDIRECTS = 5
FETCHED_SCHEMES = ("http", "https")
_CHUNK = 1 << 20
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
    the list index) once ``prepare_inputs`` knows it."""

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


# --------------------------------------------------------------------------- inputs


def file_inputs(openapi_doc: dict[str, Any], mode: str = "predict") -> dict[str, bool]:
    """Names of file-typed inputs -> whether the input is a list of files."""
    comp = input_schema(openapi_doc, mode)
    out: dict[str, bool] = {}
    for name, prop in comp.get("properties", {}).items():
        if prop.get("format") == "uri":
            out[name] = False
        elif prop.get("type") == "array" and (prop.get("items") or {}).get("format") == "uri":
            out[name] = True
    return out


def _new_slot(workdir: str) -> str:
    # One sub-folder per file keeps the original names without collisions.
    return tempfile.mkdtemp(dir=workdir, prefix="in-")


def _write_data_url(value: str, workdir: str) -> FileInput:
    mime, data = decode_data_url(value)
    dest = os.path.join(_new_slot(workdir), "file" + extension_for(mime))
    with open(dest, "wb") as f:
        f.write(data)
    return FileInput(path=dest, source=value, kind="data")


def _client() -> Any:
    import httpx

    return httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True, max_redirects=MAX_REDIRECTS)


async def _download(client: Any, url: str, workdir: str) -> FileInput:
    try:
        return await asyncio.wait_for(_stream_to_disk(client, url, workdir), FETCH_DEADLINE)
    except asyncio.TimeoutError:
        raise InputFileError(f"{url} did not arrive within {FETCH_DEADLINE:g} s") from None


async def _stream_to_disk(client: Any, url: str, workdir: str) -> FileInput:
    import httpx

    dest = os.path.join(_new_slot(workdir), filename_from_url(url))
    headers = {"User-Agent": os.environ["COG_USER_AGENT"]} if os.environ.get("COG_USER_AGENT") else {}
    try:
        async with client.stream("GET", url, headers=headers) as resp:
            if resp.status_code >= 400:
                kind = "Client" if resp.status_code < 500 else "Server"
                raise InputFileError(f"{resp.status_code} {kind} Error: {resp.reason_phrase} for url: {url}")
            length = resp.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_INPUT_BYTES:  # refused before a byte is stored
                raise InputFileError(f"{url} is larger than the {MAX_INPUT_BYTES}-byte input limit")
            size = 0
            with open(dest, "wb") as f:
                async for chunk in resp.aiter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > MAX_INPUT_BYTES:
                        raise InputFileError(f"{url} is larger than the {MAX_INPUT_BYTES}-byte input limit")
                    f.write(chunk)
    except httpx.TimeoutException as exc:
        raise InputFileError(f"timed out after {FETCH_TIMEOUT:g} s fetching {url}") from exc
    except httpx.UnsupportedProtocol as exc:  # a redirect to file://, ftp://, ...
        raise InputFileError(f"could not fetch {url}: it redirects to a URL that is not http(s)") from exc
    except httpx.TooManyRedirects as exc:
        raise InputFileError(f"could not fetch {url}: more than {MAX_REDIRECTS} redirects") from exc
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, OSError) as exc:
        # ValueError covers URLs the client cannot even parse (bad IDNA host names, ...)
        raise InputFileError(f"could not fetch {url}: {exc}") from exc
    return FileInput(path=dest, source=url, kind="http")


async def _prepare_one(value: Any, workdir: str, client_box: list[Any]) -> Any:
    if not isinstance(value, str):
        return value
    if value.startswith("data:"):
        return _write_data_url(value, workdir)
    scheme = urllib.parse.urlparse(value).scheme.lower()
    if scheme in FETCHED_SCHEMES:
        if not client_box:
            client_box.append(_client())
        return await _download(client_box[0], value, workdir)
    if scheme == "file":  # other schemes pass through as paths, as in Cog 0.23.1 (its goldens)
        raise InputFileError("file: URLs are not allowed (only http, https and data URLs are fetched)")
    return FileInput(path=value, source=value, kind="local")


async def _prepare_named(name: str, index: int | None, value: Any, workdir: str, client_box: list[Any]) -> Any:
    try:
        return await _prepare_one(value, workdir, client_box)
    except InputFileError as exc:
        exc.loc = [name] if index is None else [name, index]
        raise


async def prepare_inputs(
    inputs: dict[str, Any], openapi_doc: dict[str, Any], workdir: str | os.PathLike[str], mode: str = "predict"
) -> dict[str, Any]:
    """Replace the file inputs in ``inputs`` by FileInput markers, fetching URLs in parallel.

    Raises InputFileError when a URL cannot be fetched. The caller owns ``workdir`` and
    removes it after the prediction (``remove_workdir``).
    """
    fields = file_inputs(openapi_doc, mode)
    todo = [(n, v) for n, v in inputs.items() if n in fields and v is not None]
    if not todo:
        return inputs
    workdir = os.fspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    client_box: list[Any] = []
    out = dict(inputs)
    try:
        jobs: list[tuple[str, int | None, Any]] = []
        for name, value in todo:
            if isinstance(value, list):
                jobs.extend((name, i, v) for i, v in enumerate(value))
                out[name] = list(value)
            else:
                jobs.append((name, None, value))
        tasks = [asyncio.ensure_future(_prepare_named(name, index, v, workdir, client_box)) for name, index, v in jobs]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            # One failed (or we were canceled): stop the other downloads before the
            # caller removes their folder, and collect their errors.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for (name, index, _), result in zip(jobs, results):
            if index is None:
                out[name] = result
            else:
                out[name][index] = result
    finally:
        if client_box:
            await client_box[0].aclose()
    return out


def remove_workdir(workdir: str | os.PathLike[str]) -> None:
    shutil.rmtree(workdir, ignore_errors=True)


def fetch_to(url: str, dest: str | os.PathLike[str]) -> None:
    """Blocking fetch of an http(s) or data URL to ``dest`` (for URLPath.convert)."""
    if url.startswith("data:"):
        _, data = decode_data_url(url)
        Path(dest).write_bytes(data)
        return
    import httpx

    if urllib.parse.urlparse(url).scheme.lower() not in FETCHED_SCHEMES:
        raise InputFileError(f"{url[:100]!r}: only http, https and data URLs are fetched")
    with httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=True, max_redirects=MAX_REDIRECTS) as client:
        with client.stream("GET", url) as resp:
            if resp.status_code >= 400:
                raise InputFileError(f"{resp.status_code} Error: {resp.reason_phrase} for url: {url}")
            size = 0
            with open(dest, "wb") as f:
                for chunk in resp.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > MAX_INPUT_BYTES:
                        raise InputFileError(f"{url} is larger than the {MAX_INPUT_BYTES}-byte input limit")
                    f.write(chunk)
