"""Entry point of the ``cogkit`` command: assembles the subcommands.

Keep this module and the subcommand registrations free of heavy imports: each
command imports what it needs inside its handler, so ``cogkit --help`` is fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cogkit._version import __version__
from cogkit.exceptions import CogkitError

# Subcommand modules, in the order `cogkit --help` lists them.
_COMMANDS = ["predict", "train", "serve", "hub", "schema", "init", "build", "push", "export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cogkit",
        description="Package, run and serve machine-learning models the way Cog does.",
    )
    parser.add_argument("--version", action="version", version=f"cogkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in _COMMANDS:
        importlib.import_module(f"cogkit.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except CogkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read stdout has gone (``cogkit predict | head -1``): stop quietly, and
        # keep the interpreter's final flush from failing on the closed pipe too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a program killed by it


if __name__ == "__main__":
    sys.exit(main())
