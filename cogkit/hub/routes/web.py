"""The hub's web pages: the model list (``/``), the prediction history (``/predictions``), a
playground per model (``/{owner}/{name}``, the ``url`` the API gives a model) and
``urls.web`` (``/p/{key}``).

The first three are the playground's shells (cogkit.playground): their data comes from the
v1 API with the token the user keeps in the browser, so they show nothing to a request
without it. ``/p/{key}`` is a capability URL like the stream (the same key): a link can be
shared without the token, so it is rendered here, every value HTML-escaped, refreshing
itself while the prediction runs."""

from __future__ import annotations

import html
import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from cogkit import playground
from cogkit.hub.deps import hub_of
from cogkit.hub.errors import ApiError

router = APIRouter()

# first path segments that are the API's or the hub's own, never a model owner
_RESERVED = {"v1", "files", "stream", "p", "internal", "playground", "docs", "openapi.json", "health-check"}


def _shell(config: dict, title: str) -> HTMLResponse:
    return HTMLResponse(playground.page({"kind": "hub", **config}, title), headers=dict(playground.PAGE_HEADERS))


@router.get("/", include_in_schema=False)
async def model_list() -> HTMLResponse:
    return _shell({"page": "models"}, "Models · cogkit hub")


@router.get("/predictions", include_in_schema=False)
async def prediction_history() -> HTMLResponse:
    return _shell({"page": "predictions"}, "Predictions · cogkit hub")


@router.get("/playground/{path:path}", include_in_schema=False)
async def playground_asset(path: str, request: Request) -> Response:
    found = playground.asset(path)
    if found is None:
        raise ApiError(404, "No such file")
    status, headers, body = found.answer(request.headers.get("if-none-match"))
    return Response(body, status_code=status, headers=dict(headers))


def _item(value: object) -> str:
    if isinstance(value, str) and value.startswith(("data:image/", "http://", "https://")) and (
            value.startswith("data:image/") or value.rsplit(".", 1)[-1].lower() in ("png", "jpg", "jpeg", "webp", "gif")):
        return f'<img src="{html.escape(value, quote=True)}" alt="output">'
    if isinstance(value, str) and value.startswith(("data:", "http://", "https://")):
        return f'<p><a href="{html.escape(value, quote=True)}">file</a></p>'
    text = value if isinstance(value, str) else json.dumps(value, indent=2)
    return f"<pre>{html.escape(text)}</pre>"


@router.get("/p/{key}", response_class=HTMLResponse, include_in_schema=False)
async def prediction_page(key: str, request: Request) -> HTMLResponse:
    hub = hub_of(request)
    row = await hub.by_stream_key(key)
    if row is None:
        raise ApiError(404, "No such prediction")
    body = await hub.render(row, hub.default_origin)
    running = body["status"] not in ("succeeded", "failed", "canceled")
    output = body["output"]
    if isinstance(output, list) and all(isinstance(v, str) for v in output) and not any(
            v.startswith(("data:", "http")) for v in output):
        shown = _item("".join(output))  # a token stream reads as text
    else:
        shown = "".join(_item(v) for v in output) if isinstance(output, list) else (
            _item(output) if output is not None else "")
    model = html.escape(body["model"], quote=True)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{model} \u00b7 {body['id']}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
{'<meta http-equiv="refresh" content="1">' if running else ''}<link rel="stylesheet" href="{playground.ASSETS}/playground.css">
<link rel="icon" href="{playground.ASSETS}/icon.svg" type="image/svg+xml"></head><body>
<header class="topbar"><a class="brand" href="/">cogkit</a><nav id="nav"><a href="/">Models</a>
<a href="/predictions">Predictions</a><a href="/{model}">Playground</a></nav></header><main class="output">
<h1>{model}</h1>
<p>Prediction <code>{body['id']}</code>: <span class="status {html.escape(body['status'])}">{html.escape(body['status'])}</span>
{f"in {body['metrics'].get('predict_time', 0):.2f} s" if body['status'] == 'succeeded' else ''}</p>
{f"<h2>Error</h2><pre>{html.escape(body['error'])}</pre>" if body['error'] else ''}
<h2>Output</h2>{shown or '<p>(none yet)</p>'}
<h2>Input</h2><pre>{html.escape(json.dumps(body['input'], indent=2))}</pre>
<h2>Logs</h2><pre>{html.escape(body['logs'] or '')}</pre>
</main></body></html>"""
    return HTMLResponse(page, headers=dict(playground.PAGE_HEADERS))


# last: any other two-segment path is a model's playground, as on Replicate (the model's "url")
@router.get("/{owner}/{name}", include_in_schema=False)
async def model_playground(owner: str, name: str) -> HTMLResponse:
    if owner in _RESERVED:
        raise ApiError(404, "Not found")
    ref = f"{owner}/{name}"
    return _shell({"page": "playground", "model": ref}, f"{ref} · cogkit hub")
