"""Finding the container tools on this machine: docker (with a reachable daemon),
podman, buildah, skopeo. Shared by building, pushing and running images.

podman, buildah and skopeo need no daemon; they share one image store
("containers-storage"), configured as usual through ``CONTAINERS_*`` variables
or ``/etc/containers``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from cogkit.exceptions import CogkitError

BUILDERS = ("docker", "podman", "buildah")
RUNNERS = ("docker", "podman")


class EngineError(CogkitError):
    """A container tool is missing, unreachable or failed."""


@dataclass(frozen=True)
class DockerServer:
    reachable: bool
    podman: bool = False  # the "daemon" is podman's Docker-compatible API socket
    error: str = ""


def docker_server(executable: str) -> DockerServer:
    """Ask the docker CLI about its daemon (honours DOCKER_HOST / contexts)."""
    try:
        proc = subprocess.run(
            [executable, "version", "--format", "{{json .Server}}"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return DockerServer(False, error=str(exc))
    try:
        server = json.loads(proc.stdout.strip() or "null")
    except ValueError:
        server = None
    if proc.returncode != 0 or not server:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return DockerServer(False, error=lines[-1] if lines else f"exit code {proc.returncode}")
    names = " ".join(c.get("Name", "") for c in server.get("Components") or [])
    return DockerServer(True, podman="podman" in names.lower())


def docker_has_buildx(executable: str) -> bool:
    try:
        proc = subprocess.run([executable, "buildx", "version"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def which(name: str) -> str | None:
    return shutil.which(name)


def find_engine(purpose: str, order: tuple[str, ...], preferred: str | None = None, flag: str = "--builder") -> tuple[str, str]:
    """(name, executable) of the first usable tool in ``order``, or of ``preferred``.

    docker counts only when its daemon answers. ``purpose`` completes "no container tool
    to ... with"; ``flag`` is the option that names a tool, for errors."""
    if preferred and preferred not in order:
        raise EngineError(f"{flag} must be one of {', '.join(order)}, got {preferred!r}")
    tried = []
    for name in [preferred] if preferred else order:
        exe = which(name)
        if not exe:
            tried.append(f"{name}: not installed")
            continue
        if name == "docker":
            server = docker_server(exe)
            if not server.reachable:
                tried.append(f"docker: daemon not reachable ({server.error})")
                continue
        return name, exe
    raise EngineError(
        f"no container tool to {purpose} with ({'; '.join(tried)}). Install podman "
        "(no daemon needed; e.g. `apt-get install podman buildah skopeo`) or start Docker."
    )


def stream_command(cmd: list[str], on_line: Callable[[str], None], out: TextIO | None, shown_chars: int = 0) -> int:
    """Run ``cmd``, passing each output line (stdout and stderr merged) to ``on_line`` and,
    unless ``out`` is None, echoing it there (cut to ``shown_chars`` when set); returns the
    exit code. Ctrl-C stops the tool too. Raises EngineError if it cannot be started."""
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                errors="replace")
    except OSError as exc:
        raise EngineError(f"could not start {cmd[0]}: {exc}") from exc
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            on_line(line)
            if out is not None:
                shown = line if not shown_chars or len(line) <= shown_chars else line[:shown_chars] + " ..."
                out.write(shown + "\n")
                out.flush()
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
