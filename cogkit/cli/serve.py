"""``cogkit serve``: run the HTTP prediction server for the project in the current folder."""

from __future__ import annotations

import argparse
import os
from typing import Any


def register(subparsers: Any) -> None:
    from cogkit.server.settings import add_arguments

    parser = subparsers.add_parser(
        "serve",
        help="serve the predictor over HTTP (Cog's prediction API)",
        description=(
            "Serve the predictor named by cog.yaml (or COG_PREDICT_TYPE_STUB) over HTTP with "
            "Cog's prediction protocol: POST /predictions, webhooks, uploads, /health-check."
        ),
    )
    add_arguments(parser)
    # `--image` (added by the build/push room): serve a built image instead of the project.
    parser.add_argument("--image", help="serve this built image (podman/docker, host network) instead of the project")
    parser.set_defaults(handler=_handle)


def _serve_image(args: argparse.Namespace) -> int:
    """``cogkit serve --image IMAGE``: the image's own server in the foreground (see
    cogkit.build.runner.serve_image); the server flags given are passed on to it."""
    from cogkit.build.runner import serve_image

    server_args: list[str] = []
    if args.host != "0.0.0.0":
        server_args += ["--host", args.host]
    if args.upload_url:
        server_args += ["--upload-url", args.upload_url]
    if args.await_explicit_shutdown:
        server_args += ["--await-explicit-shutdown", "true"]
    if args.mode != "predict":
        server_args += ["--x-mode", args.mode]
    if args.queue:
        server_args += ["--queue", str(args.queue)]
    return serve_image(args.image, port=args.port or int(os.environ.get("PORT") or 5000), server_args=server_args)


def _handle(args: argparse.Namespace) -> int:
    if args.image:
        return _serve_image(args)
    from cogkit.server.main import run
    from cogkit.server.settings import settings_from

    return run(settings_from(args))
