"""Server settings: command-line flags, Cog's environment variables, and the predictor ref.

Shared by ``python -m cogkit.server`` and ``cogkit serve`` (one flag set, one
parser definition). Kept free of heavy imports: the CLI imports it to build
``--help``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cogkit.exceptions import ConfigError

if TYPE_CHECKING:
    from cogkit.worker.client import Worker

MODES = ("predict", "train")


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 5000
    mode: str = "predict"
    upload_url: str | None = None
    await_explicit_shutdown: bool = False
    queue: int = 0  # predictions allowed to wait for a slot (cogkit extension; Cog refuses with 409)
    project_dir: str = "."
    predictor_ref: str = ""
    max_concurrency: int | None = None  # None: let the predictor decide (@concurrent / 1)
    throttle_interval: float = 0.5
    weights: str | None = None
    webhook_token: str | None = None
    log_level: str = "info"
    setup_timeout: float | None = None
    stream_history: int = 1024
    healthcheck_timeout: float = 5.0
    shutdown_grace: float = 5.0  # seconds in-flight work may take to finish on shutdown
    webhook_drain: float = 10.0  # seconds unfinished webhook deliveries may take on shutdown


def _truthy(value: str) -> bool:
    """Value of ``--await-explicit-shutdown VALUE``.

    Cog parses it with ``type=bool`` (so even "false" means true); cogkit accepts the
    common spellings of false as false and anything else as true.
    """
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m cog.server.http`` plus cogkit's ``--port`` and ``--queue``."""
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    parser.add_argument(
        "--port", type=int, default=None, help="port to listen on (default: $PORT, else 5000)"
    )
    parser.add_argument(
        "--upload-url",
        default=None,
        metavar="URL",
        help="PUT each output file to URL<basename> and return its URL instead of a data URL",
    )
    parser.add_argument(
        "--await-explicit-shutdown",
        nargs="?",
        const=True,
        default=False,
        type=_truthy,
        metavar="BOOL",
        help="ignore SIGTERM; stop only on POST /shutdown",
    )
    parser.add_argument(
        "--x-mode",
        dest="mode",
        choices=MODES,
        default="predict",
        help="run predict() (default) or train()",
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=0,
        metavar="N",
        help="let up to N predictions wait for a free slot instead of answering 409 (default: 0)",
    )
    parser.add_argument("--threads", default=None, help=argparse.SUPPRESS)  # accepted and ignored, like coglet


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value > 0 else None  # Cog: 0 or invalid means "not set"


def _env_float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value >= 0 else default


def _cog_yaml_concurrency(project_dir: str) -> int | None:
    """``concurrency.max`` from cog.yaml, when there is one (``cog build`` bakes it into
    the image as COG_MAX_CONCURRENCY, which wins)."""
    path = Path(project_dir) / "cog.yaml"
    try:
        if "concurrency" not in path.read_text(errors="replace"):
            return None  # skip the YAML parse on the start-up path when there is nothing to find
    except OSError:
        return None
    from cogkit.config import load_config

    return load_config(project_dir).concurrency_max


def _predictor_ref(mode: str, project_dir: str, env: Mapping[str, str]) -> str:
    stub = env.get("COG_TRAIN_TYPE_STUB" if mode == "train" else "COG_PREDICT_TYPE_STUB")
    if stub:
        return stub  # what an image sets: no need to read (or import the reader of) cog.yaml
    from cogkit.config import predictor_ref

    return predictor_ref(mode, project_dir)


def settings_from(args: argparse.Namespace, project_dir: str = ".") -> Settings:
    """Combine parsed flags with the environment (flags win over env where both exist).

    The predictor: COG_PREDICT_TYPE_STUB / COG_TRAIN_TYPE_STUB (what a Cog image sets),
    else the ``run``/``predict`` (or ``train``) key of cog.yaml in ``project_dir``."""
    env = os.environ
    port = args.port if args.port is not None else _env_int(env, "PORT") or 5000
    if args.queue < 0:
        raise ConfigError("--queue must be 0 or more")
    log_level = env.get("COG_LOG_LEVEL", "info").strip().lower() or "info"
    if log_level == "warn":
        log_level = "warning"
    if log_level not in ("debug", "info", "warning", "error"):
        log_level = "info"
    return Settings(
        host=args.host,
        port=port,
        mode=args.mode,
        upload_url=args.upload_url or None,
        await_explicit_shutdown=bool(args.await_explicit_shutdown),
        queue=args.queue,
        project_dir=os.path.abspath(project_dir),
        predictor_ref=_predictor_ref(args.mode, project_dir, env),
        max_concurrency=_env_int(env, "COG_MAX_CONCURRENCY") or _cog_yaml_concurrency(project_dir),
        throttle_interval=_env_float(env, "COG_THROTTLE_RESPONSE_INTERVAL", 0.5) or 0.0,
        weights=env.get("COG_WEIGHTS") or None,
        webhook_token=env.get("WEBHOOK_AUTH_TOKEN") or None,
        log_level=log_level,
        setup_timeout=_env_float(env, "COG_SETUP_TIMEOUT", None) or None,
        shutdown_grace=_env_float(env, "COGKIT_SHUTDOWN_GRACE", 5.0) or 0.0,
        webhook_drain=_env_float(env, "COGKIT_WEBHOOK_DRAIN", 10.0) or 0.0,
        stream_history=_env_int(env, "COG_STREAM_HISTORY_CAPACITY") or (
            0 if env.get("COG_STREAM_HISTORY_CAPACITY", "").strip() == "0" else 1024
        ),
    )


def worker_from(settings: Settings) -> Worker:
    """The Worker these settings describe (not started)."""
    from cogkit.worker.client import Worker

    return Worker(
        settings.predictor_ref,
        project_dir=settings.project_dir,
        mode=settings.mode,  # type: ignore[arg-type]
        weights=settings.weights,
        max_concurrency=settings.max_concurrency,
        setup_timeout=settings.setup_timeout,
        echo_logs=True,  # what the predictor prints also reaches the container's log, as with Cog
    )
