"""``build.sdk_version``: which cogkit the image installs.

Unchanged Cog projects pin Cog's SDK there (``"0.16.8"``); cogkit provides ``cog`` and
reproduces Cog's protocol at COG_COMPAT_VERSION, so the rule is:

* unset, or this cogkit's own version -> the wheel built from the running cogkit;
* a Cog SDK version (at most COG_COMPAT_VERSION, a version range, or ``"prerelease"``)
  -> also the running cogkit, with a note saying so;
* ``cogkit==X``, or any other version -> cogkit release X from the package index pip is
  configured with (PIP_INDEX_URL, pip.conf, ...), downloaded here as a wheel; a clear
  BuildError when the index does not have it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cogkit._version import COG_COMPAT_VERSION, __version__
from cogkit.build.builders import BuildError
from cogkit.build.wheel import build_cogkit_wheel

_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)((?:a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
_RANGE = re.compile(r"^\s*(~=|==|!=|<=|>=|<|>)")
PIP_TIMEOUT = 600


@dataclass(frozen=True)
class SdkWheel:
    path: Path
    version: str  # the cogkit version in the image


def _release(version: str) -> tuple[int, ...]:
    parts = [int(x) for x in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def sdk_wheel(sdk_version: str | None, wheel_dir: Path, where: str, log: Callable[[str], None]) -> SdkWheel:
    """The cogkit wheel for ``build.sdk_version``, written into ``wheel_dir``."""
    key = f"{where}: build.sdk_version"
    spec = (sdk_version or "").strip()
    explicit = spec.startswith("cogkit")
    if explicit:
        m = re.match(r"^cogkit\s*==\s*(\S+)$", spec)
        if not m or not _VERSION.match(m.group(1)):
            raise BuildError(f"{key}: {spec!r}: name a cogkit release as cogkit==X.Y.Z")
        spec = m.group(1)
    if not spec or spec == __version__:
        return _this_cogkit(wheel_dir)
    if not explicit:
        cog = spec == "prerelease" or bool(_RANGE.match(spec))
        m = _VERSION.match(spec)
        if not cog and not m:
            raise BuildError(f"{key}: {spec!r} is not a version (e.g. \"0.16.8\" for Cog's SDK, "
                             f"or \"cogkit==X.Y.Z\" for a cogkit release)")
        if cog or _release(m.group(1)) <= _release(COG_COMPAT_VERSION):
            log(f"note: build.sdk_version {spec} is Cog's SDK; the image gets this cogkit ({__version__}), which "
                f"provides `cog` and speaks Cog {COG_COMPAT_VERSION}'s protocol")
            return _this_cogkit(wheel_dir)
    log(f"build.sdk_version {spec}: cogkit {spec} from the package index")
    return SdkWheel(_download(spec, wheel_dir, key), spec)


def _this_cogkit(wheel_dir: Path) -> SdkWheel:
    path = build_cogkit_wheel(wheel_dir)
    return SdkWheel(path, path.name.split("-")[1])


def _download(version: str, wheel_dir: Path, key: str) -> Path:
    index = os.environ.get("PIP_INDEX_URL") or "pip's configured index"
    with tempfile.TemporaryDirectory(prefix="cogkit-sdk-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--no-input", "-q", "-d", tmp, f"cogkit=={version}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{key}: looking up cogkit {version} on {index} took over {PIP_TIMEOUT} s") from None
        wheels = sorted(Path(tmp).glob(f"cogkit-{version}-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise BuildError(_explain(proc.stderr + proc.stdout, version, index, key))
        wheel_dir.mkdir(parents=True, exist_ok=True)
        dest = wheel_dir / wheels[0].name
        os.replace(wheels[0], dest)
        return dest


def _explain(output: str, version: str, index: str, key: str) -> str:
    rule = (f"use {__version__} (this cogkit), a Cog SDK version (<= {COG_COMPAT_VERSION}: this cogkit too) "
            "or a released cogkit")
    if "No module named pip" in output:
        return f"{key}: cogkit {version} is looked up with pip, which this Python ({sys.executable}) lacks"
    if "No matching distribution" in output or "Could not find a version" in output:
        m = re.search(r"\(from versions: ([^)]*)\)", output)
        found = m.group(1).strip() if m else ""
        have = f"; it has: {found}" if found and found != "none" else "; it has no cogkit wheel"
        return f"{key}: cogkit {version} does not exist (not on {index}{have}); {rule}"
    tail = "\n".join("  | " + ln for ln in output.strip().splitlines()[-8:])
    return f"{key}: could not download cogkit {version} from {index} (pip download failed):\n{tail}"
