"""End to end, with no Docker daemon: ``cogkit build`` a CPU model with podman,
``cogkit push`` it to a local registry, delete the local copy, pull it back and run
it, then get READY from /health-check and one successful prediction.

Everything stays on 127.0.0.1; configs go through CONTAINERS_* variables, so
nothing global is reconfigured. The base image is a Debian python built with
mmdebstrap from the Debian mirror (no image pull) and tagged python:3.11-slim so the
generated ``FROM python:3.11-slim`` resolves locally. The base tarball and the image
store are cached between runs under $COGKIT_CI_CACHE (default ~/.cache/cogkit-ci);
registry data and run-time state live in a temporary folder. The container tools come from
scripts/install-container-tools.sh (which .ci/run calls); the tests skip only when
they cannot be installed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOOLS = ("podman", "buildah", "skopeo", "runc", "docker-registry", "mmdebstrap")
SUITE = "bookworm"  # Debian 12: python 3.11
BASE_TAG = "docker.io/library/python:3.11-slim"
BASE_PACKAGES = "python3,python3-pip,python-is-python3,ca-certificates"
BASE_HOOK = 'rm -f "$1"/usr/lib/python3.*/EXTERNALLY-MANAGED; find "$1"/usr -name __pycache__ -prune -exec rm -rf {} +'
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ULIMIT = 4096


def _missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _ensure_tools() -> None:
    if not _missing_tools():
        return
    proc = subprocess.run(["bash", str(REPO / "scripts" / "install-container-tools.sh")],
                          capture_output=True, text=True, timeout=600)
    missing = _missing_tools()
    if missing:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        pytest.skip(f"container tools unavailable ({', '.join(missing)}) and could not be installed: {detail[0]}")


def _debian_mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    return "http://deb.debian.org/debian"


def _cache_dir() -> Path:
    cache = Path(os.environ.get("COGKIT_CI_CACHE", Path.home() / ".cache" / "cogkit-ci"))
    cache.mkdir(parents=True, exist_ok=True)
    return cache


BASE_KEY = hashlib.sha256(f"{SUITE}|{BASE_PACKAGES}|{BASE_HOOK}".encode()).hexdigest()[:12]
STORAGE_LIMIT = 4 * 1024**3  # wipe the cached image store beyond this


def _base_tarball() -> Path:
    """The Debian python root filesystem, built once and cached (key: suite + packages + hook)."""
    tarball = _cache_dir() / f"debian-{SUITE}-python-{BASE_KEY}.tar"
    if tarball.is_file():
        return tarball
    partial = tarball.with_name(tarball.stem + ".partial.tar")
    subprocess.run(
        [
            "mmdebstrap", "--quiet", "--format=tar", "--variant=minbase", f"--include={BASE_PACKAGES}",
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*", f"--customize-hook={BASE_HOOK}",
            SUITE, str(partial), _debian_mirror(),
        ],
        check=True, timeout=600,
    )
    partial.rename(tarball)
    return tarball


def _image_store() -> Path:
    """The image store, kept between runs like the base tarball: deleting hundreds of MB
    of layers costs more than the whole test on a slow disk, and kept layers make reruns
    quick. Capped: past STORAGE_LIMIT it starts over."""
    store = _cache_dir() / "containers-storage"
    if store.is_dir():
        size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file() and not f.is_symlink())
        if size > STORAGE_LIMIT:
            shutil.rmtree(store, ignore_errors=True)
    return store


@dataclass
class Containers:
    env: dict[str, str]
    registry: str  # host:port of the local registry
    work: Path

    def run(self, *cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def cogkit(self, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cogkit", *args], cwd=cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    from cogkit.build.runner import free_port

    return free_port()


# Waits are bounded generously: on a 2-core box running other work a registry or a model
# server can take many times as long as on an idle one. What is slow fails with what it was.
READY_TIMEOUT = 120.0


def _wait_until(what: str, check, timeout: float = READY_TIMEOUT, proc: subprocess.Popen | None = None) -> None:
    """Poll ``check()`` until it is true; fail after ``timeout`` s (or when ``proc`` exits)
    with a message saying what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode} first")
        try:
            if check():
                return
        except (httpx.HTTPError, ValueError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> str:
    """Stop a process this test started: ``sig``, then SIGKILL after ``timeout`` s.
    Returns what it printed (when its output was piped)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


@pytest.fixture(scope="module")
def containers():
    _ensure_tools()
    # One session at a time on the cached image store (a second run waits here).
    lock = open(_cache_dir() / "containers.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield from _containers()
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _containers():
    # Not under pytest's basetemp: another pytest session of the same user prunes old
    # basetemps, and podman's runroot must outlive every test of this module.
    work = Path(tempfile.mkdtemp(prefix="cogkit-containers-"))
    conf = work / "conf"
    conf.mkdir()
    registry = f"127.0.0.1:{_free_port()}"
    volumes = f'volumes = ["{CA_BUNDLE}:{CA_BUNDLE}:ro"]' if CA_BUNDLE.is_file() else ""
    # Host quirks (see ../shared/reference/containers.md): runc, not crun (cgroup "hybrid"
    # hosts); explicit low ulimits (the host's own are refused); the host CA bundle
    # visible to RUN steps for TLS-intercepted egress, without baking it into layers.
    (conf / "containers.conf").write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={ULIMIT}:{ULIMIT}", "nproc={ULIMIT}:{ULIMIT}"]\n'
        f"{volumes}\n"
        "[engine]\n"
        'runtime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'tmp_dir = "{work}/libpod-tmp"\n'
    )
    # Layers persist (graphroot); run-time state is per session (runroot, tmp_dir above).
    (conf / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{_image_store()}"\nrunroot = "{work}/run"\n'
    )
    (conf / "registries.conf").write_text(
        f'unqualified-search-registries = ["docker.io"]\n[[registry]]\nlocation = "{registry}"\ninsecure = true\n'
    )
    (conf / "registry.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {work}/registry}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: {registry}}}\n"
    )
    env = dict(os.environ)
    env.update(
        CONTAINERS_CONF=str(conf / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(conf / "storage.conf"),
        CONTAINERS_REGISTRIES_CONF=str(conf / "registries.conf"),
        BUILDAH_ISOLATION="chroot",
    )
    env.pop("DOCKER_HOST", None)
    c = Containers(env, registry, work)

    reg_log = open(work / "registry.log", "w")
    reg = subprocess.Popen(["docker-registry", "serve", str(conf / "registry.yml")], stdout=reg_log,
                           stderr=subprocess.STDOUT)
    try:
        try:
            _wait_until("the local registry answering", lambda: httpx.get(f"http://{registry}/v2/", timeout=5)
                        .status_code == 200, proc=reg)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{(work / 'registry.log').read_text()}") from None
        have = c.run("podman", "image", "inspect", BASE_TAG, "--format", '{{index .Labels "cogkit.ci.base"}}',
                     check=False).stdout.strip()
        if have != BASE_KEY:
            c.run("podman", "import", "-q",
                  "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]',
                  "--change", f"LABEL cogkit.ci.base={BASE_KEY}",
                  str(_base_tarball()), BASE_TAG)
        yield c
    finally:
        try:
            c.run("podman", "rm", "-a", "-f", "-t", "1", check=False, timeout=120)
            names = c.run("podman", "images", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
            ours = [n for n in names if n.startswith(registry + "/")]
            if ours:
                c.run("podman", "rmi", "-f", *ours, check=False, timeout=120)  # untag; the layers stay cached
        finally:  # the registry goes even when podman hangs
            _stop(reg)
            reg_log.close()
            shutil.rmtree(work, ignore_errors=True)


PREDICT_PY = '''
import os
import subprocess

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self):
        self.weights = os.path.getsize("weights/model.bin")
        with open("/opt/e2e-marker.txt") as f:
            self.marker = f.read().strip()

    def predict(self, text: str = Input(description="who to greet"),
                repeat: int = Input(default=1, ge=1, le=3)) -> str:
        import six  # from requirements.txt

        jq = subprocess.run(["jq", "-n", "1+1"], capture_output=True, text=True).stdout.strip()
        return " ".join([f"hello {text}"] * repeat) + (
            f" | weights={self.weights} marker={self.marker} six={six.__version__} jq={jq}"
            f" style={os.environ.get('GREETING_STYLE')} notes={os.path.exists('notes')}"
        )
'''

COG_YAML = """
build:
  python_version: "3.11"
  system_packages:
    - jq
  python_requirements: requirements.txt
  run:
    - echo baked > /opt/e2e-marker.txt
run: "predict.py:Predictor"
environment:
  - GREETING_STYLE=plain
"""

WEIGHTS_BYTES = 11 * 1024 * 1024
EXPECTED_OUTPUT = f"hello world hello world | weights={WEIGHTS_BYTES} marker=baked six=1.16.0 jq=2 style=plain notes=False"


SECRET_RUN = """    - command: test "$(cat /run/secrets/token)" = s3cret
      mounts:
        - {type: secret, id: token, target: /run/secrets/token}"""


def _model(root: Path, extra_run: str | None = None, secret: bool = False) -> Path:
    """The e2e model project; ``secret`` adds a build.run step that needs --secret id=token."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "predict.py").write_text(PREDICT_PY)
    runs = "    - echo baked > /opt/e2e-marker.txt"
    if secret:
        runs += "\n" + SECRET_RUN
        (root.parent / f"{root.name}.token").write_text("s3cret")
    if extra_run:
        runs += f"\n    - {extra_run}"
    (root / "cog.yaml").write_text(COG_YAML.replace("    - echo baked > /opt/e2e-marker.txt", runs))
    (root / "requirements.txt").write_text("six==1.16.0\n")
    (root / "weights").mkdir(exist_ok=True)
    with open(root / "weights" / "model.bin", "wb") as f:
        f.truncate(WEIGHTS_BYTES)
    (root / "notes").mkdir(exist_ok=True)
    (root / "notes" / "draft.txt").write_text("not for the image\n")
    (root / ".dockerignore").write_text("notes/\n*.tmp\n")
    return root


def test_build_push_pull_run_predict(containers: Containers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cogkit.build.runner import run_image

    project = _model(tmp_path / "e2e-model", secret=True)
    image = f"{containers.registry}/e2e-model:ci"
    secret = f"id=token,src={tmp_path / 'e2e-model.token'}"

    build = containers.cogkit("build", "-t", image, "--separate-weights", "--secret", secret, cwd=project)
    assert build.returncode == 0, build.stderr[-4000:]
    assert "separate weights layer: 1 file(s)" in build.stderr
    assert build.stdout.strip().splitlines()[-1] == image

    # Labels: the schema is the runtime schema, the config is cog.yaml.
    labels = json.loads(containers.run("podman", "image", "inspect", image, "--format", "{{json .Labels}}").stdout)
    schema = json.loads(containers.cogkit("schema", cwd=project).stdout)
    assert json.loads(labels["run.cog.openapi_schema"]) == schema
    assert json.loads(labels["run.cog.config"])["run"] == "predict.py:Predictor"
    assert labels["run.cog.version"]

    push = containers.cogkit("push", image, "--insecure", "--separate-weights", "--secret", secret, cwd=project)
    assert push.returncode == 0, push.stderr[-4000:]
    assert "pushed" in push.stderr

    inspect = json.loads(containers.run("skopeo", "inspect", "--tls-verify=false", f"docker://{image}").stdout)
    assert inspect["Labels"]["run.cog.openapi_schema"] == labels["run.cog.openapi_schema"]
    containers.run("podman", "rmi", "-f", image)
    assert containers.run("podman", "image", "exists", image, check=False).returncode != 0

    # run_image pulls the image back from the registry (host network, free port).
    for key in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF"):
        monkeypatch.setenv(key, containers.env[key])
    with run_image(image, engine="podman", setup_timeout=READY_TIMEOUT * 2) as url:
        health = httpx.get(f"{url}/health-check", timeout=5).json()
        assert health["status"] == "READY"
        resp = httpx.post(f"{url}/predictions", json={"input": {"text": "world", "repeat": 2}}, timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "succeeded", body
    assert body["output"] == EXPECTED_OUTPUT
    assert not _our_containers(containers), "run_image left its container behind"

    # The same image through the CLI: cogkit predict --image, then cogkit serve --image.
    pred = containers.cogkit("predict", "--image", image, "-i", "text=world", "-i", "repeat=2", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:]
    assert pred.stdout.strip() == EXPECTED_OUTPUT

    port = _free_port()
    serve = subprocess.Popen([sys.executable, "-m", "cogkit", "serve", "--image", image, "--port", str(port)],
                             cwd=tmp_path, env=containers.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until("cogkit serve --image READY", lambda: httpx.get(f"{url}/health-check", timeout=5)
                        .json().get("status") == "READY", proc=serve)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_stop(serve, signal.SIGINT, timeout=30)[-3000:]}") from None
        resp = httpx.post(f"{url}/predictions", json={"input": {"text": "world", "repeat": 2}}, timeout=60)
        assert resp.json()["output"] == EXPECTED_OUTPUT
    finally:
        out = _stop(serve, signal.SIGINT, timeout=60)
    assert serve.returncode == 130, out
    assert not _our_containers(containers), "cogkit serve --image left its container behind"


def _our_containers(containers: Containers) -> list[str]:
    names = containers.run("podman", "ps", "-a", "--format", "{{.Names}}").stdout.split()
    return [n for n in names if n.startswith("cogkit-run-")]


def test_setup_failure_is_reported(containers: Containers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cogkit.build.runner import ImageRunError, run_image

    project = _model(tmp_path / "setup-fails")
    (project / "predict.py").write_text(PREDICT_PY.replace(
        "        self.weights =", "        raise RuntimeError('weights are corrupt')\n        self.weights ="))
    image = "localhost/setup-fails:ci"
    build = containers.cogkit("build", "-q", "-t", image, cwd=project)
    assert build.returncode == 0, build.stderr[-3000:]
    for key in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF"):
        monkeypatch.setenv(key, containers.env[key])
    with pytest.raises(ImageRunError, match="model setup failed") as err:
        with run_image(image, setup_timeout=READY_TIMEOUT * 2):
            pass
    assert "weights are corrupt" in str(err.value)
    assert not _our_containers(containers)
    containers.run("podman", "rmi", "-f", image, check=False)


def test_docker_cli_through_podmans_api(containers: Containers, tmp_path: Path) -> None:
    """With a Docker API answering (here podman's), the docker CLI is picked first and
    builds (legacy builder: cache mounts handled server-side) and pushes."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI on this machine (only podman/buildah are required)")
    sock = containers.work / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], env=containers.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(containers.env, DOCKER_HOST=f"unix://{sock}")
    try:
        _wait_until("podman's Docker API socket", sock.exists, proc=service)
        # The legacy docker builder cannot pass build secrets: a clear error, before building.
        with_secret = _model(tmp_path / "needs-secret", secret=True)
        proc = subprocess.run([sys.executable, "-m", "cogkit", "build", "-t", "localhost/needs-secret:ci"],
                              cwd=with_secret, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1
        assert "build secrets (build.run mounts / --secret) need BuildKit" in proc.stderr

        project = _model(tmp_path / "via-docker")
        image = f"{containers.registry}/e2e-model:via-docker"  # same repository: its layers are there already
        proc = subprocess.run([sys.executable, "-m", "cogkit", "push", image, "--insecure"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"building {image} with docker" in proc.stderr
        assert "pushed" in proc.stderr and "with docker" in proc.stderr
        containers.run("skopeo", "inspect", "--tls-verify=false", f"docker://{image}")
    finally:
        _stop(service, timeout=30)


def test_build_failure_names_the_failing_step(containers: Containers, tmp_path: Path) -> None:
    project = _model(tmp_path / "broken-model", extra_run="sh -c 'echo about to fail; exit 3'")
    proc = containers.cogkit("build", "-q", "-t", "localhost/broken-model:ci", cwd=project)
    assert proc.returncode == 1
    message = proc.stderr
    assert re.search(r"build failed at step \d+/\d+: RUN sh -c 'echo about to fail; exit 3'", message), message
    assert "about to fail" in message


# bcrypt (the only scheme docker-registry's htpasswd accepts) of "pw", cost 4: a constant,
# so the test needs neither the crypt module (gone in Python 3.13) nor apache2-utils.
HTPASSWD = "ci:$2b$04$SRN3pjfobVNee3h6HMReOuA87sYfR6GXFyxPSOBjE6bF9ZvxEf0/G\n"


def test_push_failures_are_explained(containers: Containers, tmp_path: Path) -> None:
    """Real podman pushes that fail: a registry that wants a login (htpasswd auth), the
    same plain-HTTP registry without --insecure, and a port nobody listens on. Each
    message says what to do."""
    (tmp_path / "htpasswd").write_text(HTPASSWD)
    registry = f"127.0.0.1:{_free_port()}"
    (tmp_path / "auth.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path}/data}}}}\n"
        f"http: {{addr: {registry}}}\n"
        f"auth: {{htpasswd: {{realm: ci, path: {tmp_path}/htpasswd}}}}\n"
    )
    reg = subprocess.Popen(["docker-registry", "serve", str(tmp_path / "auth.yml")], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    image = f"{registry}/locked:ci"
    nobody = f"127.0.0.1:{_free_port()}/gone:ci"
    try:
        _wait_until("the htpasswd registry answering 401",
                    lambda: httpx.get(f"http://{registry}/v2/", timeout=5).status_code == 401, proc=reg)
        # With the right password the registry takes the push: the refusal below is about the login.
        auth = httpx.get(f"http://{registry}/v2/", auth=("ci", "pw"), timeout=5)
        assert auth.status_code == 200, auth.text
        containers.run("podman", "tag", BASE_TAG, image)
        containers.run("podman", "tag", BASE_TAG, nobody)

        proc = containers.cogkit("push", image, "--no-build", "--insecure", cwd=tmp_path, timeout=120)
        assert proc.returncode == 1
        assert f"push of {image} refused by {registry}: authentication required" in proc.stderr, proc.stderr
        assert f"podman login {registry}" in proc.stderr

        proc = containers.cogkit("push", image, "--no-build", cwd=tmp_path, timeout=120)
        assert proc.returncode == 1
        assert f"{registry} does not speak verified HTTPS. For a local plain-HTTP registry, pass --insecure" \
            in proc.stderr, proc.stderr

        proc = containers.cogkit("push", nobody, "--no-build", "--insecure", cwd=tmp_path, timeout=120)
        assert proc.returncode == 1
        assert f"push of {nobody} failed: cannot reach the registry {nobody.split('/')[0]}" in proc.stderr, proc.stderr
    finally:
        containers.run("podman", "rmi", image, nobody, check=False)
        _stop(reg)


WEIGHTS_PREDICT_PY = '''
import hashlib
import os

from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self):
        # cog.yaml weights: are in the image at their target
        with open("/models/e2e/model.bin", "rb") as f:
            self.model = f.read()
        with open("/models/e2e/vocab.json") as f:
            self.vocab = f.read().strip()

    def predict(self) -> str:
        digest = hashlib.sha256(self.model).hexdigest()[:12]
        return (f"CODE model={len(self.model)}:{digest} vocab={self.vocab} "
                f"in_code={os.path.exists('/src/weights/model.bin')}")
'''

WEIGHTS_COG_YAML = """
build:
  python_version: "3.11"
run: "predict.py:Predictor"
weights:
  - name: e2e-weights
    target: /models/e2e
    source:
      - uri: weights/model.bin
      - uri: {url}
"""


def _layer_files(containers: Containers, image: str, dest: Path) -> dict[str, list[str]]:
    """Layer digest -> the regular files in that layer, read from the pushed image's blobs."""
    import tarfile

    containers.run("skopeo", "copy", "--src-tls-verify=false", f"docker://{image}", f"dir:{dest}")
    manifest = json.loads((dest / "manifest.json").read_text())
    layers = {}
    for layer in manifest["layers"]:
        with tarfile.open(dest / layer["digest"].split(":", 1)[1], "r:*") as tar:
            layers[layer["digest"]] = sorted(m.name.lstrip("./") for m in tar.getmembers() if m.isfile())
    return layers


def test_managed_weights_are_one_layer_that_a_code_change_keeps(containers: Containers, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """cog.yaml weights: (a project file and a URL on a 127.0.0.1 server) build into one
    layer holding exactly the weights at their target; a build that changes only the code
    pushes the same weights layer (skopeo inspect); the running model reads them there."""
    import functools
    import http.server
    import threading

    from cogkit.build.runner import run_image

    served = tmp_path / "served"
    served.mkdir()
    (served / "vocab.json").write_text('{"hello": 1}\n')
    origin = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served)))
    thread = threading.Thread(target=origin.serve_forever, daemon=True)
    thread.start()
    try:
        project = tmp_path / "weights-model"
        (project / "weights").mkdir(parents=True)
        model = os.urandom(3 * 1024 * 1024)
        (project / "weights" / "model.bin").write_bytes(model)
        (project / "predict.py").write_text(WEIGHTS_PREDICT_PY)
        url = f"http://127.0.0.1:{origin.server_address[1]}/vocab.json"
        (project / "cog.yaml").write_text(WEIGHTS_COG_YAML.format(url=url))

        digests: dict[str, list[str]] = {}
        files: dict[str, dict[str, list[str]]] = {}
        for version in ("v1", "v2"):
            if version == "v2":  # the code only
                (project / "predict.py").write_text(WEIGHTS_PREDICT_PY.replace("CODE", "CODE-v2"))
            image = f"{containers.registry}/e2e-weights:{version}"
            push = containers.cogkit("push", image, "--insecure", cwd=project)
            assert push.returncode == 0, push.stderr[-4000:]
            assert "weights e2e-weights: 2 file(s), 3.1 MB -> /models/e2e (own layer)" in push.stderr, push.stderr
            inspect = json.loads(containers.run("skopeo", "inspect", "--tls-verify=false", f"docker://{image}").stdout)
            digests[version] = inspect["Layers"]
            files[version] = _layer_files(containers, image, tmp_path / f"blobs-{version}")
    finally:
        origin.shutdown()
        origin.server_close()

    weight_layers = [d for d, names in files["v1"].items() if any(n.startswith("models/e2e/") for n in names)]
    assert len(weight_layers) == 1, files["v1"]
    weights_layer = weight_layers[0]
    assert files["v1"][weights_layer] == ["models/e2e/model.bin", "models/e2e/vocab.json"]  # exactly the weights
    assert not any("model.bin" in n for d, names in files["v1"].items() if d != weights_layer for n in names)
    # The code changed, the weights layer did not: same digest, placed before the code layer.
    assert weights_layer in digests["v2"]
    assert digests["v1"] != digests["v2"]
    changed = [i for i, (a, b) in enumerate(zip(digests["v1"], digests["v2"])) if a != b]
    assert changed and min(changed) > digests["v2"].index(weights_layer), (digests, weights_layer)
    assert len(digests["v1"]) == len(digests["v2"])

    for key in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF"):
        monkeypatch.setenv(key, containers.env[key])
    image = f"{containers.registry}/e2e-weights:v2"
    containers.run("podman", "rmi", "-f", image)
    with run_image(image, engine="podman", setup_timeout=READY_TIMEOUT * 2) as url:
        resp = httpx.post(f"{url}/predictions", json={"input": {}}, timeout=60)
    assert resp.status_code == 200, resp.text
    digest = hashlib.sha256(model).hexdigest()[:12]
    assert resp.json()["output"] == f'CODE-v2 model={len(model)}:{digest} vocab={{"hello": 1}} in_code=False'
    assert not _our_containers(containers)


def test_gpu_python_recipe_builds_and_runs_on_a_debian_base(containers: Containers, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU images' Python recipe for real, minus CUDA (no nvidia/cuda image can be
    pulled here): the distribution's python3.X and python3.X-venv from apt, uv from PyPI
    into a venv of its own, a uv venv on
    /usr/bin/python3.X that may not download a Python, then cogkit installed into it. On
    the Debian base (bookworm: Python 3.11) in place of Ubuntu's."""
    from cogkit._version import __version__
    from cogkit.build import cuda
    from cogkit.build.dockerfile import UV_VERSION
    from cogkit.build.pipeline import BuildOptions, prepare_context
    from cogkit.config import load_config

    monkeypatch.setitem(cuda.UBUNTU_PYTHON, cuda.CUDA_IMAGES[cuda.DEFAULT_CUDA][2], ("3.11",))  # as bookworm
    project = tmp_path / "gpu-recipe"
    project.mkdir()
    (project / "predict.py").write_text(WEIGHTS_PREDICT_PY)
    (project / "cog.yaml").write_text('build:\n  gpu: true\n  python_version: "3.11"\nrun: "predict.py:Predictor"\n')
    ctx = tmp_path / "ctx"
    prepare_context(load_config(project), ctx, BuildOptions(base_image=BASE_TAG), log=lambda m: None)
    dockerfile = (ctx / "Dockerfile").read_text()
    assert "uv venv --seed --python /usr/bin/python3.11 /opt/venv" in dockerfile
    image = "localhost/gpu-recipe:ci"
    containers.run("podman", "build", "--layers", "-t", image, "-f", str(ctx / "Dockerfile"), str(ctx))
    try:
        probe = ("import sys, cogkit, os; print(sys.executable, sys.version_info[:2] == (3, 11), "
                 "os.path.realpath(sys.base_prefix), cogkit.__version__, os.environ['UV_PYTHON_DOWNLOADS'])")
        proc = containers.run("podman", "run", "--rm", "--network", "host", image, "python", "-c", probe)
        assert proc.stdout.split() == ["/opt/venv/bin/python", "True", "/usr", __version__, "never"], proc.stdout
        uv = containers.run("podman", "run", "--rm", image, "/opt/uv/bin/uv", "--version")
        assert uv.stdout.split()[:2] == ["uv", UV_VERSION]
    finally:
        containers.run("podman", "rmi", "-f", image, check=False)
