"""``urls.web``: a plain page per prediction (status, input, output, logs), refreshing
itself while it runs. A capability URL like the stream (the same key), so a link can be
shared without the API token; every value is HTML-escaped."""

from __future__ import annotations

import html
import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cogkit.hub.deps import hub_of
from cogkit.hub.errors import ApiError

router = APIRouter()

_STYLE = ("body{font:15px/1.45 system-ui,sans-serif;max-width:860px;margin:2em auto;padding:0 1em;color:#222}"
          "pre{background:#f4f4f4;padding:.8em;overflow:auto;white-space:pre-wrap}"
          "img{max-width:100%;border:1px solid #ddd;margin:.3em 0}.s{font-weight:600}")


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
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(body['model'])} \u00b7 {body['id']}</title>
{'<meta http-equiv="refresh" content="1">' if running else ''}<style>{_STYLE}</style></head><body>
<h1>{html.escape(body['model'])}</h1>
<p>Prediction <code>{body['id']}</code>: <span class="s">{html.escape(body['status'])}</span>
{f"in {body['metrics'].get('predict_time', 0):.2f} s" if body['status'] == 'succeeded' else ''}</p>
{f"<h2>Error</h2><pre>{html.escape(body['error'])}</pre>" if body['error'] else ''}
<h2>Output</h2>{shown or '<p>(none yet)</p>'}
<h2>Input</h2><pre>{html.escape(json.dumps(body['input'], indent=2))}</pre>
<h2>Logs</h2><pre>{html.escape(body['logs'] or '')}</pre>
</body></html>"""
    return HTMLResponse(page)
