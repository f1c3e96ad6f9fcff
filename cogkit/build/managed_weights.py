"""cog.yaml ``weights:`` (managed weights), fetched at build time into the build context.

Each entry is staged as ``managed-weights/<name>/`` and copied to its ``target`` folder in
an image layer of its own, just before the code (see :func:`cogkit.build.dockerfile.render`),
so a code change keeps it cached and a push does not send it again.

Sources (``source.uri``): a local path (relative to the project, staying inside it), a
``file://`` URL or absolute path (anywhere on this machine), an ``http(s)://`` URL
(:mod:`cogkit.build.weights_download`), or ``hf://owner/repo[@revision][/path]`` read from
the local Hugging Face cache (never downloaded here). A folder source keeps its layout
under ``target``; a single file lands at ``target/<its name>``. ``include`` / ``exclude``
are glob patterns on the path relative to the source (``*`` also crosses ``/``; a pattern
without ``/`` also matches the file name alone); exclude wins.
"""

from __future__ import annotations

import fnmatch
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cogkit.build.builders import BuildError
from cogkit.build.context import ALWAYS_IGNORED, link_or_copy
from cogkit.build.weights_download import WeightsFetchError, fetch_weights_url
from cogkit.config import Config, WeightsSource
from cogkit.files import redact_url

MANAGED_DIR = "managed-weights"  # in the build context
# Never weights, as in the project file listing: the repository, and cogkit's own folder
# (the weights cache and the build context being staged live in .cog/).
_SKIPPED_DIRS = {".git", ALWAYS_IGNORED}
CACHE_DIR = "weights-cache"  # under the project's .cog/


@dataclass
class StagedWeights:
    name: str
    folder: str  # context folder, e.g. managed-weights/unet
    target: str  # normalized absolute folder in the image
    files: dict[str, int] = field(default_factory=dict)  # relative name -> size
    project_files: set[str] = field(default_factory=set)  # project files it took (kept out of src/)

    @property
    def size(self) -> int:
        return sum(self.files.values())


def check_target(target: str, key: str) -> str:
    """The normalized target folder; refuses the root and any ``..`` (no escaping by path tricks)."""
    path = PurePosixPath(target)
    if not path.is_absolute() or ".." in path.parts:
        raise BuildError(f"{key}: {target!r} must be an absolute path in the container without '..'")
    if str(path) == "/":
        raise BuildError(f"{key}: the root folder cannot be a weights target; name a folder such as /src/weights")
    if any(c in target for c in "\0\n\r"):
        raise BuildError(f"{key}: {target!r} holds a control character")
    return str(path)


def safe_relative(rel: str) -> bool:
    """A file name inside a target: relative, no ``..``, no empty or control parts."""
    path = PurePosixPath(rel)
    return (bool(rel) and not path.is_absolute() and "\\" not in rel
            and all(p not in ("", ".", "..") for p in rel.split("/"))
            and not any(c in rel for c in "\0\n\r"))


def selected(rel: str, include: list[str], exclude: list[str]) -> bool:
    def hit(pattern: str) -> bool:
        pattern = pattern.strip("/")
        return fnmatch.fnmatchcase(rel, pattern) or ("/" not in pattern and fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern))

    if include and not any(hit(p) for p in include):
        return False
    return not any(hit(p) for p in exclude)


def stage_managed_weights(config: Config, dest: Path, live: bool = False, log=lambda m: None) -> list[StagedWeights]:
    """Fetch every ``weights:`` entry into ``dest/managed-weights/<name>/``."""
    staged: list[StagedWeights] = []
    targets: dict[str, str] = {}
    for i, entry in enumerate(config.weights):
        key = f"{config.path}: weights[{i}]"
        target = check_target(entry.target, f"{key}.target")
        if target in targets:
            raise BuildError(f"{key}.target: {target} is already the target of weights {targets[target]!r}")
        if any(w.name == entry.name for w in staged):
            raise BuildError(f"{key}.name: {entry.name!r} names two weights entries")
        targets[target] = entry.name
        out = StagedWeights(entry.name, f"{MANAGED_DIR}/{entry.name}", target)
        for j, source in enumerate(entry.sources):
            skey = f"{key}.source" + (f"[{j}]" if len(entry.sources) > 1 else "")
            _stage_source(config, source, skey, dest, out, live)
        log(f"weights {entry.name}: {len(out.files)} file(s), {out.size / 1e6:.1f} MB -> {target} (own layer)")
        staged.append(out)
    return staged


def _stage_source(config: Config, source: WeightsSource, key: str, dest: Path, out: StagedWeights,
                  live: bool) -> None:
    folder = dest / out.folder
    # The context being staged may sit inside a file:// source folder: never walk into it.
    skip = {dest.resolve(), (config.project_dir / ".cog" / CACHE_DIR).resolve()}
    files = [(rel, path) for rel, path in _source_files(config, source, key, live, skip)
             if selected(rel, source.include, source.exclude)]
    if not files:
        raise BuildError(f"{key}: no file of {source.uri!r} matched include/exclude")
    project = config.project_dir.resolve()
    for rel, path in files:
        if not safe_relative(rel):
            raise BuildError(f"{key}: the file name {rel!r} would escape the target folder")
        if rel in out.files:
            raise BuildError(f"{key}: {rel!r} also comes from another source of weights {out.name!r}")
        real = path.resolve()
        try:
            out.files[rel] = real.stat().st_size
            link_or_copy(real, folder / rel)  # resolved: the context gets contents, never symlinks
        except OSError as exc:  # disk full, permissions: a message, not a traceback
            raise BuildError(f"{key}: cannot stage {real} as {folder / rel}: {exc.strerror or exc}") from None
        in_place = path.parent.resolve() / path.name  # folders resolved, the file itself kept
        if not path.is_symlink() and in_place.is_relative_to(project):
            out.project_files.add(in_place.relative_to(project).as_posix())


def _source_files(config: Config, source: WeightsSource, key: str, live: bool,
                  skip: set[Path]) -> list[tuple[str, Path]]:
    uri = source.uri
    scheme = urllib.parse.urlparse(uri).scheme.lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        try:
            path, _cached = fetch_weights_url(uri, config.project_dir / ".cog" / CACHE_DIR, live)
        except WeightsFetchError as exc:
            raise BuildError(f"{key}.uri: could not fetch {redact_url(uri)}: {exc}") from None
        return [(path.name, path)]
    if scheme == "hf":
        return _walk(_hf_path(uri, key), key, uri, skip)
    if scheme == "file":
        parsed = urllib.parse.urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise BuildError(f"{key}.uri: {uri!r}: a file:// URL names a path on this machine (file:///path)")
        return _walk(Path(urllib.parse.unquote(parsed.path)), key, uri, skip)
    if scheme:
        raise BuildError(f"{key}.uri: {scheme}:// is not a weights source (use a local path, file://, http(s):// or hf://)")
    path = Path(os.path.expanduser(uri))
    if not path.is_absolute():
        project = config.project_dir.resolve()
        path = project / path
        if not path.resolve().is_relative_to(project):
            raise BuildError(f"{key}.uri: {uri!r} is outside the project; use file:///absolute/path for a file "
                             "elsewhere on this machine")
    return _walk(path, key, uri, skip)


def _walk(root: Path, key: str, uri: str, skip: set[Path]) -> list[tuple[str, Path]]:
    """(name relative to the source, path) of every file of a file or folder source, without
    .git/.cog folders and the ``skip`` folders (the context being staged, the cache)."""
    if root.is_file():
        return [(root.name, root)]
    if not root.is_dir():
        raise BuildError(f"{key}.uri: {uri!r}: no such file or folder ({root})")
    found = []
    for base, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and Path(base, d).resolve() not in skip]
        for d in dirs:
            if os.path.islink(os.path.join(base, d)):
                raise BuildError(f"{key}.uri: {uri!r}: {os.path.join(base, d)} is a symlinked folder, "
                                 "which is not followed; point the source at the real folder")
        dirs.sort()
        for name in sorted(names):
            path = Path(base) / name
            if not path.exists():
                raise BuildError(f"{key}.uri: {uri!r}: {path} is a broken symlink")
            found.append((path.relative_to(root).as_posix(), path))
    return found


def _hf_path(uri: str, key: str) -> Path:
    """The local folder or file of ``hf://owner/repo[@revision][/path]`` in the Hugging Face cache."""
    parts = uri[len("hf://"):].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise BuildError(f"{key}.uri: {uri!r} must be hf://owner/repo[/path]")
    repo, _, revision = parts[1].partition("@")
    repo_id, sub = f"{parts[0]}/{repo}", "/".join(parts[2:])
    if sub and not safe_relative(sub):
        raise BuildError(f"{key}.uri: {uri!r}: the path in the repository would escape it")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise BuildError(f"{key}.uri: hf:// sources need huggingface_hub on this machine "
                         "(pip install huggingface_hub)") from None
    try:
        # The local cache only: a build never reaches the Hub (download it once with
        # `hf download`, and the build is reproducible and offline).
        root = Path(snapshot_download(repo_id, revision=revision or None, local_files_only=True))
    except Exception as exc:  # the hub's errors for "not in the cache" vary by version
        raise BuildError(
            f"{key}.uri: {repo_id}{'@' + revision if revision else ''} is not in the local Hugging Face cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}); "
            f"cogkit build reads hf:// weights from there only: fetch them first with "
            f"`hf download {repo_id}` ({type(exc).__name__})"
        ) from None
    path = root / sub if sub else root
    if sub and not (path.is_file() or path.is_dir()):
        raise BuildError(f"{key}.uri: {sub!r} is not in the cached snapshot of {repo_id}")
    return path
