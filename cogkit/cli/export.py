"""``cogkit export kserve|k8s``: print Kubernetes manifests that run the model's image."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="print Kubernetes manifests (KServe, Deployment + Service) that run the model's image",
        description="Print YAML that runs an image made by `cogkit build` on Kubernetes, "
        "with probes on /health-check and the GPU and concurrency of cog.yaml.",
    )
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    kserve = targets.add_parser("kserve", help="a KServe InferenceService (serving.kserve.io/v1beta1)",
                                description="Print a KServe InferenceService whose predictor runs the image.")
    k8s = targets.add_parser("k8s", help="an apps/v1 Deployment and a v1 Service",
                             description="Print a Deployment of the image and a Service on port 80 in front of it.")
    for t in (kserve, k8s):
        t.add_argument("model", metavar="OWNER/NAME", help="the model's name; NAME becomes metadata.name")
        t.add_argument("--image", help="the image to run, e.g. registry.example.com/acme/resnet:v1 "
                       "(default: cog.yaml's image:)")
        t.add_argument("--project", default=".", metavar="DIR",
                       help="the folder with the model's cog.yaml (default: the current folder)")
        t.add_argument("--cpu", help="CPU request (default: 1, or 4 with build.gpu: true)")
        t.add_argument("--memory", help="memory request (default: 2Gi, or 16Gi with build.gpu: true)")
        t.set_defaults(handler=run)
    k8s.add_argument("--replicas", type=int, default=1, metavar="N", help="pods to run (default: 1)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from cogkit.build.manifests import k8s_deployment_and_service, kserve_inference_service, workload
    from cogkit.config import CONFIG_NAME, load_config
    from cogkit.exceptions import CogkitError

    project = Path(args.project)
    if not project.is_dir():
        raise CogkitError(f"--project: {project} is not a folder (give the folder that holds {CONFIG_NAME})")
    if not (project / CONFIG_NAME).is_file():
        raise CogkitError(f"--project: no {CONFIG_NAME} in {project} (run `cogkit init` there, "
                          "or give the model's folder with --project DIR)")
    config = load_config(project)
    w = workload(args.model, args.image, config, cpu=args.cpu, memory=args.memory)
    # Everything is checked before the first byte reaches stdout.
    docs = [kserve_inference_service(w)] if args.target == "kserve" else k8s_deployment_and_service(w, args.replicas)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False))
    return 0
