"""``--upload-url``: PUT each output file and return where it went.

The file is streamed from disk with its ``Content-Type`` (from the extension) and
``Content-Length``; the output value is the response's ``Location`` header, else
the final request URL, with any query string removed (signed URLs stay private).
Connection errors, 408, 429 and 5xx are retried; a file that cannot be uploaded
fails its prediction rather than silently going missing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

if TYPE_CHECKING:
    import httpx

CHUNK = 1 << 20
RETRIES = 3
REDIRECTS = 5
TIMEOUT = 60.0


class UploadError(Exception):
    pass


def upload_target(base: str, filename: str) -> str:
    if not base.endswith("/"):
        base += "/"
    return base + quote(filename)


def strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


async def _chunks(path: str) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                return
            yield block


class Uploader:
    def __init__(self, base_url: str, client: Callable[[], Awaitable[httpx.AsyncClient]]) -> None:
        self.base_url = base_url
        self._client = client

    async def upload(self, path: str, prediction_id: str | None = None) -> str:
        import httpx

        from cogkit.files import guess_mime

        name = os.path.basename(path)
        size = os.path.getsize(path)
        headers = {"Content-Type": guess_mime(path), "Content-Length": str(size)}
        if prediction_id:
            headers["X-Prediction-ID"] = prediction_id
        client = await self._client()
        url = upload_target(self.base_url, name)
        last_error = ""
        for attempt in range(RETRIES + 1):
            if attempt:
                await asyncio.sleep(0.2 * (2 ** (attempt - 1)))
            try:
                target = url
                for _ in range(REDIRECTS + 1):
                    resp = await client.put(target, content=_chunks(path), headers=headers, timeout=TIMEOUT)
                    location = resp.headers.get("location")
                    if resp.status_code in (301, 302, 303, 307, 308) and location:
                        target = urljoin(target, location)
                        continue
                    break
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code < 300:
                location = resp.headers.get("location")
                return strip_query(urljoin(target, location) if location else target)
            last_error = f"HTTP {resp.status_code}"
            if resp.status_code < 500 and resp.status_code not in (408, 429):
                break
        raise UploadError(f"failed to upload {name} to {strip_query(url)}: {last_error}")
