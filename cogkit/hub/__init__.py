"""``cogkit hub``: a self-hosted Replicate. Replicate's v1 HTTP API (FastAPI, uvicorn) in
front of many models, each run by its own ``cogkit serve`` processes (``runner``, or Ray
Serve deployments with ``--backend ray``: ``ray_runner``), with
predictions, files, deployments and a webhook outbox in SQLite or PostgreSQL (``db``).

Public surface: ``create_app`` (the ASGI app), ``run`` (the command), ``HubSettings``.
"""

from cogkit.hub.settings import HubSettings

__all__ = ["HubSettings", "create_app", "run"]


def __getattr__(name: str):  # the app and uvicorn are imported only when used
    if name == "create_app":
        from cogkit.hub.app import create_app

        return create_app
    if name == "run":
        from cogkit.hub.main import run

        return run
    raise AttributeError(name)
