"""``cogkit push``: build the model's image and push it to a registry."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from cogkit.cli.build import add_build_flags

    p = sub.add_parser(
        "push",
        help="build the model's image and push it to a registry",
        description="Build the image (cached layers make this quick) and push it to any registry "
        "with podman, skopeo, buildah or docker.",
    )
    p.add_argument("image", nargs="?", help="image name, e.g. registry.example.com/me/model:v1")
    p.add_argument("-t", "--tag", help="same as IMAGE")
    p.add_argument("--no-build", action="store_true", help="push the image already built, without building")
    p.add_argument("--insecure", action="store_true",
                   help="allow a plain-HTTP or self-signed registry (e.g. a local one on 127.0.0.1)")
    p.add_argument("--push-tool", choices=["docker", "podman", "skopeo", "buildah"],
                   help="tool that pushes (default: the first that has the image locally)")
    add_build_flags(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cogkit.build.pipeline import build_image
    from cogkit.build.push import push_image
    from cogkit.cli.build import build_options
    from cogkit.config import load_config
    from cogkit.exceptions import CogkitError

    if args.image and args.tag and args.image != args.tag:
        raise CogkitError(f"two image names given ({args.image} and -t {args.tag}); give one")
    name = args.image or args.tag
    # An already-built image can be pushed from anywhere; building needs the project.
    config = load_config(args.file) if not (name and args.no_build) else None
    name = name or (config.image if config else None)
    if not name:
        raise CogkitError(
            "no image name to push to: give one (cogkit push registry.example.com/me/model) "
            "or set image: in cog.yaml"
        )
    if config is not None and not args.no_build:
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        build_image(config, build_options(args, name))
    print(f"==> pushing {name}", file=sys.stderr, flush=True)
    tool = push_image(name, args.push_tool, insecure=args.insecure, quiet=args.quiet)
    print(f"==> pushed {name} with {tool}", file=sys.stderr)
    print(name)
    return 0
