"""Builder/pusher/runner plumbing: tool detection, command lines, reading the failing
step out of each builder's output, push error messages, and the CLI surface."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cogkit.build.builders import Builder, _StepTracker, build_command, detect_builder
from cogkit.build.engines import EngineError, find_engine
from cogkit.build.push import PushError, explain_failure, find_pusher, push_command, registry_of
from cogkit.build.runner import run_args


def _track(output: str) -> str:
    tracker = _StepTracker()
    for line in textwrap.dedent(output).strip("\n").splitlines():
        tracker.feed(line)
    return tracker.summary(1)


def test_failing_step_from_podman_output() -> None:
    summary = _track("""
        STEP 1/4: FROM python:3.11-slim
        STEP 2/4: RUN echo ok
        ok
        --> 1a2b3c
        STEP 3/4: RUN sh -c 'echo about to fail; exit 3'
        about to fail
        Error: building at STEP "RUN sh -c 'echo about to fail; exit 3'": while running runtime: exit status 3
    """)
    assert summary.splitlines()[0] == "build failed at step 3/4: RUN sh -c 'echo about to fail; exit 3'"
    assert "  | about to fail" in summary
    assert "exit status 3" in summary
    assert "  | ok" not in summary  # output of earlier steps is not repeated


def test_failing_step_from_buildkit_output() -> None:
    summary = _track("""
        #1 [internal] load build definition from Dockerfile
        #1 transferring dockerfile: 1.2kB done
        #1 DONE 0.0s
        #5 [2/4] RUN apt-get update
        #5 0.512 Get:1 http://deb.debian.org/debian bookworm InRelease
        #6 [3/4] RUN sh -c 'echo about to fail; exit 3'
        #5 DONE 3.2s
        #6 0.301 about to fail
        #6 ERROR: process "/bin/sh -c sh -c 'echo about to fail; exit 3'" did not complete successfully: exit code: 3
        ------
         > [3/4] RUN sh -c 'echo about to fail; exit 3':
        ------
        ERROR: failed to solve: process "/bin/sh -c ..." did not complete successfully: exit code: 3
    """)
    assert summary.splitlines()[0] == "build failed at step 3/4: RUN sh -c 'echo about to fail; exit 3'"
    assert "  | about to fail" in summary and "InRelease" not in summary
    assert "ERROR: failed to solve" in summary


def test_failing_step_from_legacy_docker_output() -> None:
    summary = _track("""
        Step 1/3 : FROM python:3.11-slim
         ---> 0123
        Step 2/3 : RUN pip install nope==0
         ---> Running in 4567
        ERROR: No matching distribution found for nope==0
        The command '/bin/sh -c pip install nope==0' returned a non-zero code: 1
    """)
    assert summary.splitlines()[0] == "build failed at step 2/3: RUN pip install nope==0"
    assert "No matching distribution found for nope==0" in summary


def test_build_commands_per_builder(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    podman = build_command(Builder("podman", "/usr/bin/podman"), ctx, "img:1", ["id=tok,src=/t"], no_cache=True)
    assert podman == ["/usr/bin/podman", "build", "--layers", "-f", f"{ctx}/Dockerfile", "-t", "img:1",
                      "--no-cache", "--secret", "id=tok,src=/t", str(ctx)]
    assert build_command(Builder("buildah", "buildah"), ctx, "i")[:3] == ["buildah", "bud", "--layers"]
    bk = build_command(Builder("docker", "docker", buildkit=True), ctx, "i")
    assert bk[:6] == ["docker", "buildx", "build", "--load", "--progress", "plain"]
    assert build_command(Builder("docker", "docker", False, False), ctx, "i")[:2] == ["docker", "build"]


def test_missing_tools_give_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no tool at all
    with pytest.raises(EngineError, match=r"no container tool to build with \(docker: not installed; "
                                          r"podman: not installed; buildah: not installed\)\. Install podman"):
        detect_builder()
    with pytest.raises(EngineError, match="podman: not installed"):
        detect_builder("podman")
    with pytest.raises(PushError, match=r"cannot push r\.io/m: no tool has it locally"):
        find_pusher("r.io/m")
    with pytest.raises(EngineError, match="must be one of docker, podman"):
        find_engine("run images", ("docker", "podman"), "kubectl", "engine")


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v podman"], capture_output=True).returncode != 0,
                    reason="podman not installed")
def test_podman_is_found_without_a_docker_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    builder = detect_builder()
    assert builder.name in ("podman",) and builder.cache_mounts and builder.secrets


@pytest.mark.parametrize(
    "image, registry",
    [("r8.im/me/model", "r8.im"), ("127.0.0.1:5555/m:ci", "127.0.0.1:5555"), ("localhost/m", "localhost"),
     ("me/model", "docker.io"), ("model", "docker.io"), ("ghcr.io/o/r@sha256:abc", "ghcr.io")],
)
def test_registry_of(image: str, registry: str) -> None:
    assert registry_of(image) == registry


def test_push_commands() -> None:
    assert push_command("podman", "podman", "r/m", insecure=True) == [
        "podman", "push", "--tls-verify=false", "r/m", "docker://r/m"]
    assert push_command("skopeo", "skopeo", "r/m", insecure=True) == [
        "skopeo", "copy", "--dest-tls-verify=false", "containers-storage:r/m", "docker://r/m"]
    assert push_command("buildah", "buildah", "r/m") == ["buildah", "push", "r/m", "docker://r/m"]
    assert push_command("docker", "docker", "r/m", insecure=True) == ["docker", "push", "r/m"]


def test_push_errors_are_explained() -> None:
    auth = explain_failure("ghcr.io/me/m:1", "podman", [
        "Copying blob sha256:1234", "Error: writing blob: initiating layer upload to /v2/me/m/blobs/uploads/ "
        "in ghcr.io: unauthorized: unauthenticated: User cannot be authenticated with the token provided."], 125)
    assert auth.startswith("push of ghcr.io/me/m:1 refused by ghcr.io: authentication required")
    assert "podman login ghcr.io" in auth and "unauthorized" in auth
    assert "docker login" in explain_failure("r.io/m", "docker", ["denied: requested access to the resource is denied"], 1)
    tls = explain_failure("10.0.0.5:5000/m", "podman", [
        'Error: ... pinging container registry 10.0.0.5:5000: Get "https://10.0.0.5:5000/v2/": '
        "http: server gave HTTP response to HTTPS client"], 125)
    assert "pass --insecure" in tls
    down = explain_failure("127.0.0.1:1/m", "skopeo", ["dial tcp 127.0.0.1:1: connect: connection refused"], 1)
    assert "cannot reach the registry 127.0.0.1:1" in down
    dns = explain_failure("reg.invalid/m", "podman", [
        'Error: pinging container registry reg.invalid: Get "https://reg.invalid/v2/": dial tcp: '
        "lookup reg.invalid on 10.0.0.1:53: server misbehaving"], 125)
    assert "cannot reach the registry reg.invalid" in dns
    # docker has no TLS flag for push: the fix is the daemon's setting, not --insecure.
    docker_tls = explain_failure("10.0.0.5:5000/m", "docker", [
        'Get "https://10.0.0.5:5000/v2/": http: server gave HTTP response to HTTPS client'], 1)
    assert "add 10.0.0.5:5000 to the Docker daemon's insecure-registries" in docker_tls
    assert "--insecure" not in docker_tls
    # A local "permission denied" is not a login problem.
    local = explain_failure("r.io/m", "podman", [
        "Error: open /var/lib/containers/storage/overlay/l/ABC: permission denied"], 125)
    assert "authentication" not in local and local.startswith("push of r.io/m with podman failed (exit code 125)")


def test_run_args() -> None:
    podman = run_args("podman", "podman", "img", 8123, {"A": "1"}, gpus=True, name="c1")
    assert podman == ["podman", "run", "-d", "--name", "c1", "--network", "host", "-e", "PORT=8123", "-e", "A=1",
                      "--device", "nvidia.com/gpu=all", "img"]
    docker = run_args("docker", "docker", "img", 9000, gpus=True, command=["python", "-m", "cogkit.server", "--x-mode", "train"])
    assert docker == ["docker", "run", "-d", "--network", "host", "-e", "PORT=9000", "--gpus", "all", "img",
                      "python", "-m", "cogkit.server", "--x-mode", "train"]


# --- CLI ------------------------------------------------------------------------------------


def _cogkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cogkit", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _hello(root: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cog.yaml").write_text(f'build:\n  python_version: "3.11"\nrun: "predict.py:Predictor"\n{extra}')
    (root / "predict.py").write_text(
        "from cog import BasePredictor\n\nclass Predictor(BasePredictor):\n"
        "    def predict(self, name: str = 'x') -> str:\n        return 'hi ' + name\n"
    )
    return root


def test_cli_dockerfile_only_writes_the_context(tmp_path: Path) -> None:
    project = _hello(tmp_path / "hello")
    proc = _cogkit("build", "--dockerfile-only", cwd=project)
    assert proc.returncode == 0, proc.stderr
    dockerfile = Path(proc.stdout.strip())
    assert dockerfile == project / ".cog" / "build" / "Dockerfile"
    text = dockerfile.read_text()
    assert text.startswith("# Generated by cogkit build") and "FROM python:3.11-slim" in text
    assert (dockerfile.parent / "src" / "predict.py").is_file()
    assert (dockerfile.parent / "src" / ".cog" / "openapi_schema.json").is_file()


def test_cli_push_needs_an_image_name(tmp_path: Path) -> None:
    project = _hello(tmp_path / "hello")
    proc = _cogkit("push", cwd=project)
    assert proc.returncode == 1
    assert "no image name to push to" in proc.stderr
    proc = _cogkit("push", "a/b", "-t", "c/d", cwd=project)
    assert proc.returncode == 1 and "two image names given" in proc.stderr


def test_cli_build_reports_a_broken_predictor(tmp_path: Path) -> None:
    project = _hello(tmp_path / "broken")
    (project / "predict.py").write_text("import not_a_module_anywhere\n")
    proc = _cogkit("build", "--dockerfile-only", cwd=project)
    assert proc.returncode == 1
    assert "could not compute the OpenAPI schema" in proc.stderr
    assert "not_a_module_anywhere" in proc.stderr
