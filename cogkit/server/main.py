"""Start the HTTP server: ``python -m cogkit.server`` and ``cogkit serve``.

uvicorn with uvloop + httptools, no access log unless COG_LOG_LEVEL=debug. Signals
are handled here rather than by uvicorn: SIGTERM/SIGINT start the graceful
shutdown (in-flight predictions finish or are canceled, their webhooks are sent,
the worker is stopped) unless ``--await-explicit-shutdown`` is set, in which case
SIGTERM is ignored and only ``POST /shutdown`` stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from cogkit._version import COG_COMPAT_VERSION, __version__
from cogkit.exceptions import CogkitError
from cogkit.server.settings import Settings, add_arguments, settings_from

log = logging.getLogger("cogkit.server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cogkit.server",
        description="Serve a predictor over HTTP with Cog's prediction protocol.",
    )
    parser.add_argument(
        "-v", "--version", action="version", version=f"cogkit {__version__} (Cog {COG_COMPAT_VERSION} protocol)"
    )
    add_arguments(parser)
    return parser


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("cogkit")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


async def _serve(settings: Settings) -> int:
    import uvicorn

    from cogkit.server.app import App
    from cogkit.server.service import PredictionService

    service = PredictionService(settings)
    service.begin()  # spawn the worker first: its start-up overlaps ours
    app = App(service)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="none",
        http="httptools",
        lifespan="on",
        access_log=settings.log_level == "debug",
        log_config=None,
        log_level=settings.log_level,
        server_header=False,
        timeout_graceful_shutdown=5,
    )

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[override]
            yield  # signals are ours (see _install_signals)

    server = Server(config)

    def exit_now() -> None:
        server.should_exit = True

    service.on_exit = exit_now
    _install_signals(service, settings, server)
    await server.serve()
    if not service.draining:
        await service.shutdown()
    return 0 if service.boot_error is None or settings.await_explicit_shutdown else 1


def _install_signals(service, settings: Settings, server) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    state = {"count": 0}

    def on_signal(sig: int) -> None:
        if sig == signal.SIGTERM and settings.await_explicit_shutdown:
            log.info("SIGTERM ignored (--await-explicit-shutdown); POST /shutdown to stop")
            return
        state["count"] += 1
        if state["count"] > 1:
            log.warning("second signal: exiting now")
            server.force_exit = True
            server.should_exit = True
            return
        log.info("received %s: shutting down", signal.Signals(sig).name)
        service.request_shutdown()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


def run(settings: Settings) -> int:
    _configure_logging(settings.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard] on Linux
        return asyncio.run(_serve(settings))
    return uvloop.run(_serve(settings))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except CogkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return run(settings)
