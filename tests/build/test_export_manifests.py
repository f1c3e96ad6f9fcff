"""`cogkit export kserve|k8s` end to end: the real CLI's YAML, validated offline and strictly
(an unknown field fails, as under kubectl's default --validate=strict) against published packages:

- Deployment, Service, and the pod parts of the InferenceService (metadata, containers):
  the Kubernetes JSON schemas that kubernetes-validate ships (its "-strict" set);
- the InferenceService: the ``kserve`` package's client models (V1beta1InferenceService and the
  Kubernetes types they embed, from the ``kubernetes`` client), walked by kserve_models_check.py
  in .venv-kserve: kserve pins protobuf < 7, which cogkit's .venv cannot take beside ray[serve].

Both come from PyPI at install time (the test extra; scripts/test.sh makes .venv-kserve). The
validators are never skipped: without .venv-kserve the KServe tests fail and say to run scripts/test.sh.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cogkit.build.dockerfile import SERVER_PORT, DockerfilePlan, render
from tests.fixtures.server.harness import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
# The kserve package's own venv (scripts/test.sh pins the version) and the check run in it.
KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
KSERVE_CHECK = Path(__file__).with_name("kserve_models_check.py")
# The oldest and the newest Kubernetes whose schemas the pinned kubernetes-validate ships that we check.
K8S_VERSIONS = ("1.28.0", "1.37.0")
DNS_1035 = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
IMAGE = "registry.example.com/acme/resnet:v1"

PREDICTOR = '''\
import os
import time
from cogkit import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        if os.path.exists("fail"):
            raise RuntimeError("setup failed on purpose")
        while not os.path.exists("go"):  # STARTING until the test says so
            time.sleep(0.02)

    def predict(self, text: str = "hi") -> str:
        return text
'''


def make_project(root: Path, gpu: bool, concurrency: int | None = None, extra: str = "") -> Path:
    """A project folder: cog.yaml (build.gpu, concurrency.max) and a predictor."""
    root.mkdir(parents=True, exist_ok=True)
    text = f'build:\n  python_version: "3.11"\n  gpu: {str(gpu).lower()}\nrun: "predict.py:Predictor"\n'
    if concurrency:
        text += f"concurrency:\n  max: {concurrency}\n"
    (root / "cog.yaml").write_text(text + extra)
    (root / "predict.py").write_text(PREDICTOR)
    return root


def export(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cogkit", "export", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def exported(cwd: Path, *args: str) -> list[dict[str, Any]]:
    r = export(cwd, *args)
    assert r.returncode == 0, r.stderr
    return list(yaml.safe_load_all(r.stdout))


# ---------------------------------------------------------------- validators


def k8s_errors(doc: dict[str, Any]) -> list[str]:
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"k8s {version}: {'.'.join(map(str, e.path))}: {e.message}")
    return errors


def kserve_model_errors(doc: dict[str, Any]) -> list[str]:
    """What kserve_models_check.py, run by .venv-kserve's python, finds wrong with ``doc``."""
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"{KSERVE_PYTHON.relative_to(ROOT)} is missing: run scripts/test.sh, which makes it "
                    "(the kserve package's own venv, which checks the InferenceService)", pytrace=False)
    r = subprocess.run([str(KSERVE_PYTHON), str(KSERVE_CHECK)], input=json.dumps(doc), capture_output=True,
                       text=True, timeout=60, check=False)
    if r.returncode not in (0, 1) or (r.returncode == 1) != bool(r.stdout.strip()):
        pytest.fail(f"kserve_models_check.py exited {r.returncode}: {r.stderr.strip()}\n"
                    "run scripts/test.sh to (re)install .venv-kserve", pytrace=False)
    return [f"kserve: {line}" for line in r.stdout.splitlines()]


def kserve_errors(doc: dict[str, Any]) -> list[str]:
    errors = kserve_model_errors(doc)
    if errors:
        return errors
    # The models are one Kubernetes release's (the kubernetes client's): check metadata and the
    # containers as a Pod too, against each release in K8S_VERSIONS.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": doc["metadata"],
           "spec": {"containers": doc["spec"]["predictor"]["containers"]}}
    return k8s_errors(pod)


def assert_valid_kserve(doc: dict[str, Any]) -> None:
    assert kserve_errors(doc) == []
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    # Rules of KServe's webhook and Knative that no schema holds:
    assert re.match(DNS_1035, doc["metadata"]["name"])
    (container,) = doc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    (port,) = container["ports"]  # Knative serves one port, named http1 (HTTP/1.1) or h2c
    assert port["name"] == "http1" and port["containerPort"] == SERVER_PORT
    assert container["livenessProbe"]["httpGet"]["port"] == port["containerPort"]  # Knative: the serving port
    assert container["readinessProbe"]["successThreshold"] >= 1  # Knative refuses a readiness probe below 1


def assert_valid_k8s(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment, service = docs
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    for doc in docs:
        assert k8s_errors(doc) == []
        assert re.match(DNS_1035, doc["metadata"]["name"])
    # What the API server checks beyond the schema, and what makes the Service reach the pods:
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    (sport,) = service["spec"]["ports"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert sport["port"] == 80 and ports[sport["targetPort"]] == SERVER_PORT
    return deployment, container


def assert_probes(container: dict[str, Any]) -> None:
    assert container["livenessProbe"]["httpGet"]["path"] == "/health-check"
    command = container["readinessProbe"]["exec"]["command"]
    assert command[0] == "python" and "/health-check" in command[-1]


# ---------------------------------------------------------------- the image the manifests run


def test_the_port_is_the_one_the_image_serves_on() -> None:
    dockerfile = render(DockerfilePlan(python_version="3.11", cogkit_wheel="cogkit.whl"))
    assert f"EXPOSE {SERVER_PORT}\n" in dockerfile
    assert 'CMD ["python", "-m", "cogkit.server"]' in dockerfile  # whose default port is SERVER_PORT


# ---------------------------------------------------------------- kserve


def test_kserve_gpu_project_is_a_valid_inference_service(tmp_path: Path) -> None:
    project = make_project(tmp_path / "m", gpu=True, concurrency=4)
    (doc,) = exported(project, "kserve", "acme/Res_Net.v2", "--image", IMAGE)  # DIR: the current folder
    assert_valid_kserve(doc)
    assert doc["metadata"]["name"] == "res-net-v2"
    assert doc["metadata"]["labels"]["cogkit.run/owner"] == "acme"
    assert doc["metadata"]["annotations"]["cogkit.run/model"] == "acme/Res_Net.v2"
    predictor = doc["spec"]["predictor"]
    assert predictor["containerConcurrency"] == 4  # cog.yaml concurrency.max
    (container,) = predictor["containers"]
    assert container["image"] == IMAGE
    assert_probes(container)
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}


def test_kserve_cpu_project_asks_for_no_gpu(tmp_path: Path) -> None:
    project = make_project(tmp_path / "m", gpu=False)
    (doc,) = exported(tmp_path, "kserve", "acme/resnet", "--image", IMAGE, "--project", str(project),
                      "--cpu", "500m", "--memory", "3Gi")
    assert_valid_kserve(doc)
    predictor = doc["spec"]["predictor"]
    assert predictor["containerConcurrency"] == 1  # Cog's default: one prediction at a time
    (container,) = predictor["containers"]
    assert_probes(container)
    assert "limits" not in container["resources"]
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "3Gi"}


# ---------------------------------------------------------------- k8s


@pytest.mark.parametrize("gpu", [True, False])
def test_k8s_is_a_valid_deployment_and_service(tmp_path: Path, gpu: bool) -> None:
    project = make_project(tmp_path / "m", gpu=gpu, concurrency=2)
    docs = exported(project, "k8s", "acme/resnet", "--image", IMAGE, "--replicas", "3")
    deployment, container = assert_valid_k8s(docs)
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == IMAGE
    assert_probes(container)
    limits = container["resources"].get("limits", {})
    assert ("nvidia.com/gpu" in limits) is gpu
    if gpu:
        assert limits["nvidia.com/gpu"] == 1


def test_k8s_replicas_default_to_one(tmp_path: Path) -> None:
    project = make_project(tmp_path / "m", gpu=False)
    deployment, _ = assert_valid_k8s(exported(project, "k8s", "acme/resnet", "--image", IMAGE))
    assert deployment["spec"]["replicas"] == 1


# ---------------------------------------------------------------- the validators reject


DELETE = object()


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize("path, value", [
    ("spec.predictor.bogus", 1),  # unknown fields, at each level
    ("spec.bogus", {}),
    ("bogus", "x"),
    ("spec.predictor.containers.0.bogus", "x"),
    ("spec.predictor.containers.0.livenessProbe.httpGet.bogus", "x"),
    ("spec.predictor.containers.0.readinessProbe.exec.bogus", []),
    ("metadata.bogus", "x"),
    ("spec.predictor.containerConcurrency", "four"),  # wrong types
    ("spec.predictor.containerConcurrency", True),
    ("spec.predictor.containers.0.ports", {"containerPort": 5000}),
    ("spec.predictor.containers.0.ports.0.containerPort", "5000"),
    ("spec.predictor.containers.0.image", None),
    ("spec.predictor.containers.0.livenessProbe.httpGet.port", 5000.0),  # IntOrString
    ("spec.predictor.containers.0.readinessProbe.exec.command", "python -c pass"),
    ("metadata.labels", ["x"]),
    ("spec.predictor.containers.0.resources.requests.cpu", "lots"),  # not a quantity
    ("spec.predictor.containers.0.resources.requests.memory", 2.5),
    ("spec.predictor.containers.0.name", DELETE),  # required fields
    ("spec.predictor.containers.0.ports.0.containerPort", DELETE),
    ("spec.predictor", DELETE),
])
def test_the_kserve_validator_is_strict(tmp_path: Path, path: str, value: Any) -> None:
    (doc,) = exported(make_project(tmp_path / "m", gpu=True), "kserve", "acme/resnet", "--image", IMAGE)
    assert kserve_errors(doc) == []
    assert kserve_model_errors(_set(doc, path, value)) != []  # the kserve models alone, not the Pod check


def test_the_kserve_validator_says_where_and_what(tmp_path: Path) -> None:
    (doc,) = exported(make_project(tmp_path / "m", gpu=False), "kserve", "acme/resnet", "--image", IMAGE)
    doc = _set(_set(doc, "spec.predictor.containers.0.livenessProbe.httpGet.bogus", 1),
               "spec.predictor.containerConcurrency", "four")
    errors = kserve_model_errors(doc)
    assert len(errors) == 2, errors
    assert any(e.startswith("kserve: spec.predictor.containers[0].livenessProbe.httpGet.bogus: unknown field: "
                            "V1HTTPGetAction has ") for e in errors), errors
    assert "kserve: spec.predictor.containerConcurrency: must be int, got 'four'" in errors


def test_the_kserve_validator_fails_without_its_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "KSERVE_PYTHON", tmp_path / ".venv-kserve" / "bin" / "python")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"\.venv-kserve/bin/python is missing: run scripts/test\.sh"):
        kserve_model_errors({})


@pytest.mark.parametrize("path, value", [
    ("spec.bogus", 1),
    ("spec.template.spec.containers.0.bogus", "x"),
    ("spec.template.spec.containers.0.readinessProbe.exec.bogus", []),
    ("spec.replicas", "three"),
])
def test_the_k8s_validator_is_strict(tmp_path: Path, path: str, value: Any) -> None:
    deployment, _ = exported(make_project(tmp_path / "m", gpu=False), "k8s", "acme/resnet", "--image", IMAGE)
    assert k8s_errors(deployment) == []
    assert k8s_errors(_set(deployment, path, value)) != []


# ---------------------------------------------------------------- the probes against a real server


def _probe(command: list[str], port: int) -> int:
    # The image's `python` is this interpreter here; the check reads $PORT as the server does.
    env = {**os.environ, "PORT": str(port)}
    probe = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, cwd="/",
                           check=False)
    return probe.returncode


def test_readiness_waits_for_setup_and_liveness_does_not(tmp_path: Path) -> None:
    project = make_project(tmp_path / "m", gpu=False)
    (doc,) = exported(project, "kserve", "acme/resnet", "--image", IMAGE)
    (container,) = doc["spec"]["predictor"]["containers"]
    ready = container["readinessProbe"]["exec"]["command"]
    live = container["livenessProbe"]["httpGet"]["path"]

    srv = ServerProcess(project, wait=False)
    try:
        srv.wait_status(("STARTING",), 60)
        # GET /health-check answers 200 during setup (liveness passes), readiness must not
        assert srv.client.get(live).status_code == 200
        assert _probe(ready, srv.port) != 0
        (project / "go").touch()
        srv.wait_status(("READY",), 60)
        assert _probe(ready, srv.port) == 0
    finally:
        srv.stop()
    assert _probe(ready, srv.port) != 0  # no server: not ready


def test_readiness_fails_after_a_failed_setup(tmp_path: Path) -> None:
    project = make_project(tmp_path / "m", gpu=False)
    (project / "fail").touch()
    (doc,) = exported(project, "kserve", "acme/resnet", "--image", IMAGE)
    ready = doc["spec"]["predictor"]["containers"][0]["readinessProbe"]["exec"]["command"]
    srv = ServerProcess(project, wait=False)
    try:
        srv.wait_status(("SETUP_FAILED",), 60)
        assert srv.client.get("/health-check").status_code == 200
        assert _probe(ready, srv.port) != 0
    finally:
        srv.stop()
