"""Downloading an http(s) weights source at build time: size- and time-capped, cached.

Weights are far larger than prediction inputs, so the caps are their own
(``COGKIT_MAX_WEIGHTS_BYTES``, default 200 GiB; ``COGKIT_WEIGHTS_FETCH_DEADLINE``, default
2 h for one file); connect/read timeouts and redirects are the input fetch's
(:mod:`cogkit.files`, whose ``download`` does the fetch). A download is kept in the
project's ``.cog/weights-cache/<hash of the URL>/data/<name>``, beside its record
``meta.json`` (the URL redacted: no credentials on disk), and revalidated with the server's ETag / Last-Modified, so a rebuild (a code change) does not
fetch gigabytes again. A progress bar is drawn on stderr when it is a terminal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from cogkit.files import FETCHED_SCHEMES, FetchLimits, InputFileError, download, fetch_client, filename_from_url, \
    redact_url

SIZE_SETTING = "COGKIT_MAX_WEIGHTS_BYTES"
DEADLINE_SETTING = "COGKIT_WEIGHTS_FETCH_DEADLINE"
DEFAULT_MAX_BYTES = 200 << 30
DEFAULT_DEADLINE = 7200.0


class WeightsFetchError(Exception):
    """A weights URL could not be fetched or kept; the message says why (the caller adds the field)."""


def limits() -> FetchLimits:
    """The caps, read from the environment when a download starts (a bad value fails that
    build with a message naming the variable, not every import)."""
    return FetchLimits(int(_setting(SIZE_SETTING, DEFAULT_MAX_BYTES, int)),
                       _setting(DEADLINE_SETTING, DEFAULT_DEADLINE, float),
                       what="limit", size_setting=SIZE_SETTING, deadline_setting=DEADLINE_SETTING)


def _setting(name: str, default: float, kind: type) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not value > 0:
        unit = "a whole number of bytes" if kind is int else "a number of seconds"
        raise WeightsFetchError(f"{name}={raw!r} must be {unit} above 0")
    return value


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
    caps = limits()
    # The key hashes the whole URL (another signature may be another file); only the
    # redacted URL is written down.
    slot = cache_dir / hashlib.sha256(url.encode()).hexdigest()[:24]
    name = filename_from_url(url)
    # The data lives in data/, the record beside it: no URL's file name can overwrite it.
    dest = slot / "data" / name
    meta_path = slot / "meta.json"
    partial = slot / "download.partial"
    meta = _read_meta(meta_path, dest)
    headers = _validators(meta)
    _disk(lambda: dest.parent.mkdir(parents=True, exist_ok=True), "create", dest.parent)
    try:
        resp = _download(url, partial, caps, headers, name, live)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if resp.status_code == 304:
        partial.unlink(missing_ok=True)
        if headers:
            return dest, True
        raise WeightsFetchError(f"{redact_url(url)}: 304 Not Modified for a request without a cached copy")
    _disk(lambda: os.replace(partial, dest), "write", dest)
    record = {"url": redact_url(url), "size": dest.stat().st_size,
              **{k: v for k, v in (("etag", resp.headers.get("etag")),
                                   ("last_modified", resp.headers.get("last-modified"))) if v}}
    _disk(lambda: meta_path.write_text(json.dumps(record)), "write", meta_path)
    return dest, False


def _validators(meta: dict[str, Any]) -> dict[str, str]:
    headers = {}
    if meta.get("etag"):
        headers["If-None-Match"] = meta["etag"]
    if meta.get("last_modified"):
        headers["If-Modified-Since"] = meta["last_modified"]
    return headers


def _disk(action: Any, verb: str, path: Path) -> None:
    """Run a file operation; a disk error (full, read-only, permissions) becomes a message."""
    try:
        action()
    except OSError as exc:
        raise WeightsFetchError(f"cannot {verb} {path}: {exc.strerror or exc}") from None


def _read_meta(meta_path: Path, dest: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text())
        # A cached copy counts only if it is whole.
        return meta if dest.is_file() and dest.stat().st_size == meta.get("size") else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _download(url: str, partial: Path, caps: FetchLimits, headers: dict[str, str], label: str, live: bool) -> Any:
    """files.download (one deadline over the whole fetch) into ``partial``, with a progress
    bar. Its own event loop in a thread: the caller may be inside one."""
    bar = Progress(label, live)

    def on_chunk(n: int, total: int | None) -> None:
        bar.total(total)
        bar.advance(n)

    async def run() -> Any:
        async with fetch_client() as client:
            return await download(client, url, partial, limits=caps, headers=headers, on_chunk=on_chunk,
                                  shown=redact_url(url))

    try:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cogkit-weights") as pool:
            return pool.submit(asyncio.run, run()).result()
    except InputFileError as exc:
        raise WeightsFetchError(str(exc)) from None
    finally:
        bar.close()
