"""A real Chromium (Debian's package ``chromium``) driven by tests/browser/driver.mjs through
playwright-core on Node.js, against a real inboxd with a worker and real mail servers.

Skipped, saying which package is missing, where Chromium or Node.js is not installed
(.ci/run installs both). The driver's libraries come from the npm registry with ``npm ci``
(pinned by tests/browser/package-lock.json) on first use."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mailservers import (
    ImapMode,
    ImapServer,
    MailCerts,
    SmtpMode,
    SmtpServer,
    deliver_to,
)

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PASSWORD = "Console-Canary-7713"
NAMES = (
    *("ada", "list1", "list2", "list3", "fix", "pin", "page", "phone", "edit", "history"),
    *("usage", "reader", "send", "limit", "off", "friend", "late"),
)
USERS = {f"{name}@console.test": PASSWORD for name in NAMES}


@pytest.fixture(scope="session")
def driver_command() -> list[str]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (Debian package chromium)")
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs Node.js and npm (Debian packages nodejs and npm)")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(f"npm ci in tests/browser failed (no npm registry?): {done.stderr[-300:]}")
    return [node, str(HERE / "driver.mjs")]


class Browser:
    """One Chromium, one step at a time: ``await browser("fill", selector=..., value=...)``."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def __call__(self, step: str, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"step": step, **args}).encode() + b"\n")
        await self.process.stdin.drain()
        raw = await asyncio.wait_for(self.process.stdout.readline(), 90)
        if not raw:
            assert self.process.stderr is not None
            error = (await self.process.stderr.read()).decode()
            raise AssertionError(f"the browser driver ended: {error[-2000:]}")
        answer: dict[str, Any] = json.loads(raw)
        if not answer.pop("ok"):
            raise AssertionError(
                f"browser step {step} {args}: {answer['error']}\npage: {answer['problems']}"
            )
        return answer


@pytest.fixture(scope="module")
async def browser(driver_command: list[str]) -> AsyncIterator[Browser]:
    process = await asyncio.create_subprocess_exec(
        *driver_command,
        cwd=HERE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    try:
        yield Browser(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


@pytest.fixture(scope="module")
def mail(certs: MailCerts) -> Iterator[dict[str, Any]]:
    with (
        ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context) as imap,
        SmtpServer(
            SmtpMode.TLS, USERS, ssl_context=certs.server_context, on_message=deliver_to(imap)
        ) as smtp,
        SmtpServer(SmtpMode.TLS, USERS, ssl_context=certs.untrusted_context) as self_signed,
    ):
        yield {"smtp": smtp, "imap": imap, "self_signed": self_signed}


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: docs/console when INBOXD_CONSOLE_SCREENSHOTS=1 (to refresh the
    README's pictures), else a scratch folder."""
    if os.environ.get("INBOXD_CONSOLE_SCREENSHOTS") == "1":
        return HERE.parents[1] / "docs" / "console"
    return tmp_path
