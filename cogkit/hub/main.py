"""``cogkit hub``: the token, the banner, and uvicorn.

SIGTERM/SIGINT: uvicorn stops accepting and gives open requests ``shutdown_grace`` s
(running predictions finish and answer their ``Prefer: wait`` callers), then the hub
cancels or fails what still runs and stops every model server it started; all within
15 s. Queued predictions stay queued in the database and run at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
from pathlib import Path

from cogkit.exceptions import CogkitError
from cogkit.hub.settings import HubSettings


def resolve_token(settings: HubSettings) -> tuple[str, bool]:
    """(token, whether it was just generated). A generated token is kept in the data
    dir, readable by its owner only, and reused on later starts."""
    if settings.token:
        return settings.token, False
    path = Path(settings.data_dir) / "token"
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if token:
            return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "ck_" + secrets.token_urlsafe(30)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def run(settings: HubSettings) -> int:
    import uvicorn

    from cogkit.hub.app import create_app

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("cogkit.hub").setLevel(logging.INFO)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    token, generated = resolve_token(settings)
    loopback = "127.0.0.1" if settings.host in ("0.0.0.0", "127.0.0.1", "localhost", "") else settings.host
    app = create_app(settings, token, f"http://{loopback}:{settings.port}")
    failure: list[str] = []
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            timeout_graceful_shutdown=int(max(1, settings.shutdown_grace)), lifespan="on",
                            access_log=False)
    server = uvicorn.Server(config)
    app.state.on_startup_error = lambda msg: (failure.append(msg), setattr(server, "should_exit", True))
    base = f"http://{settings.host}:{settings.port}"
    print(f"cogkit hub: {len(settings.models)} model(s): {', '.join(m.full_name for m in settings.models) or 'none'}",
          file=sys.stderr)
    print(f"cogkit hub: Replicate API at {base}/v1 (py: base_url={base}, npm: baseUrl: '{base}/v1')", file=sys.stderr)
    if generated:
        print(f"cogkit hub: generated an API token (kept in {Path(settings.data_dir) / 'token'}):\n{token}",
              file=sys.stderr)
    elif not settings.token:
        print(f"cogkit hub: API token in {Path(settings.data_dir) / 'token'}", file=sys.stderr)
    server.run()
    if failure:
        raise CogkitError(failure[0])
    return 0
