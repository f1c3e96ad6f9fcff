"""cogkit.playground's Python side: which requests get the page, the shell's escaping, and
that only the shipped files are served."""

from __future__ import annotations

import json
import re

import pytest

from cogkit import playground


@pytest.mark.parametrize("accept, html", [
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # Chromium, Firefox navigating
    ("text/html", True),
    (None, False), ("", False), ("*/*", False),  # curl, httpx, the Cog clients
    ("application/json", False), ("application/json, text/html", False), ("*/*, text/html", False),
])
def test_prefers_html(accept, html) -> None:
    assert playground.prefers_html(accept) is html


def test_the_shell_escapes_the_title_and_keeps_the_config_inert() -> None:
    config = {"page": "playground", "model": "</script><script>alert(1)</script>", "x": "a&b"}
    page = playground.page(config, "<b>title</b>").decode()
    assert "<title>&lt;b&gt;title&lt;/b&gt;</title>" in page
    assert page.count("<script") == 2 and page.count("</script>") == 2  # main.js and the JSON element
    data = re.search(r'<script type="application/json" id="cogkit-config">(.*?)</script>', page, re.S).group(1)
    assert json.loads(data) == config
    assert f'src="{playground.ASSETS}/main.js"' in page


def test_only_shipped_files_under_the_digest() -> None:
    js = playground.asset(f"assets/{playground.DIGEST}/main.js")
    assert js is not None and dict(js.headers)["cache-control"].endswith("immutable")
    assert dict(js.headers)["content-type"] == "text/javascript; charset=utf-8"
    assert playground.asset(f"assets/{playground.DIGEST}/playground.css") is not None
    for bad in ("assets/x/page.html", f"assets/{playground.DIGEST}/../__init__.py", "assets/main.js",
                f"assets/{playground.DIGEST}/sub/main.js", "main.js", f"x/{playground.DIGEST}/main.js", ""):
        assert playground.asset(bad) is None, bad


def test_the_package_ships_its_files() -> None:
    """package data (pyproject) must list static/: an installed wheel has no page otherwise."""
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["package-data"]["cogkit.playground"] == ["static/*"]
    names = {p.name for p in playground.STATIC.iterdir()}
    assert {"page.html", "main.js", "api.js", "form.js", "render.js", "code.js", "hub_pages.js", "dom.js",
            "playground.css", "icon.svg"} <= names
