"""The console's pages at /console: served by inboxd with every asset it loads, under a
policy that lets the browser load nothing from elsewhere; off when INBOXD_CONSOLE=false and in
production unless switched on; within its size budget."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import httpx
import pytest

from inboxd.app import create_app
from inboxd.console import CONSOLE_DIR
from inboxd.settings import Settings

BUDGET = 250 * 1024  # bytes, gzip-compressed: the budget for the console's own assets


def asset_paths(html: str, js: dict[str, str]) -> set[str]:
    """Everything the page loads: its links and scripts, and every module they import."""
    found = set(re.findall(r'(?:src|href)="(/console/[^"]+)"', html))
    for source in js.values():
        found |= {"/console/" + m for m in re.findall(r'from "\./([^"]+)"', source)}
    return found


async def test_the_console_and_everything_it_loads_are_served_from_inboxd(base_url):
    async with httpx.AsyncClient(base_url=base_url) as http:
        assert (await http.get("/console")).headers["location"] == "/console/"
        page = await http.get("/console/")
        assert page.status_code == 200 and "<main" in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "connect-src 'self'" in policy and "http" not in policy  # no other origin
        modules = {p.name: p.read_text() for p in CONSOLE_DIR.glob("*.js")}
        assets = asset_paths(page.text, modules)
        assert "/console/vendor/graphql-ws.js" in assets and "/console/app.js" in assets
        for asset in sorted(assets):
            got = await http.get(asset)
            assert got.status_code == 200, asset
            assert got.headers["content-security-policy"] == policy, asset
        # No CDN, no absolute URL anywhere in what the browser runs.
        for name, source in modules.items():
            assert not re.search(r"https?://", source), name
        assert not re.search(r"https?://", page.text)


@pytest.mark.parametrize(
    ("values", "on"),
    [
        ({"console": False}, False),  # INBOXD_CONSOLE=false
        ({"environment": "production"}, False),  # off in production unless enabled
        ({"environment": "production", "console": True}, True),
        ({}, True),  # development
    ],
)
async def test_the_console_is_on_or_off_as_set(values, on, state, monkeypatch):
    for name, value in values.items():
        monkeypatch.setenv(f"INBOXD_{name.upper()}", str(value).lower())
    settings = Settings()
    assert settings.console_enabled is on
    app = create_app(settings, state)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://inboxd") as http:
        page = await http.get("/console/")
        asset = await http.get("/console/app.js")
    assert (page.status_code, asset.status_code) == ((200, 200) if on else (404, 404))


def test_the_console_assets_fit_the_budget():
    """Every file under inboxd/static/console, gzip-compressed, the vendored client included."""
    files = [p for p in Path(CONSOLE_DIR).rglob("*") if p.is_file()]
    compressed = sum(len(gzip.compress(p.read_bytes(), 9)) for p in files)
    assert compressed <= BUDGET, f"{compressed} bytes compressed"


def test_the_form_has_every_field_of_create_email_inbox():
    """Each input path of CreateEmailInboxInput (with its nested inputs' fields) is a
    field of the console's form, so an inbox made there can use all of inboxd."""
    sdl = (CONSOLE_DIR.parents[2] / "schema.graphql").read_text()

    def fields(name: str) -> list[tuple[str, str]]:
        body = re.search(r"input %s \{(.*?)\n\}" % name, sdl, re.S)
        assert body, name
        return re.findall(r"^  ([a-z]\w*): \[?(\w+)", body.group(1), re.M)

    inputs = set(re.findall(r"^input (\w+) \{", sdl, re.M))
    wanted = []
    for field, kind in fields("CreateEmailInboxInput"):
        if kind in inputs:  # a nested input (smtp, imap, receiving, sending): each of its fields
            wanted += [f"{field}.{sub}" for sub, _ in fields(kind)]
        else:
            wanted.append(field)
    form = (CONSOLE_DIR / "fields.js").read_text()
    offered = set(re.findall(r'\[\s*[`"]([\w.${}]+)[`"],', form))
    offered |= {p.replace("${side}", side) for p in offered for side in ("smtp", "imap")}
    missing = [path for path in wanted if path not in offered]
    assert len(wanted) > 25 and missing == [], missing
