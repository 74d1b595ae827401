"""Background verification against real SMTP and IMAP servers on loopback, watched live."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import Verifier
from tests.support.mailservers import (
    ImapMode,
    ImapServer,
    MailCerts,
    SmtpMode,
    SmtpServer,
    closed_port,
    deliver_to,
)
from tests.support.waiting import subscribed, wait_until
from tests.support.ws import WSClient

USER = "alice@example.test"
PASSWORD = "Verify-Canary-9931"
USERS = {USER: PASSWORD}

CREATE = """
mutation($input: CreateEmailInboxInput!) {
  createEmailInbox(input: $input) {
    __typename
    ... on CreateEmailInboxSuccess { inbox { id status version } }
    ... on UserError { code message }
  }
}"""
STATUS = """
subscription($id: ID!) {
  emailInboxStatus(id: $id) { id status statusReason version lastVerifiedAt }
}"""
TEST_FIELDS = """
  id state attempts error
  smtp { ok code message hint field latencyMs capabilities authMechanisms greeting sizeLimit
         tls { version subject issuer notAfter sha256Fingerprint trusted pinned } }
  imap { ok code message hint field latencyMs capabilities messageCount
         tls { version sha256Fingerprint trusted pinned } }
"""
INBOX_TESTS = (
    "query($id: ID!) { emailInbox(id: $id) { status statusReason errorCount lastVerifiedAt "
    "connectionTests(first: 5) { edges { node { %s } } } } }" % TEST_FIELDS
)
TEST_CONNECTION = (
    "mutation($id: ID!) { testConnection(id: $id) { __typename "
    "... on TestConnectionSuccess { connectionTest { id state } } "
    "... on UserError { code message } } }"
)


@pytest.fixture(scope="module")
def servers(certs: MailCerts) -> Iterator[dict[str, object]]:
    ctx = certs.server_context
    with (
        SmtpServer(SmtpMode.STARTTLS, USERS, ssl_context=ctx) as smtp_starttls,
        SmtpServer(SmtpMode.TLS, USERS, ssl_context=ctx) as smtp_tls,
        ImapServer(ImapMode.TLS, USERS, ssl_context=ctx) as imap_tls,
        ImapServer(ImapMode.STARTTLS, USERS, ssl_context=ctx) as imap_starttls,
    ):
        yield {
            "smtp_starttls": smtp_starttls,
            "smtp_tls": smtp_tls,
            "imap_tls": imap_tls,
            "imap_starttls": imap_starttls,
        }


def inbox_input(
    smtp_port: int,
    smtp_security: str,
    imap_port: int,
    imap_security: str,
    *,
    email: str,
    smtp_password: str = PASSWORD,
    imap_password: str = PASSWORD,
    **extra: object,
) -> dict[str, object]:
    return {
        "email": email,
        "smtp": {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": smtp_security,
            "username": USER,
            "password": smtp_password,
        },
        "imap": {
            "host": "127.0.0.1",
            "port": imap_port,
            "security": imap_security,
            "username": USER,
            "password": imap_password,
        },
        **extra,
    }


async def watch_until_final(ws: WSClient, sub_id: str) -> list[dict[str, object]]:
    seen = []
    async for message in ws.stream(sub_id, timeout=20):
        assert message["type"] == "next", message
        inbox = message["payload"]["data"]["emailInboxStatus"]
        seen.append(inbox)
        if inbox["status"] in ("ACTIVE", "FAILED"):
            return seen
    return seen


def working_input(servers: dict[str, Any], **kwargs: Any) -> dict[str, object]:
    """An inbox on the STARTTLS SMTP and implicit-TLS IMAP servers whose logins succeed."""
    return inbox_input(
        servers["smtp_starttls"].port, "STARTTLS", servers["imap_tls"].port, "TLS", **kwargs
    )


async def latest_test(tenant: Any, inbox_id: str) -> dict[str, Any]:
    """The inbox's newest connection test, as INBOX_TESTS reads it."""
    detail = (await tenant.client(INBOX_TESTS, {"id": inbox_id})).data["emailInbox"]
    return detail["connectionTests"]["edges"][0]["node"]


async def create_and_watch(verifier: Verifier, tenant, input: dict[str, object]):
    created = await tenant.client(CREATE, {"input": input})
    payload = created.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    inbox_id = payload["inbox"]["id"]
    ws = await WSClient.connect(verifier.stack.base_url, tenant.key)
    try:
        sub = await ws.subscribe(STATUS, {"id": inbox_id})
        seen = await watch_until_final(ws, sub)
    finally:
        await ws.close()
    return inbox_id, seen


def statuses(seen: list[dict[str, object]]) -> list[object]:
    return [s["status"] for s in seen]


@pytest.mark.parametrize(
    ("smtp_kind", "imap_kind"),
    [("smtp_starttls", "imap_tls"), ("smtp_tls", "imap_starttls")],
)
async def test_good_credentials_go_pending_verifying_active(
    verifier, servers, smtp_kind, imap_kind
):
    tenant = await verifier.tenant()
    smtp, imap = servers[smtp_kind], servers[imap_kind]
    # The workspace's events, subscribed before the create, see every status the inbox takes,
    # however quickly the worker gets through them.
    events_ws = await WSClient.connect(verifier.stack.base_url, tenant.key)
    try:
        events = await events_ws.subscribe(
            "subscription { emailInboxEvents { kind inboxId version status } }", {}
        )
        assert verifier.stack.state.hub is not None
        await subscribed(verifier.stack.state.hub, tenant.workspace.id)
        inbox_id, seen = await create_and_watch(
            verifier,
            tenant,
            inbox_input(
                smtp.port,
                "STARTTLS" if smtp_kind == "smtp_starttls" else "TLS",
                imap.port,
                "TLS" if imap_kind == "imap_tls" else "STARTTLS",
                email=f"{smtp_kind}@example.com",
            ),
        )
        streamed: list[tuple[int, str]] = []
        while not streamed or streamed[-1][1] != "ACTIVE":
            message = await events_ws.next_payload(events, timeout=30)
            event = message["payload"]["data"]["emailInboxEvents"]
            if event["inboxId"] == inbox_id and event["status"]:
                streamed.append((event["version"], event["status"]))
    finally:
        await events_ws.close()
    assert [status for _, status in streamed] == ["PENDING", "VERIFYING", "ACTIVE"]
    assert [version for version, _ in streamed] == [1, 2, 3]
    # The inbox's own subscriber may join after PENDING or VERIFYING; it then starts at the
    # current state, and what it sees is in order.
    assert statuses(seen)[-1] == "ACTIVE"
    order = ["PENDING", "VERIFYING", "ACTIVE"]
    assert [order.index(s) for s in statuses(seen)] == sorted(
        order.index(s) for s in statuses(seen)
    )
    assert seen[-1]["lastVerifiedAt"] is not None
    versions = [s["version"] for s in seen]
    assert versions == sorted(set(versions))

    detail = (await tenant.client(INBOX_TESTS, {"id": inbox_id})).data["emailInbox"]
    test = detail["connectionTests"]["edges"][0]["node"]
    assert test["state"] == "PASSED" and test["attempts"] == 1
    assert test["smtp"]["ok"] and test["imap"]["ok"]
    assert test["smtp"]["tls"]["trusted"] and test["smtp"]["tls"]["version"].startswith("TLS")
    assert test["smtp"]["tls"]["sha256Fingerprint"]
    assert "PLAIN" in test["smtp"]["authMechanisms"]
    assert test["imap"]["messageCount"] is not None
    assert any(c.upper() == "IDLE" for c in test["imap"]["capabilities"])
    assert PASSWORD not in str(detail)


async def test_subscriber_sees_pending_then_verifying_then_active(verifier, servers):
    """Subscribe first, then create: the whole sequence is seen in order."""
    tenant = await verifier.tenant()
    ws = await WSClient.connect(verifier.stack.base_url, tenant.key)
    try:
        sub = await ws.subscribe(
            "subscription { emailInboxEvents "
            "{ kind inboxId version status inbox { status version } } }"
        )
        await subscribed(verifier.stack.state.hub, tenant.workspace.id)
        created = await tenant.client(
            CREATE,
            {"input": working_input(servers, email="order@example.com")},
        )
        inbox_id = created.data["createEmailInbox"]["inbox"]["id"]
        kinds = []
        while True:
            message = await ws.next_payload(sub, timeout=20)
            event = message["payload"]["data"]["emailInboxEvents"]
            assert event["inboxId"] == inbox_id
            kinds.append((event["kind"], event["version"], event["status"]))
            # The inbox is read on delivery: never older than the event (issue 11 point 12).
            assert event["inbox"]["version"] >= event["version"], event
            if event["status"] in ("ACTIVE", "FAILED"):
                break
        # The events alone tell the sequence, whatever state a late read found.
        assert kinds == [
            ("CREATED", 1, "PENDING"),
            ("STATUS_CHANGED", 2, "VERIFYING"),
            ("STATUS_CHANGED", 3, "ACTIVE"),
        ]
    finally:
        await ws.close()


@pytest.mark.parametrize("side", ["smtp", "imap"])
async def test_wrong_password_fails_with_the_field_after_one_login(verifier, servers, side):
    tenant = await verifier.tenant()
    wrong = {f"{side}_password": "not-the-password"}
    server = servers["smtp_starttls" if side == "smtp" else "imap_tls"]
    logins_before = server.auth_attempts
    inbox_id, seen = await create_and_watch(
        verifier,
        tenant,
        working_input(servers, email=f"wrong-{side}@example.com", **wrong),
    )
    assert statuses(seen)[-1] == "FAILED"
    # The server's refusal is reported as such (not a timeout), after exactly one login:
    # never retried, so a provider has no reason to lock the account.
    assert server.auth_attempts - logins_before == 1
    detail = (await tenant.client(INBOX_TESTS, {"id": inbox_id})).data["emailInbox"]
    test = detail["connectionTests"]["edges"][0]["node"]
    result = test[side]
    other = test["imap" if side == "smtp" else "smtp"]
    assert result["ok"] is False and result["code"] == "AUTH_FAILED"
    assert result["field"] == f"{side}.password"
    assert other["ok"] is True
    assert test["state"] == "FAILED" and test["attempts"] == 1  # never retried
    assert detail["status"] == "FAILED" and "AUTH_FAILED" in detail["statusReason"]
    assert detail["errorCount"] == 1


async def test_provider_hint_on_auth_failure(verifier, servers):
    tenant = await verifier.tenant()
    inbox_id, _seen = await create_and_watch(
        verifier,
        tenant,
        working_input(servers, email="someone@gmail.com", provider="GMAIL", smtp_password="nope"),
    )
    hint = (await latest_test(tenant, inbox_id))["smtp"]["hint"]
    assert "app password" in hint.lower()


async def test_closed_port_is_connection_refused_and_retried(verifier, servers):
    tenant = await verifier.tenant()
    inbox_id, seen = await create_and_watch(
        verifier,
        tenant,
        inbox_input(
            closed_port(), "STARTTLS", servers["imap_tls"].port, "TLS", email="closed@example.com"
        ),
    )
    assert statuses(seen)[-1] == "FAILED"
    test = await latest_test(tenant, inbox_id)
    assert test["smtp"]["code"] == "CONNECTION_REFUSED"
    assert test["smtp"]["field"] == "smtp.port"
    # Transient: retried with backoff up to the attempt limit, then FAILED.
    assert test["attempts"] == verifier.stack.settings.job_max_attempts


async def test_implicit_tls_against_starttls_port_explains(verifier, servers):
    tenant = await verifier.tenant()
    inbox_id, _ = await create_and_watch(
        verifier,
        tenant,
        inbox_input(
            servers["smtp_starttls"].port,
            "TLS",
            servers["imap_tls"].port,
            "TLS",
            email="mismatch@example.com",
        ),
    )
    smtp = (await latest_test(tenant, inbox_id))["smtp"]
    assert smtp["code"] == "PROTOCOL_ERROR"
    assert "STARTTLS" in smtp["hint"]


async def test_self_signed_certificate_then_pinned(verifier, certs, servers):
    tenant = await verifier.tenant()
    with SmtpServer(SmtpMode.TLS, USERS, ssl_context=certs.untrusted_context) as self_signed:
        inbox_id, _ = await create_and_watch(
            verifier,
            tenant,
            inbox_input(
                self_signed.port,
                "TLS",
                servers["imap_tls"].port,
                "TLS",
                email="selfsigned@example.com",
            ),
        )
        detail = (await tenant.client(INBOX_TESTS, {"id": inbox_id})).data["emailInbox"]
        smtp = detail["connectionTests"]["edges"][0]["node"]["smtp"]
        assert smtp["code"] == "CERTIFICATE_UNTRUSTED"
        assert smtp["field"] == "smtp.tlsCertificateSha256"
        fingerprint = smtp["tls"]["sha256Fingerprint"]
        assert fingerprint and fingerprint in smtp["message"] + (smtp["hint"] or "")
        assert self_signed.auth_attempts == 0  # no credential sent to an unverified server

        ws = await WSClient.connect(verifier.stack.base_url, tenant.key)
        try:
            sub = await ws.subscribe(STATUS, {"id": inbox_id})
            first = await ws.next_payload(sub)
            assert first["payload"]["data"]["emailInboxStatus"]["status"] == "FAILED"
            # emailInboxStatus shows the inbox as read on delivery (a fast worker may already
            # have it VERIFYING); the events carry the status at each version: the sequence.
            hub, workspace_id = verifier.stack.state.hub, tenant.workspace.id
            watching = sum(1 for w in list(hub._watchers) if w.workspace_id == workspace_id)
            events = await ws.subscribe(
                "subscription { emailInboxEvents { kind inboxId version status } }"
            )
            await subscribed(hub, workspace_id, count=watching + 1)
            pinned = await tenant.client(
                "mutation($id: ID!, $input: UpdateEmailInboxInput!) { updateEmailInbox(id: $id,"
                " input: $input) { __typename } }",
                {"id": inbox_id, "input": {"smtp": {"tlsCertificateSha256": fingerprint}}},
            )
            assert pinned.data["updateEmailInbox"]["__typename"] == "UpdateEmailInboxSuccess"
            seen = await watch_until_final(ws, sub)
            sequence = []
            while not sequence or sequence[-1] not in ("ACTIVE", "FAILED"):
                message = await ws.next_payload(events, timeout=20)
                event = message["payload"]["data"]["emailInboxEvents"]
                if event["inboxId"] == inbox_id and event["status"]:
                    sequence.append(event["status"])
        finally:
            await ws.close()
        assert sequence[0] == "PENDING", sequence  # the pin put it back to be verified
        assert sequence[-1] == "ACTIVE", sequence
        assert statuses(seen)[-1] == "ACTIVE"
        latest = (await latest_test(tenant, inbox_id))["smtp"]
        assert latest["ok"] and latest["tls"]["pinned"] and not latest["tls"]["trusted"]


async def test_test_connection_returns_the_open_test(verifier, servers):
    tenant = await verifier.tenant()
    inbox_id, _ = await create_and_watch(
        verifier,
        tenant,
        working_input(servers, email="again@example.com"),
    )
    results = await asyncio.gather(
        *(tenant.client(TEST_CONNECTION, {"id": inbox_id}) for _ in range(5))
    )
    ids = {r.data["testConnection"]["connectionTest"]["id"] for r in results}
    assert len(ids) == 1  # one test, returned to every caller
    test_id = ids.pop()
    ws = await WSClient.connect(verifier.stack.base_url, tenant.key)
    try:
        sub = await ws.subscribe(
            "subscription($id: ID!) { connectionTest(id: $id) { id state } }", {"id": test_id}
        )
        states = []
        async for message in ws.stream(sub, timeout=20):
            if message["type"] == "next":
                states.append(message["payload"]["data"]["connectionTest"]["state"])
        assert message["type"] == "complete"
        assert states[-1] == "PASSED"
    finally:
        await ws.close()
    history = (await tenant.client(INBOX_TESTS, {"id": inbox_id})).data["emailInbox"]
    assert len(history["connectionTests"]["edges"]) == 2
    missing = await tenant.client(TEST_CONNECTION, {"id": "00000000-0000-0000-0000-000000000000"})
    assert missing.data["testConnection"]["__typename"] == "NotFound"


async def test_private_host_refused_when_not_allowed(pg_server, certs, keyring, servers):
    from tests.conftest import verifier_on

    attempts_before = servers["smtp_starttls"].auth_attempts
    async with verifier_on(pg_server[0], certs, keyring, allow_private_hosts=False) as strict:
        tenant = await strict.tenant()
        inbox_id, seen = await create_and_watch(
            strict,
            tenant,
            working_input(servers, email="private@example.com"),
        )
        test = await latest_test(tenant, inbox_id)
        assert test["smtp"]["code"] == "HOST_NOT_ALLOWED"
        assert test["imap"]["code"] == "HOST_NOT_ALLOWED"
        assert statuses(seen)[-1] == "FAILED"
        assert "not allowed" in test["smtp"]["message"]
        # Refused before connecting: the server never saw a login.
        assert servers["smtp_starttls"].auth_attempts == attempts_before


async def test_subscription_needs_a_valid_key(verifier):
    ws = await WSClient.connect(verifier.stack.base_url, "inbx_bogus", ack=False)
    try:
        with pytest.raises(ConnectionClosed):
            await ws.receive(timeout=5)
        assert ws.connection.close_code == 4403
    finally:
        await ws.close()


async def test_subscription_to_another_workspace_inbox_is_not_found(verifier, servers):
    owner, stranger = await verifier.tenant(), await verifier.tenant()
    inbox_id, _ = await create_and_watch(
        verifier,
        owner,
        working_input(servers, email="mine@example.com"),
    )
    ws = await WSClient.connect(verifier.stack.base_url, stranger.key)
    try:
        sub = await ws.subscribe(STATUS, {"id": inbox_id})
        message = await ws.next_payload(sub)
        assert message["type"] in ("error", "next")
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "NOT_FOUND"
    finally:
        await ws.close()


async def test_no_credential_in_logs_jobs_or_notify_payloads(verifier, servers, capfd):
    import asyncpg

    from inboxd.logs import configure_logging

    canary_good, canary_bad = PASSWORD, "Wrong-Canary-Leak-8812"
    payloads: list[str] = []
    listener = await asyncpg.connect(verifier.stack.settings.database_url)
    for channel in ("inboxd_events", "inboxd_jobs"):
        await listener.add_listener(channel, lambda *args: payloads.append(args[3]))
    configure_logging("DEBUG")
    try:
        tenant = await verifier.tenant()
        ids = []
        for email, smtp_password in (
            ("leak1@example.com", canary_good),
            ("leak2@example.com", canary_bad),
        ):
            inbox_id, seen = await create_and_watch(
                verifier,
                tenant,
                working_input(servers, email=email, smtp_password=smtp_password),
            )
            ids.append(inbox_id)
        assert statuses(seen)[-1] == "FAILED"
        # Our own listener hears the final change too (each LISTEN connection in its own time).
        final = (ids[-1], seen[-1]["version"])

        def heard_final() -> bool:
            events = [json.loads(p) for p in payloads if p.startswith("{")]
            return any((e.get("i"), e.get("v")) == final for e in events)

        await wait_until(heard_final, "the final event on the test's listener")
    finally:
        configure_logging("WARNING")
        await listener.close()
    async with verifier.db.connection() as connection:
        rows = [
            row[0]
            for row in await connection.fetch(
                "SELECT row_to_json(t)::text FROM connection_test t"
                " WHERE inbox_id = ANY($1::uuid[])",
                [uuid.UUID(i) for i in ids],
            )
        ]
    captured = capfd.readouterr()

    # Everything inboxd (and its libraries) logged; the test's own mail servers log the logins
    # they receive, and they are not inboxd.
    def from_test_servers(line: str) -> bool:
        try:
            logger = str(json.loads(line).get("logger", ""))
        except (ValueError, AttributeError):
            return False
        return logger.startswith("pymap") or logger == "mail.log"

    logs = "\n".join(
        line for line in (captured.out + captured.err).splitlines() if not from_test_servers(line)
    )
    assert payloads and rows and "connection test finished" in logs
    for canary in (canary_good, canary_bad):
        assert canary not in logs
        assert all(canary not in p for p in payloads)
        assert all(canary not in r for r in rows)


ROUND_TRIP_FIELDS = """
  id state error
  smtp { ok } imap { ok }
  roundTrip { ok sent received deleted delayMs messageId code message hint field }
"""
SEND_TEST = (
    "mutation($id: ID!, $to: String) { sendTestEmail(id: $id, to: $to) { __typename "
    "... on TestConnectionSuccess { connectionTest { id state } } "
    "... on ValidationError { fields { field message } } } }"
)
WATCH_TEST = "subscription($id: ID!) { connectionTest(id: $id) { %s } }" % ROUND_TRIP_FIELDS


async def run_test_to_end(verifier, tenant, test_id: str) -> dict[str, object]:
    ws = await WSClient.connect(verifier.stack.base_url, tenant.key)
    try:
        sub = await ws.subscribe(WATCH_TEST, {"id": test_id})
        last = None
        async for message in ws.stream(sub, timeout=30):
            if message["type"] == "next":
                last = message["payload"]["data"]["connectionTest"]
        assert message["type"] == "complete", message
        assert last is not None
        return last
    finally:
        await ws.close()


async def test_round_trip_sent_received_and_deleted(verifier, certs):
    tenant = await verifier.tenant()
    email = "roundtrip@example.com"
    imap = ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context)
    with (
        imap,
        SmtpServer(
            SmtpMode.STARTTLS,
            USERS,
            ssl_context=certs.server_context,
            on_message=deliver_to(imap, lambda rcpt: USER if rcpt.lower() == email else None),
        ) as smtp,
    ):
        inbox_id, seen = await create_and_watch(
            verifier, tenant, inbox_input(smtp.port, "STARTTLS", imap.port, "TLS", email=email)
        )
        assert statuses(seen)[-1] == "ACTIVE"
        sent = await tenant.client(SEND_TEST, {"id": inbox_id})
        test_id = sent.data["sendTestEmail"]["connectionTest"]["id"]
        result = await run_test_to_end(verifier, tenant, test_id)
        assert result["state"] == "PASSED", result
        trip = result["roundTrip"]
        assert trip["ok"] and trip["sent"] and trip["received"] and trip["deleted"]
        assert trip["delayMs"] is not None and trip["code"] == "OK"
        assert imap.message_count(USER) == 0  # the test message was cleaned up
        assert len(smtp.messages) == 1
        assert smtp.messages[0].rcpt_tos == [email]

        # The same through testConnection(roundTrip: true).
        again = await tenant.client(
            "mutation($id: ID!) { testConnection(id: $id, roundTrip: true) { "
            "... on TestConnectionSuccess { connectionTest { id } } } }",
            {"id": inbox_id},
        )
        result = await run_test_to_end(
            verifier, tenant, again.data["testConnection"]["connectionTest"]["id"]
        )
        assert result["state"] == "PASSED" and result["roundTrip"]["received"] is True


async def test_round_trip_sent_but_not_received(verifier, servers):
    tenant = await verifier.tenant()
    # These servers do not share a mailbox: what SMTP accepts never reaches the IMAP inbox.
    inbox_id, _seen = await create_and_watch(
        verifier,
        tenant,
        working_input(servers, email="lost@example.com"),
    )
    sent = await tenant.client(SEND_TEST, {"id": inbox_id})
    result = await run_test_to_end(
        verifier, tenant, sent.data["sendTestEmail"]["connectionTest"]["id"]
    )
    assert result["state"] == "FAILED"
    trip = result["roundTrip"]
    assert trip["sent"] is True and trip["received"] is False and trip["ok"] is False
    assert trip["code"] == "NOT_RECEIVED"
    assert "not received" in trip["message"].lower()
    assert trip["hint"]
    assert "NOT_RECEIVED" in result["error"]
    # The logins work: the inbox stays ACTIVE; only the test failed.
    detail = (await tenant.client(INBOX_TESTS, {"id": inbox_id})).data["emailInbox"]
    assert detail["status"] == "ACTIVE"


async def test_send_test_email_to_another_address(verifier, servers):
    tenant = await verifier.tenant()
    inbox_id, _ = await create_and_watch(
        verifier,
        tenant,
        working_input(servers, email="sender@example.com"),
    )
    before = len(servers["smtp_starttls"].messages)
    bad = await tenant.client(SEND_TEST, {"id": inbox_id, "to": "nope"})
    assert bad.data["sendTestEmail"]["fields"][0]["field"] == "to"
    sent = await tenant.client(SEND_TEST, {"id": inbox_id, "to": "Colleague@Example.org"})
    result = await run_test_to_end(
        verifier, tenant, sent.data["sendTestEmail"]["connectionTest"]["id"]
    )
    assert result["state"] == "PASSED"
    assert result["roundTrip"]["sent"] is True and result["roundTrip"]["received"] is None
    delivered = servers["smtp_starttls"].messages[before:]
    assert [m.rcpt_tos for m in delivered] == [["colleague@example.org"]]


async def test_verification_fills_setup_status_without_failing(verifier, servers, dns_server):
    dns_server.add_records(
        {
            "dns-checked.com": {"MX": "0 ."},
            "_dmarc.dns-checked.com": {"TXT": "v=DMARC1; p=none"},
        }
    )
    tenant = await verifier.tenant()
    inbox_id, seen = await create_and_watch(
        verifier,
        tenant,
        working_input(servers, email="ops@dns-checked.com"),
    )
    assert statuses(seen)[-1] == "ACTIVE"  # a poor DNS setup never fails the verification
    detail = (
        await tenant.client(
            "query($id: ID!) { emailInbox(id: $id) { setupStatus { domain mx { state message } "
            "spf { state } dmarc { state } } connectionTests(first: 1) { edges { node { "
            "dns { mx { state } } } } } } }",
            {"id": inbox_id},
        )
    ).data["emailInbox"]
    status = detail["setupStatus"]
    assert status["domain"] == "dns-checked.com"
    assert status["mx"]["state"] == "FAIL"
    assert status["spf"]["state"] == "MISSING"
    assert status["dmarc"]["state"] == "WARN"
    assert detail["connectionTests"]["edges"][0]["node"]["dns"]["mx"]["state"] == "FAIL"
