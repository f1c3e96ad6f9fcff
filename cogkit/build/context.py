"""The project files that go into an image, and the build context they are staged in.

The builder never sees the project folder itself: we stage a context folder with
the generated Dockerfile, the generated inputs (``build/``), the weight files
(``weights/``, with ``--separate-weights``) and the project code (``src/``). Files are
hard-linked where possible, so staging a project with gigabytes of weights is
instant and costs no disk. ``.dockerignore`` is applied while staging, so every
builder (docker, podman, buildah) gets exactly the same files.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cogkit.build.dockerignore import DockerIgnore

# Cog's rule for --separate-weights: files of 10 MB or more, except code and media.
WEIGHTS_MIN_BYTES = 10 * 1024 * 1024
_CODE_SUFFIXES = {".py", ".ipynb", ".whl"}
_NOT_WEIGHTS_SUFFIXES = _CODE_SUFFIXES | {
    ".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".heic", ".bmp", ".tif", ".tiff", ".svg", ".ico",
    ".mp4", ".mov", ".avi", ".wmv", ".mkv", ".webm", ".mpg", ".mpeg",
    ".mp3", ".wav", ".flac", ".ogg", ".m4a", ".aac",
    ".log",
}
# Never part of an image: cogkit's (and Cog's) own build folder.
ALWAYS_IGNORED = ".cog"
_NEVER_WEIGHTS_DIRS = {".git", "__pycache__", ALWAYS_IGNORED}


@dataclass
class ProjectFiles:
    """Paths relative to the project, ``/``-separated, in walk order."""

    files: list[str] = field(default_factory=list)  # regular files and symlinks
    dirs: list[str] = field(default_factory=list)  # folders (so empty ones survive)


def project_files(project_dir: Path, ignore: DockerIgnore | None = None) -> ProjectFiles:
    """Every file and folder of the project that ``.dockerignore`` lets into the image."""
    ignore = ignore if ignore is not None else DockerIgnore.load(project_dir)
    out = ProjectFiles()
    walk_excluded = ignore.has_includes  # a "!" rule may re-include something below
    for root, dirnames, filenames in os.walk(project_dir):
        rel_root = Path(root).relative_to(project_dir).as_posix()
        prefix = "" if rel_root == "." else rel_root + "/"
        keep_dirs = []
        for name in sorted(dirnames):
            rel = prefix + name
            if rel == ALWAYS_IGNORED:
                continue
            if os.path.islink(os.path.join(root, name)):
                if not ignore.excluded(rel):
                    out.files.append(rel)
                continue
            excluded = ignore.excluded(rel)
            if not excluded:
                out.dirs.append(rel)
            if not excluded or walk_excluded:
                keep_dirs.append(name)
        dirnames[:] = keep_dirs
        for name in sorted(filenames):
            rel = prefix + name
            if not ignore.excluded(rel):
                out.files.append(rel)
    return out


def find_weights(project_dir: Path, files: list[str]) -> list[str]:
    """The files ``--separate-weights`` puts in their own layer.

    A file qualifies at 10 MB or more unless it is code or media, lives under
    ``.git``/``__pycache__``, or sits in a folder with code in it or below it (then it
    is part of a package, not a weights folder). Files at the project root qualify.
    """
    code_dirs: set[str] = set()  # every folder that holds code, directly or below
    for f in files:
        if Path(f).suffix in (".py", ".ipynb"):
            parent = posix_parent(f)
            while parent:
                code_dirs.add(parent)
                parent = posix_parent(parent)
    weights = []
    for rel in files:
        path = project_dir / rel
        if path.is_symlink() or not path.is_file():
            continue
        if Path(rel).suffix.lower() in _NOT_WEIGHTS_SUFFIXES:
            continue
        if set(rel.split("/")[:-1]) & _NEVER_WEIGHTS_DIRS:
            continue
        if posix_parent(rel) in code_dirs:
            continue
        if path.stat().st_size >= WEIGHTS_MIN_BYTES:
            weights.append(rel)
    return weights


def posix_parent(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def link_or_copy(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst``: symlinks stay symlinks, files are hard-linked when possible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stage_tree(project_dir: Path, dest: Path, files: ProjectFiles, weights: list[str]) -> None:
    """Lay out ``dest/src`` (code) and ``dest/weights`` (separated weight files)."""
    weight_set = set(weights)
    src = dest / "src"
    src.mkdir(parents=True, exist_ok=True)
    for rel in files.dirs:
        (src / rel).mkdir(parents=True, exist_ok=True)
    for rel in files.files:
        target = (dest / "weights" / rel) if rel in weight_set else (src / rel)
        link_or_copy(project_dir / rel, target)
