"""The hub's web pages in a real Chromium: the token bar, the model list, a model's
playground (a token stream, an image, Replicate's 422 shown at its field, cancel), the
prediction history from the database (cursor pages) and the prediction page."""

from __future__ import annotations

import re

import httpx
import pytest

from cogkit import playground
from tests.hub.conftest import CONFORMANCE, TOKEN, HubProcess
from tests.playground.conftest import screenshot

pytestmark = pytest.mark.timeout(600)

MODELS = {"acme/hello": CONFORMANCE / "hello", "acme/concat": CONFORMANCE / "concat_iterator",
          "acme/image": CONFORMANCE / "path_output", "acme/slow": CONFORMANCE / "slow"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    proc = HubProcess(tmp_path_factory.mktemp("hub-web"), None, MODELS, config="page_size: 3\n").start()
    yield proc
    proc.stop()


@pytest.fixture
def signed_in(open_page, hub):
    """A browser context whose page has the token saved (the way a user enters it)."""
    page = open_page(hub.url + "/")
    page.wait_for_selector("#page-error")
    assert "API token" in page.inner_text("#page-error")
    page.fill("#token", TOKEN)
    page.click("#token-slot button[type=submit]")
    page.wait_for_selector("#models li a")
    return page


def test_pages_are_shells_that_show_nothing_without_the_token(hub) -> None:
    with hub.client() as api:
        pid = api.post("/v1/models/acme/hello/predictions", json={"input": {"text": "secret-ish"}},
                       headers={"Prefer": "wait"}).json()["id"]
    for path, page in (("/", "models"), ("/predictions", "predictions"), ("/acme/hello", "playground")):
        r = httpx.get(hub.url + path)
        assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8", path
        assert f'"page":"{page}"' in r.text and r.headers["content-security-policy"] == playground.CSP
        assert pid not in r.text and "secret-ish" not in r.text
    assert '"model":"acme/hello"' in httpx.get(hub.url + "/acme/hello").text
    odd = httpx.get(hub.url + "/acme/%3Cscript%3Ealert(1)")  # a name is text in the title and inert JSON
    assert odd.status_code == 200 and "<script>alert" not in odd.text and "&lt;script&gt;alert" in odd.text
    r = httpx.get(hub.url + "/v1/nothing")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    js = httpx.get(hub.url + f"{playground.ASSETS}/main.js")
    assert js.status_code == 200 and js.headers["cache-control"].endswith("immutable")
    for bad in ("/playground/assets/x/%2e%2e%2f%2e%2e%2fhub%2fapp.py", "/playground/assets/x/page.html"):
        assert httpx.get(hub.url + bad).status_code == 404, bad


def test_model_list_and_token_bar(signed_in) -> None:
    page = signed_in
    shown = page.locator("#models li a").all_inner_texts()
    assert len(shown) == 3  # page_size: 3
    screenshot(page, "hub-models")
    page.click(".pager button:text('Next')")
    page.wait_for_selector(".pager button:text('Previous')")
    shown += page.locator("#models li a").all_inner_texts()
    assert sorted(shown) == sorted(MODELS)
    page.reload()  # kept in the browser
    page.wait_for_selector("#models li a")
    page.click("#token-slot button:text('Forget token')")
    page.wait_for_selector("#page-error")
    assert page.is_visible("#token")


def test_playground_streams_tokens_and_shows_an_image(signed_in, hub) -> None:
    page = signed_in
    page.click("#models a:text('acme/concat')")
    page.wait_for_selector("#form")
    assert page.url == hub.url + "/acme/concat"
    page.fill("#input-count", "60")
    page.fill("#input-sleep", "0.05")
    page.click("#run")
    page.wait_for_selector('#output[data-pieces]:not([data-pieces="1"])')
    assert page.inner_text("#status") == "processing"
    page.wait_for_selector("#status.succeeded")
    assert page.inner_text("#output").strip() == " ".join(f"tok{i}" for i in range(60))

    page.goto(hub.url + "/acme/image")
    page.wait_for_selector("#form")
    page.fill("#input-width", "64")
    page.fill("#input-height", "32")
    page.click("#run")
    page.wait_for_selector("#status.succeeded")
    img = page.locator("#output img")
    assert img.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("() => document.querySelector('#output img').naturalWidth") == 64
    assert page.get_attribute("#output a[download]", "download") == "output_0.png"
    screenshot(page, "hub-image-result")
    page.click("#tab-code")
    code = page.inner_text("#code")
    assert f'baseUrl: "{hub.url}/v1"' in code and 'replicate.run("acme/image"' in code and "width: 64" in code
    page.select_option("#code-lang", "Python")
    assert f'replicate.Client(base_url="{hub.url}")' in page.inner_text("#code")


def test_replicate_422_shows_at_its_field(signed_in, hub, open_page) -> None:
    page = signed_in
    page.goto(hub.url + "/acme/image")
    page.wait_for_selector("#form")
    page.fill("#input-width", "5000")
    open_page.console.expect_http_status(422)  # the browser notes Replicate's 422 itself
    page.click("#run")
    page.wait_for_selector("#error-width:not([hidden])")
    assert "1024" in page.inner_text("#error-width") and page.inner_text("#status") == "invalid input"


def test_cancel_on_the_hub(signed_in, hub) -> None:
    page = signed_in
    page.goto(hub.url + "/acme/slow")
    page.wait_for_selector("#form")
    page.fill("#input-seconds", "120")
    page.click("#run")
    page.wait_for_selector("#logs:text('working 0')")
    page.click("#cancel")
    page.wait_for_selector("#status.canceled")


def test_history_pages_and_the_prediction_page(signed_in, hub) -> None:
    with hub.client() as api:
        ids = [api.post("/v1/models/acme/hello/predictions", json={"input": {"text": f"n{i}"}},
                        headers={"Prefer": "wait"}).json()["id"] for i in range(4)]
    page = signed_in
    page.click("#nav a:text('Predictions')")
    page.wait_for_selector("#predictions tbody tr td a")
    first = page.locator("#predictions tbody tr td:first-child a").all_inner_texts()
    assert first == ids[::-1][:3]  # newest first, 3 to a page (page_size: 3)
    page.click(".pager button:text('Older')")
    page.wait_for_selector(f"#predictions a:text('{ids[0]}')")
    assert re.search(r"/predictions\?cursor=", page.url)
    page.click(".pager button:text('Newer')")
    page.wait_for_selector(f"#predictions a:text('{ids[3]}')")
    screenshot(page, "hub-history")
    page.click(f"#predictions a:text('{ids[3]}')")
    page.wait_for_selector("h1:text('acme/hello')")
    assert "/p/" in page.url and "hello n3" in page.inner_text("main")
    assert page.inner_text(".status") == "succeeded"
