"""OAuth in the console, in a real browser, against a real inboxd, the loopback OAuth provider
(tests.support.oauth_provider) and SMTP and IMAP servers that check each XOAUTH2 token with it:
the workspace's OAuth apps, connecting an account from the new-inbox page through the provider's
consent and inboxd's callback back to the inbox's page, verified live, and reconnecting an
inbox the provider stopped accepting."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inboxd.configs import verification_config
from inboxd.worker import Worker
from storage.secrets import KeyRing
from tests.browser.conftest import Browser
from tests.browser.test_console import serious, signed_in
from tests.conftest import Tenant, verifier_on
from tests.inboxd.oauth_support import APPS, OAuthWorld
from tests.support.mailservers import MailCerts, SmtpMode
from tests.support.oauth_mail import OAuthImapServer, OAuthSmtpServer
from tests.support.oauth_provider import OAuthProvider
from tests.support.waiting import wait_until

STATUS = "query($id: ID!) { emailInbox(id: $id) { status statusReason } }"
TEST_CONNECTION = "mutation($id: ID!) { testConnection(id: $id) { __typename } }"


class HeldSmtpServer(OAuthSmtpServer):
    """Checks a token only once ``gate`` is open: while it is closed a verification stays
    VERIFYING, so the browser can be seen showing that status."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()

    async def token_owner(self, token: str) -> str | None:
        await asyncio.to_thread(self.gate.wait, 60)
        return await super().token_owner(token)


class ConsoleOAuthWorld(OAuthWorld):
    smtp: HeldSmtpServer
    imap: OAuthImapServer
    worker: Worker | None = None

    def servers(self) -> dict[str, Any]:
        return {
            "smtp": {"host": "127.0.0.1", "port": self.smtp.port, "security": "STARTTLS"},
            "imap": {"host": "127.0.0.1", "port": self.imap.port, "security": "TLS"},
        }

    async def start_worker(self) -> None:
        """The stack runs without a worker until a test starts one, so that a new inbox can be
        seen PENDING first."""
        if self.worker is not None:
            return
        stack = self.verifier.stack
        assert stack.state.hub is not None
        self.worker = Worker(
            stack.state,
            stack.state.hub,
            verification_config(stack.settings),
            concurrency=2,
            lease=timedelta(seconds=stack.settings.job_lease_seconds),
            poll_interval=stack.settings.job_poll_interval_seconds,
        )
        await self.worker.start()

    async def status(self, tenant: Tenant, inbox_id: str, wanted: str) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            inbox: dict[str, Any] = (await tenant.client(STATUS, {"id": inbox_id})).data[
                "emailInbox"
            ]
            return inbox if inbox["status"] == wanted else None

        return await wait_until(reached, f"the inbox is {wanted}", timeout=60)


@pytest.fixture(scope="module")
async def world(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[ConsoleOAuthWorld]:
    with (
        OAuthProvider() as provider,
        HeldSmtpServer(SmtpMode.STARTTLS, provider, ssl_context=certs.server_context) as smtp,
        OAuthImapServer(provider, ssl_context=certs.server_context) as imap,
    ):
        provider.add_user("owner@example.com")
        async with verifier_on(
            pg_server[0],
            certs,
            keyring,
            worker=False,
            oauth_google_authorize_url=provider.authorize_url,
            oauth_google_token_url=provider.token_url,
            oauth_google_userinfo_url=provider.userinfo_url,
            # A held token check must not end the login: the gate opens when the page shows it.
            smtp_timeout=60.0,
            imap_timeout=60.0,
        ) as verifier:
            client = provider.register_client([f"{verifier.stack.base_url}/oauth/callback"])
            world = ConsoleOAuthWorld(verifier, provider, client)
            world.smtp, world.imap = smtp, imap
            try:
                yield world
            finally:
                smtp.gate.set()
                if world.worker is not None:
                    await world.worker.stop(2.0)


def page_problems(state: dict[str, Any]) -> list[str]:
    # inboxd's callback page has no icon: the browser's own /favicon.ico request is not the page's.
    return [p for p in state["problems"] if "favicon.ico" not in p]


async def test_the_oauth_apps_panel_configures_each_provider_showing_errors_at_their_fields(
    browser: Browser, world: ConsoleOAuthWorld, shots: Path
) -> None:
    tenant = await world.verifier.tenant()
    await signed_in(browser, world.verifier, tenant)
    await browser("click", selector="nav >> text=OAuth apps")
    await browser("waitText", selector="main h1", text="OAuth apps")
    # Prefilled with this inboxd's callback, as registered with the provider.
    await browser("waitValue", selector="#oauth-google-redirectUri", value=world.redirect_uri)
    await browser("fill", selector="#oauth-google-clientId", value=" ")
    await browser(
        "fill", selector="#oauth-google-redirectUri", value="http://inboxd.example.com/cb"
    )
    await browser("click", selector="text=Save the Google app")
    for field in ("clientId", "clientSecret", "redirectUri"):
        shown = await browser("waitText", selector=f"#oauth-google-{field}-error", text=" ")
        assert shown["text"], field
    state = await browser("state")
    assert state["focused"] == "oauth-google.clientId"  # focus is where the first fix goes
    assert await serious(browser) == []
    await browser("fill", selector="#oauth-google-clientId", value=world.client.client_id)
    await browser("fill", selector="#oauth-google-clientSecret", value=world.client.client_secret)
    await browser("fill", selector="#oauth-google-redirectUri", value=world.redirect_uri)
    await browser("click", selector="text=Save the Google app")
    await browser("waitText", selector='[data-provider="GOOGLE"] .note', text="Google app saved.")
    assert (await browser("count", selector="#oauth-google-clientId-error p"))["count"] == 0
    await browser("waitText", selector="#oauth-google-clientSecret-help", text="A secret is stored")
    await browser("waitValue", selector="#oauth-google-clientSecret", value="")
    await browser("fill", selector="#oauth-microsoft-clientId", value="console-microsoft-app")
    await browser("fill", selector="#oauth-microsoft-clientSecret", value="Microsoft-Secret-5521")
    await browser("fill", selector="#oauth-microsoft-tenant", value="contoso.onmicrosoft.com")
    await browser("click", selector="text=Save the Microsoft app")
    await browser("waitText", selector='[data-provider="MICROSOFT"] .note', text="app saved.")
    # Shown again after a reload: stored, the secrets still never on the page.
    await browser("reload")
    await browser("waitValue", selector="#oauth-microsoft-tenant", value="contoso.onmicrosoft.com")
    kept = await browser("waitText", selector="#oauth-microsoft-clientSecret-help", text="stored")
    assert "A secret is stored" in kept["text"]
    state = await browser("state")
    assert world.client.client_secret not in state["html"]
    assert "Microsoft-Secret-5521" not in state["html"] and state["problems"] == []
    await browser("screenshot", path=str(shots / "oauth-apps.png"))
    assert await serious(browser) == []
    apps = {a["provider"]: a for a in (await tenant.client(APPS)).data["oauthApps"]}
    assert apps["GOOGLE"]["clientId"] == world.client.client_id
    assert apps["GOOGLE"]["hasClientSecret"] and apps["MICROSOFT"]["hasClientSecret"]
    assert apps["MICROSOFT"]["tenant"] == "contoso.onmicrosoft.com"


async def test_connect_with_google_returns_to_the_inbox_seen_verifying_live(
    browser: Browser, world: ConsoleOAuthWorld, shots: Path
) -> None:
    world.provider.add_user("connected@example.com")
    tenant = await world.tenant_with_app()
    await signed_in(browser, world.verifier, tenant)
    await browser("goto", hash="#/inboxes/new")
    await browser("fill", selector="#connect-email", value="connected@example.com")
    await browser("click", selector="text=Other servers than the provider's")
    for side, server in world.servers().items():
        await browser("fill", selector=f"#connect-{side}-host", value=server["host"])
        await browser("fill", selector=f"#connect-{side}-port", value=str(server["port"]))
        await browser("select", selector=f"#connect-{side}-security", value=server["security"])
    assert await serious(browser) == []
    world.smtp.gate.clear()
    await browser("click", selector="text=Connect with Google")
    # The provider's consent sends the browser back to inboxd's callback page.
    await browser("waitText", selector="h1", text="Connected")
    [row] = await world.inbox_rows(tenant)
    link = await browser("attribute", selector="text=Open the inbox in the console", name="href")
    assert link["value"] == f"/console/#/inboxes/{row.id}"
    await browser("click", selector="text=Open the inbox in the console")
    await browser("waitText", selector="main h1", text="PENDING")  # no worker has it yet
    await browser("mark", value="no reload")
    await world.start_worker()
    await browser("waitText", selector="main h1", text="VERIFYING")
    await browser("waitText", selector=".verify-status", text="VERIFYING")
    world.smtp.gate.set()
    await browser("waitText", selector="main h1", text="ACTIVE")
    await browser("waitText", selector=".verification .sides li[data-side=smtp]", text="ok in")
    settings = (await browser("waitText", selector="#settings", text="OAuth with Google"))["text"]
    assert "tokens refreshed by inboxd" in settings and "Access token expires" in settings
    state = await browser("state")
    assert state["mark"] == "no reload" and state["hash"] == f"#/inboxes/{row.id}"
    assert page_problems(state) == []
    for secret in world.provider.secrets():
        assert secret not in state["html"]
    assert "XOAUTH2" in world.smtp.oauth_attempts
    await browser("screenshot", path=str(shots / "oauth-connected.png"))


async def test_a_reauth_required_inbox_is_reconnected_from_its_page(
    browser: Browser, world: ConsoleOAuthWorld, shots: Path
) -> None:
    world.provider.add_user("revoked@example.com")
    tenant = await world.tenant_with_app()
    await world.start_worker()
    inbox_id = await world.connect(tenant, email="revoked@example.com", **world.servers())
    await world.status(tenant, inbox_id, "ACTIVE")
    world.provider.revoke_user("revoked@example.com")
    queued = await tenant.client(TEST_CONNECTION, {"id": inbox_id})
    assert queued.data["testConnection"]["__typename"] == "TestConnectionSuccess"
    failed = await world.status(tenant, inbox_id, "FAILED")
    assert "REAUTH_REQUIRED" in failed["statusReason"]
    await signed_in(browser, world.verifier, tenant)
    await browser("goto", hash=f"#/inboxes/{inbox_id}")
    await browser("waitText", selector="#settings", text="Reconnect needed since")
    await browser("waitText", selector=".reconnect", text="Reconnect with Google")
    await browser("screenshot", path=str(shots / "oauth-reconnect.png"))
    assert await serious(browser) == []
    await browser("click", selector="text=Reconnect with Google")
    await browser("waitText", selector="h1", text="Connected")
    await browser("waitText", selector="p", text="revoked@example.com is connected again")
    await browser("click", selector="text=Open the inbox in the console")
    await browser("waitText", selector="main h1", text="ACTIVE")
    state = await browser("state")
    assert state["hash"] == f"#/inboxes/{inbox_id}"  # the same inbox, not a second one
    assert (await browser("count", selector=".reconnect"))["count"] == 0
    assert [str(row.id) for row in await world.inbox_rows(tenant)] == [inbox_id]


async def test_an_access_token_given_in_the_form_logs_in_and_is_never_shown(
    browser: Browser, world: ConsoleOAuthWorld
) -> None:
    tokens = world.provider.issue_tokens("given@example.com", world.client.client_id)
    tenant = await world.verifier.tenant()
    await world.start_worker()
    await signed_in(browser, world.verifier, tenant)
    await browser("goto", hash="#/inboxes/new")
    await browser("fill", selector='[name="email"]', value="given@example.com")
    for side, server in world.servers().items():
        await browser("fill", selector=f'[name="{side}.host"]', value=server["host"])
        await browser("fill", selector=f'[name="{side}.port"]', value=str(server["port"]))
        await browser("select", selector=f'[name="{side}.security"]', value=server["security"])
    await browser("fill", selector='[name="oauth2.accessToken"]', value=tokens.access_token)
    # In the browser's time zone, which is this machine's.
    expires = (datetime.now() + timedelta(minutes=50)).strftime("%Y-%m-%dT%H:%M")
    await browser("fill", selector='[name="oauth2.expiresAt"]', value=expires)
    await browser("click", selector="text=Create inbox")
    await browser("waitText", selector=".verify-status", text="ACTIVE")
    await browser("waitValue", selector='[name="oauth2.accessToken"]', value="")
    [row] = await world.inbox_rows(tenant)
    await browser("goto", hash=f"#/inboxes/{row.id}")
    shown = await browser("waitText", selector="#settings", text="token given through the API")
    assert "Access token expires" in shown["text"]
    state = await browser("state")
    assert tokens.access_token not in state["html"] and state["problems"] == []
    assert (await browser("count", selector=".reconnect"))["count"] == 0
