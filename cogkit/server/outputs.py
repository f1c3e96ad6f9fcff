"""Turn the worker's output values into what clients receive.

The worker leaves every returned file on disk and puts a ``FileOutput`` marker in
its place, anywhere in the value (a list item, a BaseModel field, a dict value).
Each marker becomes a data URL, or with ``--upload-url`` the URL it was uploaded
to; nested files are uploaded too (Cog 0.23.1 leaves those as data URLs). Files
the worker wrote as temporary copies are deleted once encoded.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from cogkit.server.uploads import Uploader
from cogkit.worker.protocol import FileOutput, find_files, map_files

# Encode files above this size off the event loop, so other requests keep flowing
# (below it, base64 takes ~1 ms: cheaper than a thread hop).
_INLINE_LIMIT = 16 * 1024 * 1024


class OutputEncoder:
    def __init__(self, uploader: Uploader | None = None) -> None:
        self.uploader = uploader

    async def encode(self, value: Any, prediction_id: str | None = None) -> Any:
        """``value`` with every FileOutput replaced by its URL (uploads run in parallel)."""
        files: list[FileOutput] = find_files(value)
        if not files:
            return value
        try:
            if len(files) == 1:  # the common case: no gather, no extra task
                urls = [await self._encode_file(files[0], prediction_id)]
            else:
                urls = await asyncio.gather(*(self._encode_file(f, prediction_id) for f in files))
        finally:
            for f in files:
                f.discard()
        by_id = {id(f): u for f, u in zip(files, urls)}
        return map_files(value, lambda f, _: by_id[id(f)], FileOutput)

    async def _encode_file(self, f: FileOutput, prediction_id: str | None) -> str:
        if self.uploader is not None:
            return await self.uploader.upload(f.path, prediction_id)
        from cogkit.files import data_url

        if os.path.getsize(f.path) <= _INLINE_LIMIT:
            return data_url(f.path)
        return await asyncio.get_running_loop().run_in_executor(None, data_url, f.path)
