"""Shared plumbing for the sending drills (``sending_*.py``).

- ``SinkSmtp``: the drills' counting SMTP server (STARTTLS) that keeps every message it
  accepted; ``delivered()`` counts them by Message-ID. With ``accept_delay`` it waits that long
  after storing a message before it answers 250: the window in which the server has the
  message and the sender does not know it yet (RFC 1047) is widened on purpose.
- ``SentImap``: the drills' pymap (implicit TLS); every mailbox gets a "Sent" folder, so the
  worker files its copies and a successor can look an interrupted send up there.
- ``start_stack``: every mailbox's Sent folder, an API-only ``inboxd serve`` and two ``inboxd
  worker`` processes (verify and send), the inboxes created through the API and waited for
  until ACTIVE.
- ``burst`` (``Stack.start_burst``): ``count`` sendEmail calls at ``rate`` per second, round
  robin over the inboxes, each with its own idempotencyKey and retried until acknowledged (a
  lost answer must not make a second message).
- ``settle`` / ``check_exactly_once``: every outgoing_message row read back from Postgres and
  compared with what the SMTP server received.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aioimaplib
import asyncpg
from _common import CREATE, Api, CountingImap, CountingSmtp, Drill, Proc, inbox_input, log

from tests.support import mailservers

PASSWORD_OF = dict[str, str]
FINAL = ("SENT", "FAILED", "CANCELLED")

# Sending settings of the drills' workers: a dead worker's messages are taken over in seconds
# (lease 5 s, renewed every 5/3 s), transient failures retried within a second or two, and
# never given up during the outage.
SENDING_ENV = {
    "INBOXD_SEND_LEASE_SECONDS": "5",
    "INBOXD_SEND_RETRY_BASE_SECONDS": "0.5",
    "INBOXD_SEND_RETRY_CAP_SECONDS": "2",
    "INBOXD_SEND_MAX_ATTEMPTS": "30",
    "INBOXD_JOB_POLL_INTERVAL_SECONDS": "1",
    "INBOXD_LOG_LEVEL": "INFO",
}

SEND = """mutation($inboxId: ID!, $input: SendEmailInput!) { sendEmail(inboxId: $inboxId,
  input: $input) { __typename ... on SendEmailSuccess { outgoingMessage { id messageId state } }
  ... on UserError { code message } } }"""

_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]+>)")


def message_id_of(data: bytes) -> str:
    found = _MESSAGE_ID.search(data.split(b"\r\n\r\n", 1)[0])
    return found.group(1).decode() if found else "(none)"


class _DelayedHandler(mailservers.SmtpHandler):
    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(smtp, session, envelope)
        delay = getattr(self._server, "accept_delay", 0.0)
        if delay and reply.startswith("250"):
            await asyncio.sleep(delay)  # stored: delivered, whatever happens to the reply
        return reply


class SinkSmtp(CountingSmtp):
    def __init__(self, users: dict[str, str], certs: Any, accept_delay: float = 0.0) -> None:
        super().__init__(users, certs)
        self.accept_delay = accept_delay

    def handler(self) -> Any:
        # aiosmtpd binds a handler's hooks when the protocol is made: setting
        # ``event_handler`` afterwards (as this drill once did) leaves the old handle_DATA,
        # and the accept delay never happened.
        return _DelayedHandler(self)

    def delivered(self) -> Counter[str]:
        return Counter(message_id_of(m.data) for m in list(self.messages))


class SentImap(CountingImap):
    """pymap whose mailboxes each get a "Sent" folder (``make_sent_folders``)."""


async def make_sent_folders(port: int, users: dict[str, str], ca_file: str) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    for name, password in users.items():
        client = aioimaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=30)
        await client.wait_hello_from_server()
        assert (await client.login(name, password)).result == "OK"
        assert (await client.create("Sent")).result == "OK"
        await client.logout()


async def sent_copies(
    port: int, users: dict[str, str], ca_file: str, rows: list[dict[str, Any]]
) -> Counter[int]:
    """How many messages (of ``rows``) have 0, 1, 2... copies in their Sent folder."""
    in_sent = await sent_folder_ids(port, users, ca_file)
    return Counter(in_sent.get(r["message_id"], 0) for r in rows)


async def sent_folder_ids(port: int, users: dict[str, str], ca_file: str) -> Counter[str]:
    """Message-IDs of every copy in every user's Sent folder."""
    context = ssl.create_default_context(cafile=ca_file)
    found: Counter[str] = Counter()
    for name, password in users.items():
        client = aioimaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=30)
        await client.wait_hello_from_server()
        assert (await client.login(name, password)).result == "OK"
        await client.select("Sent")
        response = await client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        for line in response.lines:
            if isinstance(line, (bytes, bytearray)) and b"message-id" in line.lower():
                found[message_id_of(bytes(line))] += 1
        await client.logout()
    return found


@dataclass
class Stack:
    api: Api
    serve: Proc
    workers: list[Proc]
    inbox_ids: dict[str, str]  # user -> inbox id

    def start_burst(self, count: int, rate: float) -> Sending:
        """``burst`` of ``count`` sends at ``rate`` per second over every inbox, running."""
        result = Burst()
        started = time.monotonic()
        ids = list(self.inbox_ids.values())
        sending = asyncio.create_task(burst(self.api, ids, count, rate, result))
        return Sending(result, sending, started)


async def start_stack(drill: Drill, users: dict[str, str], smtp_port: int, imap_port: int) -> Stack:
    await make_sent_folders(imap_port, users, drill.certs.ca_file)
    serve = drill.start("serve", "serve", INBOXD_WORKER_ENABLED="false")
    workers = [drill.start("worker", f"worker{i + 1}", **SENDING_ENV) for i in range(2)]
    key = await drill.tenant_key()
    api = Api(serve.base_url, key, timeout=15)
    ids: dict[str, str] = {}
    for user, password in users.items():
        value = {**inbox_input(user, password, smtp_port, imap_port), "dailySendLimit": 50}
        body = await api.call(CREATE, {"input": value})
        payload = body["data"]["createEmailInbox"]
        assert payload["__typename"] == "CreateEmailInboxSuccess", payload
        ids[user] = payload["inbox"]["id"]
    started = time.monotonic()
    connection = await asyncpg.connect(drill.database_url, timeout=10)
    try:
        while True:
            active = await connection.fetchval(
                "SELECT count(*) FROM email_inbox WHERE status = 'ACTIVE'"
            )
            if active >= len(ids):
                break
            if time.monotonic() - started > 120:
                raise RuntimeError(f"only {active} of {len(ids)} inboxes ACTIVE after 120 s")
            await asyncio.sleep(0.2)
    finally:
        await connection.close()
    log(f"{len(ids)} inboxes ACTIVE in {time.monotonic() - started:.1f} s")
    return Stack(api, serve, workers, ids)


@dataclass
class Burst:
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> outgoingMessage
    retries: int = 0
    refusals: Counter[str] = field(default_factory=Counter)


@dataclass
class Sending:
    """A burst under way: ``result`` fills as its sends are acknowledged."""

    result: Burst
    task: asyncio.Task[None]
    started: float  # monotonic

    async def finish(self) -> None:
        await self.task
        log(
            f"burst done: {len(self.result.acked)} acknowledged in "
            f"{time.monotonic() - self.started:.1f} s, retries {self.result.retries}"
        )


async def burst(
    api: Api, inbox_ids: list[str], count: int, rate: float, result: Burst, concurrency: int = 8
) -> None:
    """``count`` sends at ``rate``/s; each retried (same idempotencyKey) until acknowledged."""
    started = time.monotonic()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def one(i: int) -> None:
        key = f"drill-{i:05d}"
        variables = {
            "inboxId": inbox_ids[i % len(inbox_ids)],
            "input": {
                "to": [f"Rita {i} <rita{i % 7}@receiver.drill.example>"],
                "subject": f"Drill message {i}",
                "text": f"Message {i} of the drill.",
                "idempotencyKey": key,
            },
        }
        while True:
            try:
                body = await api.call(SEND, variables)
                payload = (body.get("data") or {}).get("sendEmail") or {}
                if payload.get("__typename") == "SendEmailSuccess":
                    result.acked[key] = payload["outgoingMessage"]
                    return
                result.refusals[payload.get("code") or str(body.get("errors"))[:80]] += 1
            except Exception as exc:
                result.refusals[type(exc).__name__] += 1
            result.retries += 1
            await asyncio.sleep(0.25)

    async def sender() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            due = started + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await one(i)

    await asyncio.gather(*(sender() for _ in range(concurrency)))


async def read_rows(database_url: str) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT id, idempotency_key, message_id, state, attempts, lease_owner, last_code, "
            "last_reply, sent_folder FROM outgoing_message"
        )
        return [dict(r) for r in rows]
    finally:
        await connection.close()


async def copies_settled(database_url: str, within: float) -> int:
    """Wait until no SENT message's Sent copy is still due (a killed worker's come due after
    the lease and are filed by the survivor); the number still due after ``within`` s."""
    started = time.monotonic()
    while True:
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            due: int = await connection.fetchval(
                "SELECT count(*) FROM outgoing_message WHERE copy_due_at IS NOT NULL"
            )
        finally:
            await connection.close()
        if due == 0 or time.monotonic() - started > within:
            return due
        await asyncio.sleep(0.5)


async def settle(database_url: str, expected: int, within: float) -> tuple[list[dict], float]:
    """Rows, once all ``expected`` are final (or ``within`` s passed); and the wait."""
    started = time.monotonic()
    last = 0.0
    while True:
        try:
            rows = await read_rows(database_url)
        except (OSError, asyncpg.PostgresError) as exc:
            log(f"reading the outbox failed: {exc!r}")
            await asyncio.sleep(0.5)
            continue
        done = sum(1 for r in rows if r["state"] in FINAL)
        waited = time.monotonic() - started
        if (done >= expected and len(rows) >= expected) or waited > within:
            return rows, waited
        if time.monotonic() - last > 5:
            last = time.monotonic()
            log(f"waiting: {dict(Counter(r['state'] for r in rows))}")
        await asyncio.sleep(0.2)


@dataclass
class Tally:
    rows: int = 0
    sent: int = 0
    delivered_once: int = 0
    duplicates: int = 0
    lost: int = 0
    strangers: int = 0
    found_in_sent: int = 0
    retried: int = 0
    # FAILED as "may have been accepted" (the worker died after its write-ahead mark, before
    # the server's reply): inboxd did not send it again and says so. Delivered once or not
    # at all (the kill's RST can drop a message the server had not read to its end): either
    # way the row tells the user, so neither is a silent loss; twice would be a duplicate.
    unknown: int = 0
    unknown_undelivered: int = 0

    def line(self) -> str:
        return (
            f"rows {self.rows}, SENT {self.sent}; at the SMTP server: delivered once "
            f"{self.delivered_once}, duplicates {self.duplicates}, lost {self.lost}, unknown "
            f"Message-IDs {self.strangers}; SENT without sending again (found in the Sent "
            f"folder) {self.found_in_sent}; FAILED as possibly accepted (not sent again) "
            f"{self.unknown}, of them not delivered {self.unknown_undelivered}; rows with more "
            f"than one attempt {self.retried}"
        )


def check_exactly_once(
    burst_result: Burst, rows: list[dict], delivered: Counter[str], count: int, problems: list[str]
) -> Tally:
    tally = Tally(rows=len(rows))
    if len(burst_result.acked) != count:
        problems.append(f"{count - len(burst_result.acked)} sends never acknowledged")
    keys = Counter(r["idempotency_key"] for r in rows)
    if len(rows) != count or any(n > 1 for n in keys.values()):
        problems.append(f"{len(rows)} outgoing rows for {count} idempotency keys")
    by_id = {str(r["id"]): r for r in rows}
    for key, acked in burst_result.acked.items():
        row = by_id.get(acked["id"])
        if row is None or row["idempotency_key"] != key:
            problems.append(f"acknowledged {key} ({acked['id']}) has no row")
    expected = {r["message_id"] for r in rows}
    for row in rows:
        n = delivered.get(row["message_id"], 0)
        tally.sent += row["state"] == "SENT"
        tally.retried += row["attempts"] > 1
        tally.found_in_sent += row["state"] == "SENT" and "Sent folder" in (row["last_reply"] or "")
        unknown = row["state"] == "FAILED" and "may have accepted" in (row["last_reply"] or "")
        tally.unknown += unknown
        tally.unknown_undelivered += unknown and n == 0
        if row["state"] != "SENT" and not unknown:
            problems.append(
                f"{row['idempotency_key']} is {row['state']} after {row['attempts']} attempts: "
                f"{row['last_code']} {row['last_reply']}"
            )
        if n == 1:
            tally.delivered_once += 1
        elif n == 0:
            if not unknown:  # FAILED as possibly accepted, and it was not: the row says so
                tally.lost += 1
                problems.append(f"{row['idempotency_key']} {row['message_id']} never delivered")
        else:
            tally.duplicates += n - 1
            problems.append(
                f"{row['idempotency_key']} {row['message_id']} delivered {n} times "
                f"(attempts {row['attempts']}, {row['state']}: {row['last_reply']})"
            )
    tally.strangers = sum(n for m, n in delivered.items() if m not in expected)
    if tally.strangers:
        problems.append(f"{tally.strangers} messages delivered that no row stands for")
    return tally


def worker_problems(stack: Stack, problems: list[str], killed: Proc | None = None) -> None:
    for proc in [stack.serve, *stack.workers]:
        if proc is not killed and not proc.alive():
            problems.append(f"{proc.kind} pid {proc.pid} died: {proc.log_tail(10)}")
