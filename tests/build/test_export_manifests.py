"""`cogkit export kserve|k8s` end to end: the real CLI's YAML, validated offline and strictly
(an unknown field fails, as under kubectl's default --validate=strict) against published schemas:

- Deployment, Service, and the pod parts of the InferenceService (metadata, containers):
  the Kubernetes JSON schemas that kubernetes-validate ships (its "-strict" set);
- the InferenceService: KServe's own CRD, its openAPIV3Schema (tests/fixtures/kserve/README.md
  says where it comes from), with ``additionalProperties: false`` added wherever the structural
  schema lists an object's fields, which is where the API server rejects unknown ones.

The validators are imported at the top and never skipped: CI installs the test extra.
"""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cogkit.build.dockerfile import SERVER_PORT, DockerfilePlan, render
from tests.fixtures.server.harness import ServerProcess

CRD = Path(__file__).parents[1] / "fixtures" / "kserve" / "serving.kserve.io_inferenceservices.yaml.gz"
CRD_SHA256 = "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff"  # KServe v0.20.0
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


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields rejected wherever it lists an object's fields."""
    s = dict(schema)
    if "properties" in s:
        s["properties"] = {k: _strict(v) for k, v in s["properties"].items()}
        if "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(s.get(key), dict):
            s[key] = _strict(s[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in s:
            s[key] = [_strict(x) for x in s[key]]
    return s


@functools.cache
def kserve_validator() -> jsonschema.Draft4Validator:
    raw = gzip.decompress(CRD.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == CRD_SHA256, "the vendored CRD is not KServe's file"
    crd = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # OpenAPI 3.0 schemas are draft-4 JSON Schema in what a CRD may use (boolean exclusive bounds).
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def k8s_errors(doc: dict[str, Any]) -> list[str]:
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"k8s {version}: {'.'.join(map(str, e.path))}: {e.message}")
    return errors


def kserve_errors(doc: dict[str, Any]) -> list[str]:
    errors = [f"CRD: {'.'.join(map(str, e.path))}: {e.message}" for e in kserve_validator().iter_errors(doc)]
    if errors:
        return errors
    # A CRD's metadata is a bare object (the API server checks it as ObjectMeta), and the
    # predictor is a PodSpec with KServe's fields beside: check those parts as a Pod too.
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


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    return doc


@pytest.mark.parametrize("path, value", [
    ("spec.predictor.bogus", 1),  # unknown fields, at each level
    ("spec.bogus", {}),
    ("spec.predictor.containers.0.bogus", "x"),
    ("spec.predictor.containers.0.livenessProbe.httpGet.bogus", "x"),
    ("metadata.bogus", "x"),  # ObjectMeta, through the Pod check
    ("spec.predictor.containerConcurrency", "four"),  # wrong types
    ("spec.predictor.containers.0.ports", {"containerPort": 5000}),
    ("spec.predictor.containers.0.resources.requests.cpu", "lots"),  # not a quantity
])
def test_the_kserve_validator_is_strict(tmp_path: Path, path: str, value: Any) -> None:
    (doc,) = exported(make_project(tmp_path / "m", gpu=True), "kserve", "acme/resnet", "--image", IMAGE)
    assert kserve_errors(doc) == []
    assert kserve_errors(_set(doc, path, value)) != []


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
