"""Downloading an http(s) weights source at build time: size- and time-capped, cached.

Weights are far larger than prediction inputs, so the caps are their own
(``COGKIT_MAX_WEIGHTS_BYTES``, default 200 GiB; ``COGKIT_WEIGHTS_FETCH_DEADLINE``, default
2 h for one file); connect/read timeouts and redirects are the input fetch's
(:mod:`cogkit.files`). A download is kept in the project's ``.cog/weights-cache/`` and
revalidated with the server's ETag / Last-Modified, so a rebuild (a code change) does not
fetch gigabytes again. A progress bar is drawn on stderr when it is a terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from cogkit.files import FETCH_TIMEOUT, FETCHED_SCHEMES, MAX_REDIRECTS, filename_from_url

MAX_WEIGHTS_BYTES = int(os.environ.get("COGKIT_MAX_WEIGHTS_BYTES") or str(200 << 30))
WEIGHTS_FETCH_DEADLINE = float(os.environ.get("COGKIT_WEIGHTS_FETCH_DEADLINE") or "7200")
_CHUNK = 1 << 20


class WeightsFetchError(Exception):
    """A weights URL could not be fetched; the message says why (the caller adds the field)."""


class Progress:
    """One download's progress bar (rich) on stderr; silent when ``live`` is false."""

    def __init__(self, label: str, live: bool, console: Any = None) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not live:
            return
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress as RichProgress, TextColumn, \
            TimeRemainingColumn, TransferSpeedColumn

        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=console or Console(stderr=True), transient=True)
        self._task = self._bar.add_task(label, total=None)
        self._bar.start()

    def total(self, size: int | None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=size)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def progress_wanted(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def fetch_weights_url(url: str, cache_dir: Path, live: bool = False) -> tuple[Path, bool]:
    """The local copy of ``url`` (downloaded, or the cached one when the server says it is
    unchanged) and whether it came from the cache."""
    if urllib.parse.urlparse(url).scheme.lower() not in FETCHED_SCHEMES:
        raise WeightsFetchError("only http and https URLs are fetched")
    slot = cache_dir / hashlib.sha256(url.encode()).hexdigest()[:24]
    name = filename_from_url(url)
    dest = slot / name
    meta_path = slot / "meta.json"
    meta = _read_meta(meta_path, dest)
    headers = {}
    if meta.get("etag"):
        headers["If-None-Match"] = meta["etag"]
    if meta.get("last_modified"):
        headers["If-Modified-Since"] = meta["last_modified"]
    if os.environ.get("COG_USER_AGENT"):
        headers["User-Agent"] = os.environ["COG_USER_AGENT"]
    slot.mkdir(parents=True, exist_ok=True)
    partial = slot / (name + ".partial")
    try:
        fresh = _stream(url, headers, partial, name, live)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if fresh is None:  # 304: the cached copy is current
        return dest, True
    os.replace(partial, dest)
    meta_path.write_text(json.dumps({"url": url, "size": dest.stat().st_size, **fresh}))
    return dest, False


def _read_meta(meta_path: Path, dest: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {}
    # A cached copy counts only if it is whole.
    return meta if dest.is_file() and dest.stat().st_size == meta.get("size") else {}


def _stream(url: str, headers: dict[str, str], partial: Path, label: str, live: bool) -> dict[str, str] | None:
    """Download into ``partial``; None on 304, else the validators to keep."""
    import httpx

    deadline = time.monotonic() + WEIGHTS_FETCH_DEADLINE
    bar = Progress(label, live)
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=True, max_redirects=MAX_REDIRECTS) as client, \
                client.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 304:
                if "If-None-Match" in headers or "If-Modified-Since" in headers:
                    return None
                raise WeightsFetchError("304 Not Modified for a request without a cached copy")
            if resp.status_code >= 400:
                raise WeightsFetchError(f"{resp.status_code} {resp.reason_phrase}")
            length = resp.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_WEIGHTS_BYTES:  # refused before a byte is stored
                raise WeightsFetchError(f"{int(length)} bytes is over the {MAX_WEIGHTS_BYTES}-byte limit "
                                        "(COGKIT_MAX_WEIGHTS_BYTES)")
            bar.total(int(length) if length.isdigit() else None)
            size = 0
            with open(partial, "wb") as f:
                for chunk in resp.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > MAX_WEIGHTS_BYTES:
                        raise WeightsFetchError(f"over the {MAX_WEIGHTS_BYTES}-byte limit (COGKIT_MAX_WEIGHTS_BYTES)")
                    if time.monotonic() > deadline:
                        raise WeightsFetchError(f"did not arrive within {WEIGHTS_FETCH_DEADLINE:g} s "
                                                "(COGKIT_WEIGHTS_FETCH_DEADLINE)")
                    f.write(chunk)
                    bar.advance(len(chunk))
            return {k: v for k, v in (("etag", resp.headers.get("etag")),
                                      ("last_modified", resp.headers.get("last-modified"))) if v}
    except httpx.TimeoutException:
        raise WeightsFetchError(f"timed out after {FETCH_TIMEOUT:g} s without data") from None
    except httpx.UnsupportedProtocol:  # a redirect to file://, ftp://, ...
        raise WeightsFetchError("it redirects to a URL that is not http(s)") from None
    except httpx.TooManyRedirects:
        raise WeightsFetchError(f"more than {MAX_REDIRECTS} redirects") from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, OSError) as exc:
        raise WeightsFetchError(str(exc) or type(exc).__name__) from None
    finally:
        bar.close()
