"""``build.sdk_version``: which cogkit the image installs.

Cog projects pin Cog's SDK there (``"0.16.8"``, and any future Cog version too); cogkit
provides ``cog`` and reproduces Cog's protocol at COG_COMPAT_VERSION, so the rule is:

* unset, or this cogkit's own version -> the wheel built from the running cogkit;
* any other bare version, a version range or ``"prerelease"`` is a Cog SDK pin -> also the
  running cogkit, with a note (above COG_COMPAT_VERSION the note says cogkit speaks Cog
  COG_COMPAT_VERSION's protocol);
* only ``cogkit==X`` installs cogkit release X from the package index pip is configured
  with (PIP_INDEX_URL, pip.conf, ...), downloaded here as a wheel; a clear BuildError when
  the index does not have it.
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
from cogkit.files import redact_url

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
    if spec.startswith("cogkit"):
        m = re.match(r"^cogkit\s*==\s*(\S+)$", spec)
        if not m or not _VERSION.match(m.group(1)):
            raise BuildError(f"{key}: {spec!r}: name a cogkit release as cogkit==X.Y.Z")
        version = m.group(1)
        if version == __version__:
            return _this_cogkit(wheel_dir)
        log(f"build.sdk_version {spec}: cogkit {version} from the package index")
        return _download(version, wheel_dir, key)
    if not spec or spec == __version__:
        return _this_cogkit(wheel_dir)
    log(_cog_pin_note(spec, key))
    return _this_cogkit(wheel_dir)


def _cog_pin_note(spec: str, key: str) -> str:
    """A bare version is always Cog's SDK (a Cog project's pin): say what the image gets."""
    m = _VERSION.match(spec)
    if not (spec == "prerelease" or _RANGE.match(spec) or m):
        raise BuildError(f"{key}: {spec!r} is not a version (e.g. \"0.16.8\" for Cog's SDK, "
                         f"or \"cogkit==X.Y.Z\" for a cogkit release)")
    note = (f"note: build.sdk_version {spec} is Cog's SDK; the image gets this cogkit ({__version__}), which "
            f"provides `cog` and speaks Cog {COG_COMPAT_VERSION}'s protocol")
    if m and _release(m.group(1)) > _release(COG_COMPAT_VERSION):
        note += f" (not Cog {spec}'s; write cogkit==X.Y.Z for a cogkit release)"
    return note


def _this_cogkit(wheel_dir: Path) -> SdkWheel:
    path = build_cogkit_wheel(wheel_dir)
    return SdkWheel(path, path.name.split("-")[1])


def _download(version: str, wheel_dir: Path, key: str) -> SdkWheel:
    # The index URL often carries a token: messages show it redacted.
    index = redact_url(os.environ["PIP_INDEX_URL"]) if os.environ.get("PIP_INDEX_URL") else "pip's configured index"
    with tempfile.TemporaryDirectory(prefix="cogkit-sdk-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--no-input", "-q", "-d", tmp, f"cogkit=={version}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{key}: looking up cogkit {version} on {index} took over {PIP_TIMEOUT} s") from None
        # The folder was empty: whatever wheel is there is the one pip chose, named by its
        # normalized version (cogkit==1.0 downloads cogkit-1.0.0-...whl).
        wheels = sorted(Path(tmp).glob("cogkit-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise BuildError(_explain(_scrub(proc.stderr + proc.stdout), version, index, key))
        wheel_dir.mkdir(parents=True, exist_ok=True)
        dest = wheel_dir / wheels[0].name
        os.replace(wheels[0], dest)
        return SdkWheel(dest, dest.name.split("-")[1])


def _scrub(output: str) -> str:
    """pip's output with any URL redacted (it echoes the index URL, token included)."""
    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"()<>]+", lambda m: redact_url(m.group(0)), output)


def _explain(output: str, version: str, index: str, key: str) -> str:
    rule = (f"write cogkit=={__version__} (this cogkit) or a released cogkit, or a bare Cog SDK version "
            "(this cogkit too)")
    if "No module named pip" in output:
        return f"{key}: cogkit {version} is looked up with pip, which this Python ({sys.executable}) lacks"
    if "No matching distribution" in output or "Could not find a version" in output:
        m = re.search(r"\(from versions: ([^)]*)\)", output)
        found = m.group(1).strip() if m else ""
        have = f"; it has: {found}" if found and found != "none" else "; it has no cogkit wheel"
        return f"{key}: cogkit {version} does not exist (not on {index}{have}); {rule}"
    tail = "\n".join("  | " + ln for ln in output.strip().splitlines()[-8:])
    return f"{key}: could not download cogkit {version} from {index} (pip download failed):\n{tail}"
