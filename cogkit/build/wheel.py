"""A wheel of the running cogkit, to install the same cogkit inside the image.

Built straight from the imported package and its installed metadata (works for a
source checkout installed with ``pip install -e`` as for a normal install, with no
network and no build backend); for a checkout, version and dependencies are read from
its pyproject.toml, so a dependency added since the last install is not missed. The bytes depend only on the file contents, so an
unchanged cogkit gives an identical wheel and the image layers that follow it stay
cached between builds.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _package_files(package_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in package_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def _source_project(package_dir: Path) -> dict | None:
    """``[project]`` of the checkout this cogkit runs from (an editable install), if any.

    Its dependencies are the current ones; the installed metadata dates from the last
    ``pip install -e .`` and may miss a dependency added since."""
    pyproject = package_dir.parent / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        import tomllib
    except ImportError:  # Python 3.10: the installed metadata will do
        return None
    project = tomllib.loads(pyproject.read_text()).get("project", {})
    return project if project.get("name") == "cogkit" else None


def _metadata(installed: str, project: dict | None) -> str:
    """The METADATA text: the installed one, with version and dependencies from the checkout."""
    if project is None:
        return installed
    head, sep, body = installed.partition("\n\n")
    lines = [ln for ln in head.splitlines() if not ln.startswith(("Requires-Dist:", "Provides-Extra:", "Version:"))]
    lines.insert(2 if len(lines) >= 2 else len(lines), f"Version: {project['version']}")
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    for extra, deps in sorted(project.get("optional-dependencies", {}).items()):
        lines.append(f"Provides-Extra: {extra}")
        for dep in deps:
            req, _, marker = dep.partition(";")
            cond = f'({marker.strip()}) and extra == "{extra}"' if marker.strip() else f'extra == "{extra}"'
            lines.append(f"Requires-Dist: {req.strip()}; {cond}")
    return "\n".join(lines) + (sep + body if sep else "\n")


def build_cogkit_wheel(dest_dir: Path) -> Path:
    """Write ``cogkit-<version>-py3-none-any.whl`` into ``dest_dir`` and return its path."""
    import cogkit

    dist = importlib.metadata.distribution("cogkit")
    package_dir = Path(cogkit.__file__).resolve().parent
    project = _source_project(package_dir)
    version = project["version"] if project else dist.version
    info = f"cogkit-{version}.dist-info"

    entries: list[tuple[str, bytes]] = []
    for path in _package_files(package_dir):
        entries.append(("cogkit/" + path.relative_to(package_dir).as_posix(), path.read_bytes()))
    # METADATA (dist-info) or PKG-INFO (an egg-info folder found first on sys.path)
    installed = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "Metadata-Version: 2.1\nName: cogkit\n"
    metadata = _metadata(installed, project)
    entries.append((f"{info}/METADATA", metadata.encode()))
    entries.append((
        f"{info}/WHEEL",
        b"Wheel-Version: 1.0\nGenerator: cogkit build\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    ))
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        entries.append((f"{info}/entry_points.txt", entry_points.encode()))
    entries.append((f"{info}/top_level.txt", b"cogkit\n"))
    record_lines = [f"{name},{_record_hash(data)},{len(data)}" for name, data in entries]
    record_lines.append(f"{info}/RECORD,,")
    entries.append((f"{info}/RECORD", ("\n".join(record_lines) + "\n").encode()))

    dest_dir.mkdir(parents=True, exist_ok=True)
    wheel_path = dest_dir / f"cogkit-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel_path, "w") as zf:
        for name, data in entries:
            zi = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data, compresslevel=6)
    return wheel_path
