"""Pushing a built image to a registry with docker, podman, skopeo or buildah."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import deque
from typing import TextIO

from cogkit.build.engines import EngineError, docker_server, stream_command, which

PUSHERS = ("docker", "podman", "skopeo", "buildah")


class PushError(EngineError):
    """The push failed; the message says why (authentication, TLS, missing image...)."""


def registry_of(image: str) -> str:
    """The registry host an image name points at (Docker's rule: a first component
    with a dot, a colon or ``localhost`` is a host; otherwise Docker Hub)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _quiet_ok(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _has_image(name: str, exe: str, image: str) -> bool:
    if name == "docker":
        return docker_server(exe).reachable and _quiet_ok([exe, "image", "inspect", image])
    if name == "podman":
        return _quiet_ok([exe, "image", "exists", image])
    if name == "skopeo":
        return _quiet_ok([exe, "inspect", f"containers-storage:{image}"])
    return _quiet_ok([exe, "inspect", "--type", "image", image])


def find_pusher(image: str, preferred: str | None = None) -> tuple[str, str]:
    """The tool that holds ``image`` locally and can push it."""
    if preferred and preferred not in PUSHERS:
        raise PushError(f"--push-tool must be one of {', '.join(PUSHERS)}, got {preferred!r}")
    tried = []
    for name in [preferred] if preferred else PUSHERS:
        exe = which(name)
        if not exe:
            tried.append(f"{name}: not installed")
            continue
        if _has_image(name, exe, image):
            return name, exe
        tried.append(f"{name}: no local image {image}")
    raise PushError(f"cannot push {image}: no tool has it locally ({'; '.join(tried)}). Build it first: cogkit build -t {image}")


def push_command(name: str, exe: str, image: str, insecure: bool = False) -> list[str]:
    if name == "docker":
        # The Docker daemon decides about plain-HTTP registries (its insecure-registries
        # setting; 127.0.0.0/8 is allowed by default), so --insecure has no flag here.
        return [exe, "push", image]
    tls = ["--tls-verify=false"] if insecure else []
    if name == "skopeo":
        tls = ["--dest-tls-verify=false"] if insecure else []
        return [exe, "copy", *tls, f"containers-storage:{image}", f"docker://{image}"]
    return [exe, "push", *tls, image, f"docker://{image}"]


# A registry's "denied: ..." error code, not a local "permission denied" (storage, socket).
_AUTH = re.compile(
    r"unauthorized|authentication required|\bdenied:|access to the resource is denied|insufficient_scope"
    r"|\b401\b|\b403\b|no basic auth credentials",
    re.I,
)
_PLAIN_HTTP = re.compile(r"server gave HTTP response to HTTPS client|http: server gave HTTP|x509|certificate", re.I)
_REFUSED = re.compile(
    r"connection refused|no such host|server misbehaving|i/o timeout|network is unreachable|no route to host", re.I
)


def explain_failure(image: str, tool: str, output: list[str], returncode: int) -> str:
    registry = registry_of(image)
    text = "\n".join(output)
    detail = "\n".join("  | " + ln for ln in output[-8:])
    login = "docker login" if tool == "docker" else "podman login"
    if _AUTH.search(text):
        return (f"push of {image} refused by {registry}: authentication required or access denied. "
                f"Log in first (`{login} {registry}`) and check you may push to this repository.\n{detail}")
    if _PLAIN_HTTP.search(text):
        # docker push has no TLS flag: its daemon decides (see push_command).
        fix = (f"add {registry} to the Docker daemon's insecure-registries" if tool == "docker"
               else "pass --insecure")
        return (f"push of {image} failed: {registry} does not speak verified HTTPS. "
                f"For a local plain-HTTP registry, {fix}.\n{detail}")
    if _REFUSED.search(text):
        return f"push of {image} failed: cannot reach the registry {registry}.\n{detail}"
    return f"push of {image} with {tool} failed (exit code {returncode}).\n{detail}"


def push_image(
    image: str,
    tool: str | None = None,
    insecure: bool = False,
    quiet: bool = False,
    out: TextIO | None = None,
) -> str:
    """Push ``image``, streaming the tool's progress; returns the tool used."""
    out = out or sys.stderr
    name, exe = find_pusher(image, tool)
    if insecure and name == "docker":
        out.write("note: with docker, plain-HTTP registries are allowed by the daemon's insecure-registries setting\n")
    cmd = push_command(name, exe, image, insecure)
    tail: deque[str] = deque(maxlen=40)
    returncode = stream_command(cmd, tail.append, None if quiet else out)
    if returncode != 0:
        raise PushError(explain_failure(image, name, list(tail), returncode))
    return name
