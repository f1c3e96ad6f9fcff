"""The parent side of file inputs: each file-typed input (``Interface.file_inputs``) that is
an http(s) or data URL is fetched into the prediction's work folder before the worker sees
it, and becomes a ``FileInput`` marker.

Downloads are streamed to disk under a size cap (``COGKIT_MAX_INPUT_BYTES``, 1 GiB), with
connect/read timeouts and a deadline for the whole download, redirects only to http(s), and
a file name made safe from the URL (``cogkit.files`` holds the limits and the codecs). A
``file://`` URL is refused with an error naming the input; anything else (a plain path,
``ftp://...``) is passed through as a path, never dereferenced, as Cog 0.23.1 does (the
CLI's local files).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Collection
from typing import Any

from cogkit import files  # the limits are read at call time: a deployment (or a test) may change them
from cogkit.files import InputFileError, decode_data_url, extension_for, filename_from_url
from cogkit.worker.protocol import FileInput


def _new_slot(workdir: str) -> str:
    # One sub-folder per file keeps the original names without collisions.
    return tempfile.mkdtemp(dir=workdir, prefix="in-")


def _write_data_url(value: str, workdir: str) -> FileInput:
    mime, data = decode_data_url(value)
    dest = os.path.join(_new_slot(workdir), "file" + extension_for(mime))
    with open(dest, "wb") as f:
        f.write(data)
    return FileInput(path=dest, source=value, kind="data")


async def _download(client: Any, url: str, workdir: str) -> FileInput:
    dest = os.path.join(_new_slot(workdir), filename_from_url(url))
    await files.download(client, url, dest)
    return FileInput(path=dest, source=url, kind="http")


async def _prepare_one(value: Any, workdir: str, client_box: list[Any]) -> Any:
    if not isinstance(value, str):
        return value
    if value.startswith("data:"):
        return _write_data_url(value, workdir)
    scheme = urllib.parse.urlparse(value).scheme.lower()
    if scheme in files.FETCHED_SCHEMES:
        if not client_box:
            client_box.append(files.fetch_client())
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


async def prepare_inputs(inputs: dict[str, Any], file_fields: Collection[str], workdir: str | os.PathLike[str]) -> dict[str, Any]:
    """Replace the values of ``file_fields`` (``Interface.file_inputs``) in ``inputs`` by
    FileInput markers, fetching URLs in parallel.

    Raises InputFileError when a URL cannot be fetched. The caller owns ``workdir`` and
    removes it after the prediction (``remove_workdir``).
    """
    fields = file_fields
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
