"""Where a model's weights come from, resolved to a local path.

``resolve_weights(weights, default=...)`` accepts, in this order of precedence,
the ``setup(weights)`` argument, the COG_WEIGHTS environment variable, then the
model's default, each being one of:

* a local file or folder: used in place (``extract_local_tar`` unpacks a local
  tar once into the cache, for callers that want its contents);
* an http(s) URL to a ``.tar`` (extracted), ``.tar.gz``/``.tgz`` or a single file
  (``.safetensors`` and others): downloaded once into the cache, in parallel
  ranged chunks with progress lines, size-checked, sha256-checked when the URL
  ends in ``#sha256=<hex>`` (or ``sha256=`` is passed), ``.safetensors`` headers
  validated; a cache hit needs no network;
* a Hugging Face repo id (``owner/name`` or ``owner/name@revision``, or
  ``hf://owner/name``): through huggingface_hub's cache; with HF_HUB_OFFLINE=1
  only the cache is consulted.

Anything unreachable fails at once with a WeightsError saying what was tried.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import pathlib
import re
import shutil
import struct
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from cogkit import progress as _progress
from cogkit.files import redact_url
from cogkit.ml.env import env_flag
from cogkit.ml.logs import log

_REPO_ID = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@([\w./-]+))?$")
_MARKER = ".cogkit-complete.json"
MiB = 1024 * 1024


class WeightsError(RuntimeError):
    """Weights that could not be found, fetched or verified."""


def default_cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("COGKIT_WEIGHTS_CACHE") or pathlib.Path.home() / ".cache" / "cogkit" / "weights")


def _as_source(weights: Any) -> str | None:
    if weights is None:
        return None
    for attr in ("url", "source"):  # URLFile / URLPath keep the original URL
        value = getattr(weights, attr, None)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return value
    if isinstance(weights, (str, os.PathLike)):
        text = os.fspath(weights).strip()
        return text or None
    raise WeightsError(f"weights: unsupported value of type {type(weights).__name__}")


# A diffusers repo on the Hub often holds the same weights several times (fp32 and fp16
# safetensors, .bin, ONNX, ...): fetch the configs plus one copy of the weights.
FP16_PATTERNS = ["*.json", "*.txt", "*.model", "*.fp16.safetensors"]
PLAIN_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]


def diffusers_variant(folder: str | os.PathLike[str]) -> str | None:
    """"fp16" when the folder's weights are stored as ``*.fp16.safetensors`` (the
    diffusers "variant" to pass to from_pretrained), else None."""
    root = pathlib.Path(folder)
    files = list(root.glob("*/*.safetensors")) + list(root.glob("*.safetensors"))
    fp16 = [f for f in files if f.name.endswith(".fp16.safetensors")]
    return "fp16" if fp16 and len(fp16) * 2 >= len(files) else None


def resolve_weights(
    weights: Any = None,
    default: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    allow_patterns: list[str] | None = None,
    one_copy: bool = False,
) -> pathlib.Path:
    """A local path holding the weights (see the module docstring for the sources).

    ``one_copy``: for a Hugging Face repo, fetch configs and the fp16 safetensors
    only (or the plain safetensors when the repo has no fp16 ones), not every
    format the repo holds; combine with ``diffusers_variant()`` when loading.
    """
    source = _as_source(weights) or os.environ.get("COG_WEIGHTS", "").strip() or default
    if not source:
        raise WeightsError("weights: none given (pass setup(weights), set COG_WEIGHTS, or give the model a default)")
    if source.startswith(("http://", "https://")):
        return download_url(source, cache_dir or default_cache_dir(), sha256=sha256)
    local = pathlib.Path(os.path.expanduser(source))
    if local.exists():
        log(f"[weights] using local {local}")
        return local
    m = _REPO_ID.match(source)
    if m and not source.startswith(("/", ".", "~")):
        if one_copy and allow_patterns is None:
            path = hf_snapshot(m.group(1), m.group(2), allow_patterns=FP16_PATTERNS)
            if any(path.rglob("*.safetensors")):
                return path
            allow_patterns = PLAIN_PATTERNS
        return hf_snapshot(m.group(1), m.group(2), allow_patterns=allow_patterns)
    raise WeightsError(
        f"weights: {source!r} is not an existing local path, an http(s) URL or a Hugging Face repo id (owner/name)"
    )


def resolve_optional(
    root: pathlib.Path | None, folder: str, env_var: str, default: str, *, tag: str, label: str | None = None
) -> pathlib.Path | None:
    """An optional extra a model runs without (a refiner, a safety checker, ...):
    ``<root>/<folder>`` when it exists, else the source in ``env_var``, else ``default``
    (a Hugging Face id: with HF_HUB_OFFLINE=1 only a cached copy; one copy of the
    weights is fetched). None, logged as ``[tag] label: not available (why)``, when
    none resolves."""
    if root is not None and (root / folder).exists():
        return root / folder
    source = os.environ.get(env_var, "").strip() or default
    try:
        return resolve_weights(source, one_copy=True)
    except WeightsError as exc:
        log(f"[{tag}] {label or folder}: not available ({exc})")
        return None


def hf_snapshot(repo_id: str, revision: str | None = None, *, allow_patterns: list[str] | None = None) -> pathlib.Path:
    """A repo's snapshot folder from huggingface_hub's cache, downloading it unless offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = bool(env_flag("HF_HUB_OFFLINE", default=False))
    try:
        path = snapshot_download(
            repo_id, revision=revision, local_files_only=offline, allow_patterns=allow_patterns
        )
    except LocalEntryNotFoundError as exc:
        if offline:
            raise WeightsError(
                f"weights: Hugging Face repo {repo_id!r} is not in the local cache and HF_HUB_OFFLINE=1 "
                f"forbids downloading it (cache: {os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'})"
            ) from None
        raise WeightsError(f"weights: cannot reach the Hugging Face Hub for {repo_id!r}: {exc}") from None
    except Exception as exc:  # auth, missing repo, network: one clear message
        raise WeightsError(f"weights: Hugging Face repo {repo_id!r} could not be fetched: {type(exc).__name__}: {exc}") from None
    log(f"[weights] using Hugging Face snapshot {repo_id} at {path}")
    return pathlib.Path(path)


# --------------------------------------------------------------------------------------------
# URL downloads


def _cache_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _filename(url: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return urllib.parse.unquote(name) or "weights"


def is_tar(name: str) -> bool:
    return name.endswith((".tar", ".tar.gz", ".tgz"))


def download_url(
    url: str,
    cache_dir: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    workers: int = 8,
    chunk_size: int = 16 * MiB,
    timeout: float = 30.0,
) -> pathlib.Path:
    """Download ``url`` once into ``cache_dir`` and return the file (or the extracted
    folder for a tar). Concurrent callers of the same URL each download into their
    own temp folder; the first to finish wins and the others use its copy."""
    base, _, fragment = url.partition("#")
    frag = urllib.parse.parse_qs(fragment)
    sha256 = (sha256 or (frag.get("sha256") or [None])[0] or "").lower() or None
    cache = pathlib.Path(cache_dir)
    dest = cache / _cache_key(base)
    hit = _cached(dest)
    if hit is not None:
        log(f"[weights] cache hit for {redact_url(base)}: {hit}")
        return hit
    name = _filename(base)
    with _staging(dest) as tmp:
        t0 = time.perf_counter()
        size = _fetch(base, tmp / name, workers=workers, chunk_size=chunk_size, timeout=timeout)
        elapsed = time.perf_counter() - t0
        log(f"[weights] downloaded {name}: {size / MiB:.1f} MiB in {elapsed:.2f}s")
        if sha256:
            digest = _sha256_file(tmp / name)
            if digest != sha256:
                raise WeightsError(f"weights: sha256 mismatch for {redact_url(base)}: expected {sha256}, got {digest}")
        if is_tar(name):
            relative = _extract(tmp / name, tmp / "contents")
            (tmp / name).unlink()
        else:
            if name.endswith(".safetensors"):
                check_safetensors(tmp / name)
            relative = name
        (tmp / _MARKER).write_text(json.dumps({"url": redact_url(base), "path": relative, "bytes": size}))
    result = _cached(dest)
    assert result is not None
    return result


def extract_local_tar(archive: pathlib.Path, cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """A local ``.tar``/``.tar.gz`` extracted once into the cache (keyed by its path,
    size and mtime, so a rewritten archive is extracted again); returns the folder."""
    st = archive.stat()
    cache = pathlib.Path(cache_dir or default_cache_dir())
    dest = cache / _cache_key(f"{archive.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    hit = _cached(dest)
    if hit is not None:
        return hit
    with _staging(dest) as tmp:
        relative = _extract(archive, tmp / "contents")
        (tmp / _MARKER).write_text(json.dumps({"path": relative, "source": str(archive)}))
    result = _cached(dest)
    assert result is not None
    return result


@contextlib.contextmanager
def _staging(dest: pathlib.Path) -> Iterator[pathlib.Path]:
    """A temp folder beside the cache entry ``dest`` that becomes ``dest`` when the block
    succeeds, and is removed when it fails. Concurrent callers each fill their own;
    the first to finish wins and the others use its copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{dest.name}.part-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        try:
            os.rename(tmp, dest)
        except OSError:  # another process finished first: use its copy
            if _cached(dest) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cached(dest: pathlib.Path) -> pathlib.Path | None:
    marker = dest / _MARKER
    if not marker.is_file():
        return None
    try:
        relative = json.loads(marker.read_text())["path"]
    except (ValueError, KeyError):
        return None
    path = dest / relative
    return path if path.exists() else None


def _client(timeout: float) -> Any:
    import httpx

    return httpx.Client(follow_redirects=True, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))


def _probe(client: Any, url: str) -> tuple[int | None, bool]:
    """(size, supports ranges) from a one-byte ranged GET (works where HEAD is refused)."""
    with client.stream("GET", url, headers={"Range": "bytes=0-0"}) as r:
        if r.status_code == 206:
            total = r.headers.get("content-range", "").rpartition("/")[2]
            return (int(total) if total.isdigit() else None), True
        if r.status_code == 200:
            length = r.headers.get("content-length")
            return (int(length) if length and length.isdigit() else None), False
        raise WeightsError(f"weights: {redact_url(url)} answered HTTP {r.status_code}")


def _fetch(url: str, path: pathlib.Path, *, workers: int, chunk_size: int, timeout: float) -> int:
    import httpx

    label = f"downloading {path.name} MiB".replace(":", "")
    try:
        with _client(timeout) as client:
            size, ranges = _probe(client, url)
            if size is not None and ranges and size > chunk_size and workers > 1:
                _fetch_ranges(client, url, path, size, workers=workers, chunk_size=chunk_size, label=label)
            else:
                _fetch_stream(client, url, path, size, label=label)
    except WeightsError:
        raise
    except httpx.HTTPError as exc:
        raise WeightsError(f"weights: cannot download {redact_url(url)}: {type(exc).__name__}: {exc}") from None
    got = path.stat().st_size
    if size is not None and got != size:
        raise WeightsError(f"weights: {redact_url(url)} is truncated: got {got} of {size} bytes")
    return got


class _Progress:
    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self.done, self.lock = label, total, 0, threading.Lock()
        self.last = -1

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            if self.total:
                mib, total = self.done // MiB, max(1, -(-self.total // MiB))
                if mib != self.last or self.done == self.total:
                    self.last = mib
                    _progress.report(self.label, min(total, -(-self.done // MiB)), total)


def _fetch_stream(client: Any, url: str, path: pathlib.Path, size: int | None, *, label: str) -> None:
    bar = _Progress(label, size)
    with client.stream("GET", url) as r, open(path, "wb") as out:
        if r.status_code != 200:
            raise WeightsError(f"weights: {redact_url(url)} answered HTTP {r.status_code}")
        for block in r.iter_bytes(1 * MiB):
            out.write(block)
            bar.add(len(block))


def _fetch_ranges(
    client: Any, url: str, path: pathlib.Path, size: int, *, workers: int, chunk_size: int, label: str
) -> None:
    bar = _Progress(label, size)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)

        def one(start: int) -> None:
            end = min(size, start + chunk_size) - 1
            for attempt in range(3):
                try:
                    offset = start
                    with client.stream("GET", url, headers={"Range": f"bytes={start}-{end}"}) as r:
                        if r.status_code != 206:
                            raise WeightsError(f"weights: {redact_url(url)} answered HTTP {r.status_code} to a range request")
                        for block in r.iter_bytes(1 * MiB):
                            if offset + len(block) > end + 1:
                                raise WeightsError(f"weights: {redact_url(url)} sent more bytes than asked for")
                            os.pwrite(fd, block, offset)
                            offset += len(block)
                    if offset != end + 1:
                        raise WeightsError(f"weights: chunk {start}-{end} of {redact_url(url)} is short ({offset - start} bytes)")
                    bar.add(end + 1 - start)
                    return
                except WeightsError:
                    raise
                except Exception:
                    if attempt == 2:
                        raise
                    time.sleep(0.2 * (attempt + 1))

        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(one, start) for start in range(0, size, chunk_size)]
            for fut in concurrent.futures.as_completed(futures):
                fut.result()
    finally:
        os.close(fd)


def _sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            h.update(block)
    return h.hexdigest()


def _extract(archive: pathlib.Path, into: pathlib.Path) -> str:
    """Extract safely (no absolute paths or links outside); returns the folder to use,
    relative to the archive's folder: the single top-level folder when there is one."""
    into.mkdir()
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, filter="data")
            else:  # Python < 3.10.12: check members ourselves
                for member in tar.getmembers():
                    target = (into / member.name).resolve()
                    if not str(target).startswith(str(into.resolve())) or member.issym() or member.islnk():
                        raise WeightsError(f"weights: unsafe path in archive: {member.name}")
                tar.extractall(into)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise WeightsError(f"weights: {archive.name} is not a valid tar archive: {exc}") from None
    entries = [p for p in into.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return f"{into.name}/{entries[0].name}"
    return into.name


def check_safetensors(path: pathlib.Path) -> None:
    """Cheap integrity check: the JSON header parses and every tensor fits the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise WeightsError(f"weights: {path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 * MiB:
            raise WeightsError(f"weights: {path.name} has a corrupt safetensors header")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise WeightsError(f"weights: {path.name} has a corrupt safetensors header") from None
    data = size - 8 - n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        end = info.get("data_offsets", [0, 0])[1]
        if end > data:
            raise WeightsError(f"weights: {path.name} is truncated (tensor {key!r} ends past the file)")
