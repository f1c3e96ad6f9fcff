"""Start the HTTP server: ``python -m cogkit.server`` and ``cogkit serve``.

cogkit's own HTTP/1.1 server (http.py) on uvloop. SIGTERM/SIGINT start the graceful
shutdown (in-flight predictions finish or are canceled, their webhooks are sent,
the worker is stopped) unless ``--await-explicit-shutdown`` is set, in which case
SIGTERM is ignored and only ``POST /shutdown`` stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
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
    # Spawn the worker's child process before importing the rest of the server, so that
    # its start-up (Python, the predictor, setup()) overlaps ours.
    from cogkit.server.settings import worker_from

    starting = None
    worker = None
    try:
        worker = worker_from(settings)
        starting = asyncio.ensure_future(worker.start())
        await asyncio.sleep(0)
    except Exception as exc:  # the service tries again and reports SETUP_FAILED
        log.error("could not create the worker: %s", exc)

    from cogkit.server.service import PredictionService

    service = PredictionService(settings, worker)
    service.begin(starting)

    from cogkit.server.app import App
    from cogkit.server.http import HttpServer

    stopped = asyncio.Event()
    service.on_exit = stopped.set
    server = HttpServer(App(service))
    try:
        await server.listen(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        await service.shutdown()
        return 1
    log.info("listening on http://%s:%s", settings.host, settings.port)
    _install_signals(service, settings, stopped)
    await stopped.wait()
    await server.close()
    return 0


def _install_signals(service, settings: Settings, stopped: asyncio.Event) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    state = {"count": 0}

    def on_signal(sig: int) -> None:
        if sig == signal.SIGTERM and settings.await_explicit_shutdown:
            log.info("SIGTERM ignored (--await-explicit-shutdown); POST /shutdown to stop")
            return
        state["count"] += 1
        if state["count"] > 1:
            log.warning("second signal: exiting now")
            stopped.set()
            return
        log.info("received %s: shutting down", signal.Signals(sig).name)
        service.request_shutdown()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


def run(settings: Settings) -> int:
    _configure_logging(settings.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
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
