"""Running an image build with docker, podman or buildah, showing its progress and
naming the failing step when it fails."""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cogkit.build.engines import BUILDERS, EngineError, docker_has_buildx, docker_server, find_engine, stream_command


_SHOWN_CHARS = 300


class BuildError(EngineError):
    """The image build failed; the message names the failing step."""


@dataclass(frozen=True)
class Builder:
    name: str  # docker | podman | buildah
    executable: str
    cache_mounts: bool = True  # RUN --mount=type=cache|secret is understood
    secrets: bool = True  # --secret can be passed
    buildkit: bool = False  # docker with buildx


def detect_builder(preferred: str | None = None) -> Builder:
    """The builder to use: ``preferred``, else docker (daemon reachable), podman, buildah."""
    name, exe = find_engine("build", BUILDERS, preferred, "--builder")
    if name != "docker":
        return Builder(name, exe)
    buildkit = docker_has_buildx(exe)
    # Without buildx the docker CLI uses the legacy builder: no --secret; RUN --mount works
    # only when the daemon is really podman's API socket (it parses the Dockerfile).
    podman_api = docker_server(exe).podman
    return Builder("docker", exe, cache_mounts=buildkit or podman_api, secrets=buildkit, buildkit=buildkit)


def build_command(
    builder: Builder,
    context_dir: Path,
    tag: str,
    secrets: Sequence[str] = (),
    no_cache: bool = False,
) -> list[str]:
    dockerfile = str(context_dir / "Dockerfile")
    if builder.name == "podman":
        cmd = [builder.executable, "build", "--layers"]
    elif builder.name == "buildah":
        cmd = [builder.executable, "bud", "--layers"]
    elif builder.buildkit:
        cmd = [builder.executable, "buildx", "build", "--load", "--progress", "plain"]
    else:
        cmd = [builder.executable, "build"]
    cmd += ["-f", dockerfile, "-t", tag]
    if no_cache:
        cmd.append("--no-cache")
    for secret in secrets:
        cmd += ["--secret", secret]
    cmd.append(str(context_dir))
    return cmd


# Step headers: podman/buildah "STEP 3/12: RUN ...", legacy docker "Step 3/12 : RUN ...",
# BuildKit plain progress "#7 [3/12] RUN ..." (or "#7 [stage 3/12] ...").
_STEP_PATTERNS = (
    re.compile(r"^STEP (\d+/\d+): (.*)$"),
    re.compile(r"^Step (\d+/\d+) : (.*)$"),
)
_BUILDKIT_STEP = re.compile(r"^#(\d+) \[(?:[^\]]*\s)?(\d+/\d+)\] (.*)$")
_BUILDKIT_ERROR = re.compile(r"^#(\d+) ERROR: (.*)$")


class _StepTracker:
    """Follows builder output to know which step failed and what it printed."""

    def __init__(self) -> None:
        self.step: tuple[str, str] | None = None
        self.step_lines: deque[str] = deque(maxlen=25)
        self.buildkit_steps: dict[str, tuple[str, str]] = {}
        self.buildkit_lines: dict[str, deque[str]] = {}
        self.failed: tuple[str, str] | None = None
        self.failed_lines: list[str] = []
        self.tail: deque[str] = deque(maxlen=25)

    def feed(self, line: str) -> None:
        self.tail.append(line)
        for pat in _STEP_PATTERNS:
            m = pat.match(line)
            if m:
                self.step = (m.group(1), m.group(2))
                self.step_lines.clear()
                return
        m = _BUILDKIT_STEP.match(line)
        if m:
            self.buildkit_steps[m.group(1)] = (m.group(2), m.group(3))
            self.buildkit_lines[m.group(1)] = deque(maxlen=25)
            return
        m = _BUILDKIT_ERROR.match(line)
        if m and m.group(1) in self.buildkit_steps and self.failed is None:
            self.failed = self.buildkit_steps[m.group(1)]
            self.failed_lines = list(self.buildkit_lines.get(m.group(1), []))
            return
        bk = re.match(r"^#(\d+) (?:\d+\.\d+ )?(.*)$", line)
        if bk and bk.group(1) in self.buildkit_lines:
            self.buildkit_lines[bk.group(1)].append(bk.group(2))
            return
        self.step_lines.append(line)

    def summary(self, returncode: int) -> str:
        step = self.failed or self.step
        lines = self.failed_lines if self.failed else list(self.step_lines)
        errors = [ln for ln in self.tail if re.search(r"\berror\b", ln, re.I)]
        head = f"build failed at step {step[0]}: {step[1]}" if step else f"build failed (exit code {returncode})"
        detail = lines[-15:] if lines else list(self.tail)[-15:]
        for err in errors[-2:]:
            if err not in detail:
                detail.append(err)
        return head + ("\n" + "\n".join("  | " + ln for ln in detail) if detail else "")


def run_build(cmd: list[str], quiet: bool = False, out: TextIO | None = None) -> None:
    """Run a build command, streaming its output; raise :class:`BuildError` on failure."""
    tracker = _StepTracker()
    try:
        # Some steps (our LABEL with the whole schema) are one huge line: shorten for display.
        returncode = stream_command(cmd, tracker.feed, None if quiet else (out or sys.stderr), _SHOWN_CHARS)
    except EngineError as exc:
        raise BuildError(str(exc)) from exc
    if returncode != 0:
        raise BuildError(tracker.summary(returncode))
