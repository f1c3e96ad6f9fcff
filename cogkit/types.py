"""The value types a predictor declares: files, secrets, iterators and structured outputs.

Same names and behaviour as Cog's SDK, so an unchanged Cog predictor runs on them.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import shutil
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Path(pathlib.PosixPath):
    """A local file. URL and data-URL inputs arrive downloaded to a temp file."""


class File(io.IOBase):
    """Deprecated file-like input/output (use Path). Inputs arrive as a readable file object."""


class URLFile(io.IOBase):
    """A file-like input that came from an http(s) URL.

    cogkit downloads the URL before predict() runs (so download errors fail fast and
    are reported as input errors); this object reads the downloaded copy and keeps the
    original URL in ``url`` and the URL's basename in ``name``.
    """

    def __init__(self, url: str, local_path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.url = url
        self.name = os.path.basename(urllib.parse.urlparse(url).path) or "file"
        self._local_path = os.fspath(local_path) if local_path is not None else None
        self._fh: io.BufferedReader | None = None

    def _file(self) -> io.BufferedReader:
        if self._fh is None:
            if self._local_path is None:
                raise OSError(f"URLFile {self.url!r} has not been downloaded")
            self._fh = open(self._local_path, "rb")
        return self._fh

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._file().read(size)

    def readline(self, size: int = -1) -> bytes:  # type: ignore[override]
        return self._file().readline(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file().seek(offset, whence)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._file().tell()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        super().close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (URLFile, (self.url, self._local_path))


class URLPath:
    """A path whose bytes still have to be fetched; ``convert()`` makes it a local Path."""

    def __init__(self, source: str, filename: str, fileobj: io.IOBase | None = None) -> None:
        self.source = source
        self.filename = filename
        self.fileobj = fileobj
        self._path: Path | None = None

    def convert(self) -> Path:
        if self._path is None:
            from cogkit import files  # deferred: files pulls in httpx

            suffix = os.path.splitext(self.filename)[1]
            fd, dest = tempfile.mkstemp(suffix=suffix)
            os.close(fd)
            if self.fileobj is not None:
                with open(dest, "wb") as out:
                    shutil.copyfileobj(self.fileobj, out)  # type: ignore[arg-type]
            else:
                files.fetch_to(self.source, dest)
            self._path = Path(dest)
        return self._path

    def unlink(self, missing_ok: bool = False) -> None:
        if self._path is not None:
            self._path.unlink(missing_ok=missing_ok)

    def __fspath__(self) -> str:
        return os.fspath(self.convert())

    def __str__(self) -> str:
        return self.source


@dataclasses.dataclass(frozen=True)
class Secret:
    """A string input that is never shown: ``str()`` and ``repr()`` mask it."""

    secret_value: str | None = None

    def get_secret_value(self) -> str | None:
        return self.secret_value

    def __str__(self) -> str:
        return "**********" if self.secret_value is not None else ""

    def __repr__(self) -> str:
        return f"Secret({str(self)!r})"


class ConcatenateIterator(Iterator[T], Generic[T]):
    """An iterator output whose items are meant to be joined (token streaming)."""

    def __next__(self) -> T:  # pragma: no cover - marker type, never instantiated
        raise StopIteration


class AsyncConcatenateIterator(AsyncIterator[T], Generic[T]):
    """Async twin of ConcatenateIterator."""

    async def __anext__(self) -> T:  # pragma: no cover - marker type, never instantiated
        raise StopAsyncIteration


class BaseModel:
    """Base class of structured outputs.

    As in Cog 0.23, subclasses become keyword-only dataclasses (no pydantic), so
    ``Output(text="a", file=p)`` works and every annotated field is a property of
    the output schema.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__dataclass_fields__" not in cls.__dict__:
            dataclasses.dataclass(kw_only=True)(cls)


class _Opaque:
    """Marker for ``Annotated[T, Opaque]``: the value is passed through as a JSON object."""

    def __repr__(self) -> str:
        return "Opaque"


Opaque = _Opaque()

__all__ = [
    "AsyncConcatenateIterator",
    "BaseModel",
    "ConcatenateIterator",
    "File",
    "Opaque",
    "Path",
    "Secret",
    "URLFile",
    "URLPath",
]
