"""Kubernetes manifests that run a model image: ``cogkit export kserve`` and ``cogkit export k8s``.

Pure functions from the model's OWNER/NAME, the image and its cog.yaml to plain dicts; the
CLI writes them as YAML. The image is the one ``cogkit build`` makes: its CMD runs
``python -m cogkit.server`` on :data:`~cogkit.build.dockerfile.SERVER_PORT` (``$PORT`` wins),
and cog.yaml's environment and ``concurrency.max`` are already baked into it.

Probes: ``GET /health-check`` answers 200 as soon as the server listens, while setup() still
runs and after it failed too (the state is in the body, as in Cog). So liveness is a plain GET
of it (the server answers), and readiness reads the body with the image's own python and passes
only on READY or BUSY: no traffic reaches a pod that is still loading weights or failed setup.
KServe's Knative keeps an exec readiness probe on the container (and adds its own TCP check).

Validation errors name the CLI's words (OWNER/NAME, --image, ...): the CLI is the only caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cogkit.build.dockerfile import SERVER_PORT
from cogkit.config import Config
from cogkit.exceptions import CogkitError

HEALTH_PATH = "/health-check"
KSERVE_CONTAINER = "kserve-container"  # the name KServe gives a custom predictor's container
GPU_RESOURCE = "nvidia.com/gpu"
LABEL_PREFIX = "cogkit.run"  # the reverse of the images' run.cogkit.* labels
SERVICE_PORT = 80
# (cpu, memory) requested when no flag says; a GPU model also stages its weights in host memory.
DEFAULT_REQUESTS = {False: ("1", "2Gi"), True: ("4", "16Gi")}

# An OWNER or NAME as Replicate and `cogkit hub` take them, kept short enough to be a label value.
_MODEL_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
# RFC 1035 label: what Services and InferenceServices need (a Deployment takes it too).
_DNS_LABEL = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
# Kubernetes' resource.Quantity: a decimal number with an optional SI/binary suffix or exponent.
_QUANTITY = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
# [registry[:port]/]path[:tag][@digest], path lowercase: a loose form of Docker's reference grammar.
_IMAGE = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?[a-z0-9._/-]+"  # registry, path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[a-z0-9]+:[a-f0-9]{32,})?$"  # tag, digest
)

# The readiness check. `-I` keeps the project folder (the image's WORKDIR) off sys.path, so a
# user's json.py or http/ cannot shadow the stdlib; $PORT is what the server itself listens on.
READY_CHECK = (
    "import json, os, sys, urllib.request; "
    f"url = 'http://127.0.0.1:%s{HEALTH_PATH}' % os.environ.get('PORT', '{SERVER_PORT}'); "
    "sys.exit(json.load(urllib.request.urlopen(url, timeout=4)).get('status') not in ('READY', 'BUSY'))"
)


@dataclass(frozen=True)
class Workload:
    """What the manifests need, checked: see :func:`workload`."""

    owner: str
    name: str  # NAME as given
    k8s_name: str  # metadata.name
    image: str
    gpu: bool
    cpu: str
    memory: str
    concurrency: int  # predictions one container runs at once (Cog's default is 1)


def k8s_name(name: str) -> str:
    """NAME as a Kubernetes object name: lowercase, '.' and '_' as '-'."""
    derived = re.sub(r"[._-]+", "-", name.lower())
    if not _DNS_LABEL.match(derived):
        raise CogkitError(
            f"OWNER/NAME: NAME {name!r} gives the Kubernetes name {derived!r}, which is not a DNS-1035 "
            "label (lowercase letters, digits and '-', starting with a letter, ending with a letter "
            "or digit, at most 63 characters)"
        )
    return derived


def workload(model: str, image: str | None, config: Config, *, cpu: str | None = None,
             memory: str | None = None) -> Workload:
    """Check the inputs and gather them; ``image`` None or empty falls back to cog.yaml's ``image:``."""
    owner, sep, name = model.partition("/")
    if not sep or not _MODEL_PART.match(owner) or not _MODEL_PART.match(name):
        raise CogkitError(
            f"OWNER/NAME: {model!r} must be two parts joined by '/', each of letters, digits, '.', '_' "
            "and '-', starting and ending with a letter or digit, at most 63 characters (e.g. acme/resnet)"
        )
    image = image or config.image
    if not image:
        raise CogkitError(
            "--image is required: the image `cogkit build` or `cogkit push` made, e.g. "
            "--image registry.example.com/acme/resnet:v1 (or set image: in cog.yaml)"
        )
    if not _IMAGE.match(image):
        raise CogkitError(
            f"--image: {image!r} is not an image reference like registry.example.com/acme/resnet:v1 "
            "(a lowercase path, an optional :tag and @sha256:digest, no spaces)"
        )
    gpu = config.build.gpu
    default_cpu, default_memory = DEFAULT_REQUESTS[gpu]
    for flag, value in (("--cpu", cpu), ("--memory", memory)):
        if value is not None and not _QUANTITY.match(value):
            raise CogkitError(f"{flag}: {value!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 16Gi)")
    return Workload(owner, name, k8s_name(name), image, gpu, cpu or default_cpu, memory or default_memory,
                    config.concurrency_max or 1)


def _metadata(w: Workload) -> dict[str, Any]:
    return {
        "name": w.k8s_name,
        "labels": _labels(w),
        "annotations": {f"{LABEL_PREFIX}/model": f"{w.owner}/{w.name}"},  # as given, case and all
    }


def _labels(w: Workload) -> dict[str, str]:
    return {"app.kubernetes.io/name": w.k8s_name, f"{LABEL_PREFIX}/owner": w.owner}


def _container(w: Workload, name: str, port_name: str) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": w.cpu, "memory": w.memory}}
    if w.gpu:
        resources["limits"] = {GPU_RESOURCE: 1}  # extended resources go in limits (requests follow)
    return {
        "name": name,
        "image": w.image,
        "ports": [{"name": port_name, "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": SERVER_PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "exec": {"command": ["python", "-I", "-c", READY_CHECK]},
            "periodSeconds": 5,
            "timeoutSeconds": 5,  # above urlopen's 4 s, so a slow answer fails with its own message
            "successThreshold": 1,  # Kubernetes' default; Knative refuses a readiness probe below 1
            "failureThreshold": 2,
        },
        "resources": resources,
    }


def kserve_inference_service(w: Workload) -> dict[str, Any]:
    """A KServe InferenceService whose predictor is the image itself (a custom container)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(w),
        "spec": {
            "predictor": {
                # Requests past this wait in KServe's queue instead of being answered 409 by the server.
                "containerConcurrency": w.concurrency,
                # "http1": the server speaks HTTP/1.1 only (Knative would try h2c on "h2c").
                "containers": [_container(w, KSERVE_CONTAINER, "http1")],
            }
        },
    }


def k8s_deployment_and_service(w: Workload, replicas: int = 1) -> list[dict[str, Any]]:
    """An apps/v1 Deployment of the image and a ClusterIP Service on port 80 in front of it."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise CogkitError(f"--replicas: must be an integer >= 1, got {replicas!r}")
    selector = {"app.kubernetes.io/name": w.k8s_name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(w),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": _labels(w)},
                "spec": {"containers": [_container(w, "model", "http")]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(w),
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]
