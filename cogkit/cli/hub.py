"""``cogkit hub``: Replicate's v1 HTTP API for many models, on a real database."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    from cogkit.hub.settings import add_arguments

    parser = subparsers.add_parser(
        "hub",
        help="serve Replicate's HTTP API for many models (self-hosted Replicate)",
        description=(
            "Serve Replicate's v1 HTTP API under /v1 for the models given with --model or in hub.yaml, "
            "so the official replicate clients (npm, PyPI) run against this machine. Predictions, "
            "files and webhooks live in a database (SQLite by default, or PostgreSQL)."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from cogkit.hub.main import run
    from cogkit.hub.settings import settings_from

    return run(settings_from(args))
