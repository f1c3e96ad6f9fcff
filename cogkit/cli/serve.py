"""``cogkit serve``: run the HTTP prediction server for the project in the current folder."""

from __future__ import annotations

import argparse
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
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from cogkit.server.main import run
    from cogkit.server.settings import settings_from

    return run(settings_from(args))
