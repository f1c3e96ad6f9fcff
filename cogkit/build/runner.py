"""Running a built image locally with podman or docker.

:func:`run_image` starts the image's server on the host network on a free port,
waits until ``/health-check`` says READY, yields its base URL, and stops and
removes the container afterwards::

    with run_image("r8.im/me/model") as url:
        httpx.post(f"{url}/predictions", json={"input": {...}})

:func:`serve_image` runs it in the foreground (``cogkit serve --image``).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TextIO

from cogkit.build.engines import RUNNERS, EngineError, find_engine

READY_STATES = {"READY", "BUSY"}
CONTAINER_PREFIX = "cogkit-run-"


class ImageRunError(EngineError):
    """The image could not be started, or its model never became ready."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_args(
    engine: str,
    exe: str,
    image: str,
    port: int,
    env: dict[str, str] | None = None,
    gpus: bool = False,
    name: str | None = None,
    detach: bool = True,
    extra_args: list[str] | None = None,
) -> list[str]:
    cmd = [exe, "run"]
    cmd += ["-d"] if detach else ["--rm"]
    if name:
        cmd += ["--name", name]
    # Host networking: the server listens on PORT directly on the host (no port
    # publishing, no bridge network setup needed on daemonless hosts).
    cmd += ["--network", "host", "-e", f"PORT={port}"]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    if gpus:
        cmd += ["--gpus", "all"] if engine == "docker" else ["--device", "nvidia.com/gpu=all"]
    cmd += list(extra_args or [])
    cmd.append(image)
    return cmd


def _hint(output: str) -> str:
    if "rlimit" in output.lower():
        return ("\nhint: this host refuses the container's default resource limits; set lower ones, "
                "e.g. default_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"] in containers.conf "
                "(see README, 'Building and pushing images')")
    if "cgroups in hybrid mode" in output or "crun" in output and "cgroup" in output:
        return "\nhint: crun cannot run on this host's cgroup setup; use runc (runtime = \"runc\" in containers.conf)"
    return ""


def _health(url: str) -> tuple[str | None, dict]:
    import httpx

    try:
        resp = httpx.get(f"{url}/health-check", timeout=1.0)
        body = resp.json()
        return body.get("status"), body
    except (httpx.HTTPError, ValueError):
        return None, {}


def _container_running(exe: str, name: str) -> bool:
    proc = subprocess.run([exe, "inspect", "--format", "{{.State.Running}}", name], capture_output=True, text=True)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def _logs(exe: str, name: str, lines: int = 40) -> str:
    proc = subprocess.run([exe, "logs", "--tail", str(lines), name], capture_output=True, text=True)
    return (proc.stdout + proc.stderr).strip()


def _remove(engine: str, exe: str, name: str) -> None:
    cmd = [exe, "rm", "-f", name] if engine == "docker" else [exe, "rm", "-f", "-t", "2", name]
    subprocess.run(cmd, capture_output=True)


def _follow_logs(exe: str, name: str, stream: TextIO) -> threading.Thread:
    def copy() -> None:
        proc = subprocess.Popen([exe, "logs", "-f", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            stream.write(line)
            stream.flush()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def run_image(
    image: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    gpus: bool = False,
    engine: str | None = None,
    setup_timeout: float = 300.0,
    log_stream: TextIO | None = None,
) -> Iterator[str]:
    """Run ``image`` until the block ends; yields ``http://127.0.0.1:<port>``.

    Raises :class:`ImageRunError` if the container exits, setup fails or the model is
    not ready within ``setup_timeout`` seconds (the error carries the container logs).
    ``log_stream`` receives the container's output while it runs."""
    name_, exe = find_engine("run images", RUNNERS, engine)
    port = port or free_port()
    container = CONTAINER_PREFIX + uuid.uuid4().hex[:12]
    proc = subprocess.run(run_args(name_, exe, image, port, env, gpus, container), capture_output=True, text=True)
    if proc.returncode != 0:
        _remove(name_, exe, container)
        out = (proc.stderr or proc.stdout).strip()
        raise ImageRunError(f"could not start {image} with {name_}:\n{out}{_hint(out)}")
    try:
        if log_stream is not None:
            _follow_logs(exe, container, log_stream)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + setup_timeout
        while True:
            status, body = _health(url)
            if status in READY_STATES:
                break
            if status == "SETUP_FAILED":
                logs = body.get("setup", {}).get("logs") or _logs(exe, container)
                raise ImageRunError(f"model setup failed in {image}:\n{logs}")
            if not _container_running(exe, container):
                logs = _logs(exe, container)
                raise ImageRunError(f"the container of {image} exited before its model was ready:\n{logs}{_hint(logs)}")
            if time.monotonic() > deadline:
                raise ImageRunError(f"{image} was not ready after {setup_timeout:.0f} s:\n{_logs(exe, container)}")
            time.sleep(0.2)
        yield url
    finally:
        _remove(name_, exe, container)


def serve_image(
    image: str,
    port: int = 5000,
    env: dict[str, str] | None = None,
    gpus: bool = False,
    engine: str | None = None,
) -> int:
    """Run the image's server in the foreground on ``port`` until interrupted."""
    name_, exe = find_engine("run images", RUNNERS, engine)
    container = CONTAINER_PREFIX + uuid.uuid4().hex[:12]
    cmd = run_args(name_, exe, image, port, env, gpus, container, detach=False)
    print(f"==> serving {image} on http://127.0.0.1:{port} (with {name_}; Ctrl-C stops it)", file=sys.stderr)
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _remove(name_, exe, container)
        proc.wait()
        return 130
