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
import json
import re
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
    command: list[str] | None = None,
) -> list[str]:
    """The ``run`` command line: detached, host network, PORT set; ``command`` replaces CMD."""
    cmd = [exe, "run", "-d"]
    if name:
        cmd += ["--name", name]
    # Host networking: the server listens on PORT directly on the host (no port
    # publishing, no bridge network setup needed on daemonless hosts).
    cmd += ["--network", "host", "-e", f"PORT={port}"]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    if gpus:
        cmd += ["--gpus", "all"] if engine == "docker" else ["--device", "nvidia.com/gpu=all"]
    cmd.append(image)
    cmd += list(command or [])
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


def _container_state(exe: str, name: str) -> tuple[bool, str]:
    """(running, description) of a container, e.g. (False, "exited with code 1")."""
    proc = subprocess.run([exe, "inspect", "--format", "{{.State.Running}} {{.State.Status}} {{.State.ExitCode}}", name],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return False, "gone (" + (proc.stderr.strip().splitlines() or ["not found"])[-1] + ")"
    running, status, code = (proc.stdout.split() + ["", "", ""])[:3]
    return running == "true", f"{status} with code {code}"


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


_GPU_START_ERROR = re.compile(r"could not select device driver|nvidia|CDI|no such device|gpu", re.I)


def _ensure_local(exe: str, image: str) -> None:
    """Pull ``image`` unless it is already local (the pull shows its progress)."""
    if subprocess.run([exe, "image", "inspect", image], capture_output=True).returncode == 0:
        return
    print(f"==> pulling {image}", file=sys.stderr, flush=True)
    proc = subprocess.run([exe, "pull", image], stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        raise ImageRunError(f"could not pull {image} (is the name right, and are you logged in to its registry?)")


def image_wants_gpu(exe: str, image: str) -> bool:
    """Whether the image was built with ``build.gpu: true`` (from its run.cog.config label)."""
    proc = subprocess.run([exe, "image", "inspect", image, "--format", '{{index .Config.Labels "run.cog.config"}}'],
                          capture_output=True, text=True)
    try:
        return bool(json.loads(proc.stdout.strip() or "{}").get("build", {}).get("gpu"))
    except (ValueError, AttributeError):
        return False


def _start(engine: str, exe: str, image: str, port: int, env: dict[str, str] | None, gpus: bool | None,
           container: str, command: list[str] | None) -> None:
    """Start the container detached; a GPU image on a host without GPU support runs on CPU."""
    _ensure_local(exe, image)
    use_gpus = image_wants_gpu(exe, image) if gpus is None else gpus
    proc = subprocess.run(run_args(engine, exe, image, port, env, use_gpus, container, command=command),
                          capture_output=True, text=True)
    if proc.returncode != 0 and use_gpus and gpus is None and _GPU_START_ERROR.search(proc.stderr):
        _remove(engine, exe, container)
        print(f"warning: {engine} could not give the container a GPU; running without one", file=sys.stderr)
        proc = subprocess.run(run_args(engine, exe, image, port, env, False, container, command=command),
                              capture_output=True, text=True)
    if proc.returncode != 0:
        _remove(engine, exe, container)
        out = (proc.stderr or proc.stdout).strip()
        raise ImageRunError(f"could not start {image} with {engine}:\n{out}{_hint(out)}")


def _wait_ready(exe: str, image: str, container: str, url: str, setup_timeout: float) -> None:
    deadline = time.monotonic() + setup_timeout
    while True:
        status, body = _health(url)
        if status in READY_STATES:
            return
        if status == "SETUP_FAILED":
            logs = (body.get("setup") or {}).get("logs") or _logs(exe, container)
            raise ImageRunError(f"model setup failed in {image}:\n{logs}")
        running, state = _container_state(exe, container)
        if not running:
            logs = _logs(exe, container)
            raise ImageRunError(f"the container of {image} stopped before its model was ready ({state}):\n"
                                f"{logs}{_hint(logs)}")
        if time.monotonic() > deadline:
            raise ImageRunError(f"{image} was not ready after {setup_timeout:.0f} s:\n{_logs(exe, container)}")
        time.sleep(0.2)


@contextlib.contextmanager
def run_image(
    image: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    gpus: bool | None = None,
    engine: str | None = None,
    setup_timeout: float = 300.0,
    log_stream: TextIO | None = None,
) -> Iterator[str]:
    """Run ``image`` until the block ends; yields ``http://127.0.0.1:<port>``.

    The image is pulled if it is not local. ``gpus=None`` gives the container the GPUs
    when the image was built for them (and falls back to none if the host has no GPU
    support). Raises :class:`ImageRunError` if the container exits, setup fails or the
    model is not ready within ``setup_timeout`` seconds (the error carries the logs).
    ``log_stream`` receives the container's output while it runs."""
    engine_name, exe = find_engine("run images", RUNNERS, engine, "engine")
    port = port or free_port()
    container = CONTAINER_PREFIX + uuid.uuid4().hex[:12]
    _start(engine_name, exe, image, port, env, gpus, container, None)
    try:
        if log_stream is not None:
            _follow_logs(exe, container, log_stream)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(exe, image, container, url, setup_timeout)
        yield url
    finally:
        _remove(engine_name, exe, container)


def serve_image(
    image: str,
    port: int = 5000,
    env: dict[str, str] | None = None,
    gpus: bool | None = None,
    engine: str | None = None,
    server_args: list[str] | None = None,
) -> int:
    """Run the image's server in the foreground on ``port`` (host network) until it exits
    or Ctrl-C; ``server_args`` are extra flags for ``python -m cogkit.server``."""
    engine_name, exe = find_engine("run images", RUNNERS, engine, "engine")
    container = CONTAINER_PREFIX + uuid.uuid4().hex[:12]
    command = ["python", "-m", "cogkit.server", *server_args] if server_args else None
    _start(engine_name, exe, image, port, env, gpus, container, command)
    print(f"==> serving {image} on http://127.0.0.1:{port} with {engine_name} (Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    try:
        subprocess.run([exe, "logs", "-f", container])
        proc = subprocess.run([exe, "wait", container], capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        return int(lines[-1]) if lines and lines[-1].strip().lstrip("-").isdigit() else 1
    except KeyboardInterrupt:
        return 130
    finally:
        _remove(engine_name, exe, container)
