"""The playground on ``cogkit serve``, in a real Chromium: the form generated from the
types_zoo conformance fixture (a control per input kind, with its constraint), the
server's field errors, outputs, a token stream arriving in pieces, cancel, and a tiny FLUX
image with the progress bar moving. Plus what a browser and an API client each get from /."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import httpx
import pytest

from cogkit import playground
from tests.conformance_fixtures import NAMES  # noqa: F401  (the fixtures come from this kit)
from tests.fixtures.server.harness import ServerProcess, copy_fixture
from tests.playground.conftest import screenshot
from tests.tiny_models import tiny_flux_schnell  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"

# records every value the progress bar takes (oldValue catches several changes in one task)
PROGRESS_SPY = """
window.__progress = [];
new MutationObserver((records) => {
  for (const r of records) if (r.target.id === "progress") window.__progress.push(r.oldValue, r.target.getAttribute("value"));
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true, attributeFilter: ["value"]});
"""


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = (b"\x00" + b"\x20\x80\xff" * width) * height
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def servers(conformance_dir: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("playground-serve")
    started = {}
    try:
        for name in ("types_zoo", "concat_iterator", "slow"):
            started[name] = ServerProcess(copy_fixture(conformance_dir / "predictors" / name, root), ready_timeout=120)
        yield started
    finally:
        for s in started.values():
            s.stop()


# ---------------------------------------------------------------- HTTP: no browser needed


def test_a_browser_gets_the_playground_and_an_api_client_the_json(servers) -> None:
    s = servers["types_zoo"]
    api = httpx.get(s.url + "/")
    assert api.headers["content-type"] == "application/json" and api.json()["predictions_url"] == "/predictions"
    assert httpx.get(s.url + "/", headers={"Accept": "application/json, text/html"}).headers["content-type"] == "application/json"
    page = httpx.get(s.url + "/", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == httpx.get(s.url + "/playground").text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"
    assert httpx.post(s.url + "/playground").status_code == 405


def test_static_files_are_cached_for_good_by_digest(servers) -> None:
    s = servers["types_zoo"]
    page = httpx.get(s.url + "/playground").text
    scripts = re.findall(r'src="(/playground/assets/[0-9a-f]{12}/main\.js)"', page)
    assert scripts == [f"{playground.ASSETS}/main.js"]
    r = httpx.get(s.url + scripts[0])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    again = httpx.get(s.url + scripts[0], headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    # an old page's URL still gets the file, but not for good
    old = httpx.get(s.url + "/playground/assets/000000000000/main.js")
    assert old.status_code == 200 and old.headers["cache-control"] == "no-cache"
    for bad in ("/playground/assets/x/page.html", "/playground/assets/x/../../__init__.py",
                f"{playground.ASSETS}/%2e%2e%2f__init__.py", "/playground/assets/x/y/main.js", "/playground/nope"):
        assert httpx.get(s.url + bad).status_code == 404, bad


def test_the_playground_stream_refuses_in_band(servers) -> None:
    """POST /playground/predictions answers every refusal as its one event, so the page (and
    not the browser's console) reports it; the Cog routes keep Cog's statuses."""
    s = servers["types_zoo"]
    r = httpx.post(s.url + "/playground/predictions", json={"input": {"prompt": "x", "seed": 1, "steps": 0}})
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    event, data = r.text.split("\n", 1)
    assert event == "event: refused"
    body = json.loads(data.removeprefix("data: "))
    assert body["status"] == 422 and body["body"]["detail"][0]["loc"] == ["body", "input", "steps"]
    assert httpx.post(s.url + "/predictions", json={"input": {"prompt": "x", "seed": 1, "steps": 0}}).status_code == 422
    assert httpx.post(s.url + "/predictions", json={"input": {"prompt": "x", "seed": 1}},
                      headers={"Accept": "text/event-stream"}).status_code == 406  # Cog: not a streaming model


# ---------------------------------------------------------------- in the browser


def test_every_input_kind_has_its_control_and_constraint(servers, open_page) -> None:
    page = open_page(servers["types_zoo"].url + "/playground")
    page.wait_for_selector("#form")
    kinds = {el.get_attribute("data-name"): el.get_attribute("data-kind") for el in page.query_selector_all(".field")}
    assert kinds == {"prompt": "textarea", "seed": "number", "code": "text", "mode": "select", "level": "select",
                     "steps": "number", "temperature": "number", "flag": "switch", "image": "file",
                     "document": "file", "api_key": "secret", "tags": "list", "files": "files", "note": "text",
                     "old_param": "text"}
    # in x-order
    assert [el.get_attribute("data-name") for el in page.query_selector_all(".field")][:3] == ["prompt", "seed", "code"]
    prompt = page.locator("#input-prompt")
    assert prompt.get_attribute("minlength") == "1" and prompt.get_attribute("maxlength") == "100"
    assert page.locator(".field[data-name=prompt] .req").count() == 1
    assert "1–100 characters" in page.inner_text(".field[data-name=prompt] .help")
    assert page.get_attribute("#input-code", "pattern") == "^[a-z]+$" and page.input_value("#input-code") == "abc"
    assert page.locator("#input-mode option").all_inner_texts() == ["fast", "balanced", "quality"]
    assert page.locator("#input-mode option:checked").inner_text() == "fast"
    assert page.locator("#input-level option").all_inner_texts() == ["1", "2", "3"]
    for name, lo, hi, default in (("steps", "1", "50", "10"), ("temperature", "0", "2", "0.7")):
        assert page.get_attribute(f"#input-{name}", "min") == lo and page.get_attribute(f"#input-{name}", "max") == hi
        slider = page.locator(f".field[data-name={name}] input[type=range]")
        assert slider.get_attribute("min") == lo and slider.get_attribute("max") == hi
        assert page.input_value(f"#input-{name}") == default
        assert f"between {lo} and {hi}" in page.inner_text(f".field[data-name={name}] .help")
    assert page.get_attribute("#input-seed", "step") == "1"
    assert page.get_attribute("#input-flag", "role") == "switch" and not page.is_checked("#input-flag")
    assert page.get_attribute("#input-image", "type") == "file" and page.get_attribute("#input-image", "accept") == "image/*"
    assert page.get_attribute("#input-files", "multiple") is not None
    assert page.get_attribute("#input-api_key", "type") == "password"
    assert [page.input_value(f".field[data-name=tags] .list-row:nth-child({i}) input") for i in (1, 2)] == ["x", "y"]
    assert not page.is_visible("#input-old_param")  # deprecated: under "More"
    page.click("details.more summary")
    assert page.is_visible("#input-old_param")
    # a label for every control
    for control in page.query_selector_all("#form input, #form select, #form textarea"):
        cid = control.get_attribute("id")
        labelled = control.get_attribute("aria-label") or (cid and page.locator(f'label[for="{cid}"]').count() == 1)
        assert labelled, control.evaluate("e => e.outerHTML")
    screenshot(page, "serve-types-zoo-form")


def test_field_errors_then_a_valid_run(servers, open_page, tmp_path: Path) -> None:
    page = open_page(servers["types_zoo"].url + "/playground")
    page.wait_for_selector("#form")
    page.fill("#input-steps", "99")
    page.click("#run")
    page.wait_for_selector("#error-steps:not([hidden])")
    assert "50" in page.inner_text("#error-steps")
    assert page.is_visible("#error-prompt")  # required and empty
    assert page.get_attribute("#input-steps", "aria-invalid") == "true"
    assert page.inner_text("#status") == "invalid input"

    photo = tmp_path / "photo.png"
    photo.write_bytes(_png(8, 6))
    page.fill("#input-prompt", "a red fox")
    page.fill("#input-seed", "7")
    page.fill("#input-steps", "12")
    page.select_option("#input-mode", label="quality")
    page.locator(".field[data-name=flag] label.switch").click()
    page.fill("#input-api_key", "hunter2-secret")
    page.set_input_files("#input-image", str(photo))
    page.wait_for_selector(".field[data-name=image] .previews img")
    page.click(".field[data-name=tags] button:text('Add tags item')")
    page.fill(".field[data-name=tags] .list-row:nth-child(3) input", "z")
    page.click("#run")
    page.wait_for_selector("#status.succeeded")
    assert page.is_hidden("#error-steps") and page.is_hidden("#error-prompt")
    got = json.loads(page.inner_text("#output"))
    assert got["prompt"] == ["str", "a red fox"] and got["seed"] == ["int", 7] and got["steps"] == ["int", 12]
    assert got["mode"] == ["str", "quality"] and got["flag"] == ["bool", True] and got["tags"] == ["list", ["x", "y", "z"]]
    assert got["image"]["size"] == len(photo.read_bytes()) and got["image"]["suffix"] == "png"
    assert got["api_key"] == {"len": 14, "str": "**********", "type": "Secret"}
    assert "predict time" in page.inner_text("#metrics")
    screenshot(page, "serve-types-zoo-result")
    page.click("#tab-code")
    code = page.inner_text("#code")
    assert "a red fox" in code and "process.env.API_KEY" in code and 'readFile("photo.png")' in code
    assert "hunter2" not in code and "hunter2" not in page.inner_text("body")
    page.select_option("#code-lang", "curl")
    assert page.inner_text("#code").startswith(f"curl -s -X POST {servers['types_zoo'].url}/predictions")


def test_a_token_stream_arrives_in_pieces(servers, open_page) -> None:
    page = open_page(servers["concat_iterator"].url + "/playground")
    page.wait_for_selector("#form")
    page.fill("#input-count", "60")
    page.fill("#input-sleep", "0.05")
    page.click("#run")
    page.wait_for_selector('#output[data-pieces]:not([data-pieces="1"])')
    assert page.inner_text("#status") == "processing"  # more than one piece shown before the end
    partial = page.inner_text("#output")
    assert partial.startswith("tok0 tok1 ")
    page.wait_for_selector("#status.succeeded")
    assert page.inner_text("#output").strip() == "".join(f"tok{i} " for i in range(60)).strip()
    assert int(page.get_attribute("#output", "data-pieces")) == 60


def test_cancel_a_slow_prediction(servers, open_page) -> None:
    s = servers["slow"]
    page = open_page(s.url + "/playground")
    page.wait_for_selector("#form")
    page.fill("#input-seconds", "120")
    page.click("#run")
    page.wait_for_selector("#status.processing")
    page.wait_for_selector("#logs:text('working 0')")
    page.click("#cancel")
    page.wait_for_selector("#status.canceled")
    assert page.is_enabled("#run") and page.is_disabled("#cancel")
    s.wait_not_busy(10)
    assert s.health()["status"] == "READY"


def test_readable_at_phone_width(servers, open_page) -> None:
    page = open_page(servers["types_zoo"].url + "/playground", width=390, height=844)
    page.wait_for_selector("#form")
    # nothing wider than the screen: no sideways scrolling
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    box = page.locator("#input-prompt").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.keyboard.press("Tab")  # the keyboard reaches the form
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") in ("input-prompt", "input-seed")


@pytest.mark.slow
def test_flux_image_appears_and_the_progress_bar_moves(tiny_flux_schnell, tmp_path: Path, browser) -> None:  # noqa: F811
    project = copy_fixture(REPO / "models" / "flux", tmp_path)
    server = ServerProcess(project, env={"COG_WEIGHTS": str(tiny_flux_schnell), "HF_HUB_OFFLINE": "1"}, ready_timeout=300)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        context.set_default_timeout(120_000)
        context.add_init_script(PROGRESS_SPY)
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/playground")
        page.wait_for_selector("#form")
        page.fill("#input-prompt", "black forest gateau cake")
        page.fill("#input-seed", "3")
        page.fill("#input-num_inference_steps", "4")
        page.click("#run")
        page.wait_for_selector("#status.succeeded")
        img = page.locator("#output img")
        assert img.count() == 1 and img.get_attribute("src").startswith("data:image/webp;base64,")
        assert page.evaluate("() => document.querySelector('#output img').naturalWidth") > 0
        seen = [v for v in page.evaluate("window.__progress") if v is not None]
        steps = sorted({int(float(v)) for v in seen})
        assert steps[-1] == 4 and any(0 < v < 4 for v in steps), seen  # the bar went through the steps
        assert "denoising: 4/4" in page.inner_text("#progress-label")
        screenshot(page, "serve-flux-result")
        assert not errors, errors
    finally:
        context.close()
        server.stop()
