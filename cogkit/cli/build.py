"""``cogkit build``: build the model's container image from cog.yaml."""

from __future__ import annotations

import argparse
import sys


def add_build_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``cogkit build`` and ``cogkit push`` (which builds first)."""
    p.add_argument("-f", "--file", default="cog.yaml", help="path to cog.yaml (default: ./cog.yaml)")
    p.add_argument("--builder", choices=["docker", "podman", "buildah"],
                   help="container builder (default: docker if its daemon answers, else podman, else buildah)")
    p.add_argument("--separate-weights", action="store_true",
                   help="put files of 10 MB or more (weights) in their own layer, before the code")
    p.add_argument("--secret", action="append", default=[], metavar="id=NAME,src=PATH",
                   help="build secret for build.run mounts (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="build without the builder's layer cache")
    p.add_argument("--openapi-schema", metavar="FILE",
                   help="use this OpenAPI schema instead of computing it by importing the predictor")
    p.add_argument("-q", "--quiet", action="store_true", help="hide the builder's output unless it fails")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build the model's container image",
        description="Build a container image from cog.yaml with docker, podman or buildah "
        "(no Docker daemon needed with podman/buildah).",
    )
    p.add_argument("-t", "--tag", help="image name (default: cog.yaml image:, else cog-<folder>)")
    p.add_argument("--dockerfile-only", action="store_true",
                   help="write the Dockerfile and its build context to .cog/build/ and stop")
    add_build_flags(p)
    p.set_defaults(handler=run)


def build_options(args: argparse.Namespace, tag: str | None):
    from cogkit.build.pipeline import BuildOptions

    return BuildOptions(
        tag=tag,
        builder=args.builder,
        separate_weights=args.separate_weights,
        secrets=list(args.secret),
        no_cache=args.no_cache,
        quiet=args.quiet,
        openapi_schema=args.openapi_schema,
    )


def run(args: argparse.Namespace) -> int:
    from cogkit.build.pipeline import build_image, write_context
    from cogkit.config import load_config

    config = load_config(args.file)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    options = build_options(args, args.tag)
    if args.dockerfile_only:
        dockerfile = write_context(config, options)
        print(dockerfile)
        return 0
    print(build_image(config, options))
    return 0
