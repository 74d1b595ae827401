"""Shared plumbing for the receiving drills (``receiving_*.py``).

- ``WatchImap``: the drills' pymap server (implicit TLS) that also counts, per username, the
  sessions that opened a mailbox (EXAMINE/SELECT): a watcher. Two processes watching one inbox
  at once show up as 2 in ``max_watching``. Delivering sessions only APPEND and are not counted.
- ``Appender`` / ``burst``: mail delivered as a mail client would, by APPEND from sessions of
  its own (one per username, reconnected and retried while the server is away), each message
  with a unique Message-ID.
- ``EventCounter``: LISTENs to inboxd's events channel and counts MESSAGE_RECEIVED per stored
  message (a message notified twice is a duplicate too).
- ``LeaseSampler``: reads the ``inbox_watch`` table every 0.2 s: who held what, and when every
  inbox was watched again after a failure (the takeover time).
- ``Observers``: the three above started together for a drill, with its burst and its stop.
- ``start_stack`` / ``create_inboxes``: an ``inboxd serve`` that verifies (receiving off) and
  ``inboxd worker`` processes that receive; ``check_exactly_once`` reads every stored message
  back and compares it with what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioimaplib
import asyncpg
import orjson
from _common import (
    CREATE,
    Api,
    CountingImap,
    Drill,
    Proc,
    _imap_connection,
    inbox_input,
    log,
)

WATCHING_STATES = ("IDLE", "POLLING")
EVEN_WITHIN = 30.0  # seconds: two workers share the inboxes out evenly by then

# Receiving settings of the drills' workers: a dead process's inboxes are taken over in
# seconds (lease 3 s, renewed every 1 s), and a broken connection is retried within seconds.
RECEIVING_ENV = {
    "INBOXD_RECEIVING_ENABLED": "true",
    "INBOXD_RECEIVING_LEASE_SECONDS": "3",
    "INBOXD_RECEIVING_BACKOFF_BASE_SECONDS": "0.5",
    "INBOXD_RECEIVING_BACKOFF_MAX_SECONDS": "5",
    # The receiver says at INFO when a connection broke and why; the API stays at WARNING.
    "INBOXD_LOG_LEVEL": "INFO",
}


class _WatchReader:
    """A connection's reader that notes the first EXAMINE/SELECT of the session."""

    def __init__(self, reader: asyncio.StreamReader, server: WatchImap, holder: dict[str, Any]):
        self._reader = reader
        self._server = server
        self._holder = holder

    async def readline(self) -> bytes:
        line = await self._reader.readline()
        words = line.split()
        if len(words) >= 2 and words[1].upper() in (b"EXAMINE", b"SELECT"):
            self._server._opened(self._holder)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class WatchImap(CountingImap):
    """CountingImap that also counts open watching sessions per username."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watching: Counter[str] = Counter()
        self.max_watching: Counter[str] = Counter()
        self.watch_sessions: Counter[str] = Counter()  # sessions that ever opened a mailbox
        # How long (seconds, the longest stretch) a username had two watching sessions open.
        self.doubled_for: dict[str, float] = {}
        self.doubled_until: dict[str, float] = {}  # when the last such stretch ended
        self._doubled_since: dict[str, float] = {}

    def doubled(self) -> dict[str, int]:
        """Usernames that had two watching sessions open at once (or more: how many)."""
        return {u: n for u, n in self.max_watching.items() if n > 1}

    def watched_twice(self, doubled: dict[str, int]) -> str:
        """The problem of ``doubled`` (from ``doubled()``), with the longest such stretch."""
        longest = max(self.doubled_for.values(), default=0.0)
        return (
            f"{len(doubled)} usernames watched by two sessions at once, for up to "
            f"{longest:.1f} s: {sorted(doubled)}"
        )

    def _opened(self, holder: dict[str, Any]) -> None:
        user = holder.get("user")
        if user is None or holder.get("watching"):
            return
        holder["watching"] = user
        with self._lock:
            self.watch_sessions[user] += 1
            self.watching[user] += 1
            self.max_watching[user] = max(self.max_watching[user], self.watching[user])
            if self.watching[user] == 2:
                self._doubled_since[user] = time.monotonic()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        holder: dict[str, Any] = {}
        _imap_connection.set(holder)
        try:
            await super(CountingImap, self).handle(_WatchReader(reader, self, holder), writer)  # type: ignore[arg-type]
        finally:
            user = holder.pop("user", None)
            watched = holder.pop("watching", None)
            with self._lock:
                if user is not None:
                    self.active[user] -= 1
                if watched is not None:
                    self.watching[watched] -= 1
                    if self.watching[watched] == 1:
                        took = time.monotonic() - self._doubled_since.pop(watched)
                        self.doubled_for[watched] = max(self.doubled_for.get(watched, 0), took)
                        self.doubled_until[watched] = time.monotonic()


# --- delivering mail ---------------------------------------------------------------------------


def new_message(n: int, to: str) -> tuple[str, bytes]:
    message_id = f"<burst-{n:05d}-{uuid.uuid4().hex[:12]}@sender.drill>"
    raw = (
        f"From: Sender <sender@sender.drill>\r\nTo: {to}\r\nSubject: burst {n}\r\n"
        f"Message-ID: {message_id}\r\nDate: {time.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"\r\nMessage {n} of the burst.\r\n"
    ).encode()
    return message_id, raw


@dataclass
class Appender:
    """APPENDs over implicit TLS, one session per username, reconnecting when it broke."""

    port: int
    users: dict[str, str]
    context: ssl.SSLContext
    give_up_after: float = 120.0
    clients: dict[str, aioimaplib.IMAP4_SSL] = field(default_factory=dict)
    retries: int = 0  # APPENDs sent again after a failure (a copy may exist twice: same Message-ID)
    failures: list[str] = field(default_factory=list)

    async def _client(self, user: str) -> aioimaplib.IMAP4_SSL:
        client = self.clients.get(user)
        if client is not None:
            return client
        client = aioimaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=self.context, timeout=10)
        await client.wait_hello_from_server()
        response = await client.login(user, self.users[user])
        if response.result != "OK":
            raise RuntimeError(f"login {user}: {response}")
        self.clients[user] = client
        return client

    async def append(self, user: str, raw: bytes) -> None:
        deadline = time.monotonic() + self.give_up_after
        first = True
        while True:
            if not first:
                self.retries += 1
            first = False
            try:
                client = await self._client(user)
                response = await client.append(raw, mailbox="INBOX")
                if response.result == "OK":
                    return
                raise RuntimeError(f"APPEND {user}: {response.result} {response.lines}")
            except Exception as exc:
                self.clients.pop(user, None)
                if time.monotonic() > deadline:
                    self.failures.append(f"{user}: {exc!r}")
                    raise
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        async def logout(client: aioimaplib.IMAP4_SSL) -> None:
            with contextlib.suppress(Exception):  # a session the server already dropped
                await asyncio.wait_for(client.logout(), 2)

        await asyncio.gather(*(logout(c) for c in self.clients.values()))
        self.clients.clear()


async def burst(
    appender: Appender, users: list[str], total: int, rate: float, sent: dict[str, str]
) -> None:
    """``total`` messages at ``rate`` per second, round robin over ``users``; ``sent`` gets
    Message-ID -> username as each APPEND is acknowledged (one task per username)."""
    started = time.monotonic()

    async def one_user(k: int) -> None:
        for n in range(k, total, len(users)):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            message_id, raw = new_message(n, users[k])
            await appender.append(users[k], raw)
            sent[message_id] = users[k]

    await asyncio.gather(*(one_user(k) for k in range(len(users))))


# --- watching inboxd from outside ---------------------------------------------------------------


class EventCounter:
    """MESSAGE_RECEIVED notifications per stored message id, reconnecting across outages."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.received: Counter[str] = Counter()
        self.outages = 0
        self._task: asyncio.Task[None] | None = None

    def _on(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        data = orjson.loads(payload)
        if data.get("k") == "MESSAGE_RECEIVED" and data.get("m"):
            self.received[str(data["m"])] += 1

    async def _run(self) -> None:
        while True:
            try:
                connection = await asyncpg.connect(self.url, timeout=3)
                await connection.add_listener("inboxd_events", self._on)
                closed = asyncio.Event()
                connection.add_termination_listener(lambda _c, closed=closed: closed.set())
                try:
                    await closed.wait()
                finally:
                    await connection.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                pass
            self.outages += 1
            await asyncio.sleep(0.2)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.3)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Sample:
    at: float
    rows: dict[str, tuple[str | None, bool, str]]  # inbox id -> (owner, live, state)


class LeaseSampler:
    """The ``inbox_watch`` table every ``every`` seconds (skipping samples while Postgres is
    away)."""

    def __init__(self, database_url: str, every: float = 0.2) -> None:
        self.url = database_url
        self.every = every
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        connection: asyncpg.Connection | None = None
        while True:
            try:
                if connection is None or connection.is_closed():
                    connection = await asyncpg.connect(self.url, timeout=2)
                rows = await connection.fetch(
                    "SELECT inbox_id, owner, coalesce(expires_at > now(), false) AS live, state "
                    "FROM inbox_watch"
                )
                self.samples.append(
                    Sample(
                        time.monotonic(),
                        {str(r["inbox_id"]): (r["owner"], r["live"], r["state"]) for r in rows},
                    )
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                connection = None
            await asyncio.sleep(self.every)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def all_watched_at(
        self, inbox_ids: list[str], after: float, *, not_pids: tuple[int, ...] = ()
    ) -> float | None:
        """The first sample after ``after`` in which every inbox had a live lease of a process
        not in ``not_pids`` and was IDLE or POLLING; seconds after ``after``."""
        for sample in self.samples:
            if sample.at < after:
                continue
            ok = True
            for inbox_id in inbox_ids:
                owner, live, state = sample.rows.get(inbox_id, (None, False, ""))
                if not owner or not live or state not in WATCHING_STATES:
                    ok = False
                    break
                if any(f":{pid}:" in owner for pid in not_pids):
                    ok = False
                    break
            if ok:
                return sample.at - after
        return None

    def owners_at(self, at: float) -> Counter[str]:
        """Live leases per owner in the last sample before ``at``."""
        before = [s for s in self.samples if s.at <= at] or self.samples[:1]
        if not before:
            return Counter()
        return Counter(o for o, live, _ in before[-1].rows.values() if o and live)

    @staticmethod
    def held(sample: Sample, pids: tuple[int, ...]) -> tuple[int, ...]:
        """Live leases of each process (by pid) in ``sample``."""
        owners = [o for o, live, _ in sample.rows.values() if o and live]
        return tuple(sum(1 for o in owners if f":{pid}:" in o) for pid in pids)

    def split_timeline(
        self, pids: tuple[int, ...], after: float, until: float
    ) -> list[tuple[float, tuple[int, ...]]]:
        """(seconds after ``after``, live leases per process) at every sample in which that
        changed, between ``after`` and ``until``."""
        timeline: list[tuple[float, tuple[int, ...]]] = []
        for sample in self.samples:
            if after <= sample.at <= until:
                split = self.held(sample, pids)
                if not timeline or timeline[-1][1] != split:
                    timeline.append((sample.at - after, split))
        return timeline

    def balanced_at(self, pids: tuple[int, ...], total: int, after: float) -> float | None:
        """Seconds after ``after`` of the first sample in which all ``total`` leases were live
        and shared evenly (each process within one of total / processes)."""
        low = total // len(pids)
        for sample in self.samples:
            if sample.at >= after:
                split = self.held(sample, pids)
                if sum(split) == total and all(low <= n <= low + 1 for n in split):
                    return sample.at - after
        return None

    def owner_changes(self, after: float = 0.0, until: float = float("inf")) -> int:
        """How often an inbox's live owner changed between samples (takeovers, hand-overs),
        in the samples between ``after`` and ``until``."""
        changes = 0
        last: dict[str, str] = {}
        for sample in self.samples:
            if not after <= sample.at <= until:
                continue
            for inbox_id, (owner, live, _) in sample.rows.items():
                if owner and live:
                    if inbox_id in last and last[inbox_id] != owner:
                        changes += 1
                    last[inbox_id] = owner
        return changes


@dataclass
class Observers:
    """What a receiving drill runs beside inboxd: its own LISTEN (``events``), the lease
    ``sampler`` and the ``appender`` that delivers the burst; ``sent`` gets Message-ID ->
    username as each APPEND is acknowledged."""

    events: EventCounter
    sampler: LeaseSampler
    appender: Appender
    sent: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def start(
        cls, drill: Drill, imap_port: int, users: dict[str, str], *, every: float = 0.2
    ) -> Observers:
        """The listener and the sampler (every ``every`` s) running; the appender ready."""
        events = EventCounter(drill.database_url)
        sampler = LeaseSampler(drill.database_url, every=every)
        await events.start()
        await sampler.start()
        context = ssl.create_default_context(cafile=drill.certs.ca_file)
        return cls(events, sampler, Appender(imap_port, users, context))

    def burst(self, total: int, rate: float) -> asyncio.Task[None]:
        """``burst`` of ``total`` messages at ``rate`` per second over every user, running."""
        users = list(self.appender.users)
        return asyncio.create_task(burst(self.appender, users, total, rate, self.sent))

    async def until_sent(self, count: float, sending: asyncio.Task[None]) -> None:
        """Until ``count`` messages are acknowledged, or the burst is over."""
        while len(self.sent) < count and not sending.done():
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await self.sampler.stop()
        await self.events.stop()
        await self.appender.close()


# --- the stack -----------------------------------------------------------------------------------


async def create_inboxes(
    api: Api, users: dict[str, str], smtp_port: int, imap_port: int
) -> dict[str, str]:
    """Create an inbox per username (16 at a time); username -> inbox id."""
    created: dict[str, str] = {}
    queue = list(users.items())

    async def worker() -> None:
        while queue:
            user, password = queue.pop()
            variables = {"input": inbox_input(user, password, smtp_port, imap_port)}
            body = await api.call(CREATE, variables)
            payload = (body.get("data") or {}).get("createEmailInbox") or {}
            if payload.get("__typename") != "CreateEmailInboxSuccess":
                raise RuntimeError(f"create {user}: {body}")
            created[user] = payload["inbox"]["id"]

    await asyncio.gather(*(worker() for _ in range(16)))
    return created


async def wait_watched(sampler_url: str, inbox_ids: list[str], within: float, label: str) -> float:
    """Until every inbox is ACTIVE and watched (IDLE/POLLING under a live lease); seconds."""
    started = time.monotonic()
    connection = await asyncpg.connect(sampler_url, timeout=10)
    try:
        while True:
            rows = await connection.fetch(
                "SELECT i.id, i.status, i.status_reason, w.state, "
                "coalesce(w.expires_at > now(), false) AS live "
                "FROM email_inbox i LEFT JOIN inbox_watch w ON w.inbox_id = i.id "
                "WHERE i.id = ANY($1::uuid[])",
                [uuid.UUID(i) for i in inbox_ids],
            )
            watched = [r for r in rows if r["live"] and r["state"] in WATCHING_STATES]
            if len(watched) == len(inbox_ids):
                return time.monotonic() - started
            failed = [r["status_reason"] for r in rows if r["status"] == "FAILED"]
            if failed:
                raise RuntimeError(f"{label}: {len(failed)} inboxes FAILED, e.g. {failed[0]}")
            if time.monotonic() - started > within:
                states = Counter((r["status"], r["state"]) for r in rows)
                raise RuntimeError(f"{label}: not all watched after {within} s: {dict(states)}")
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def wait_even(database_url: str, pids: list[int], total: int, within: float) -> float | None:
    """Until the ``total`` live leases are shared evenly among the processes ``pids`` (each
    within one of total / processes); seconds, or None after ``within`` s (then it prints how
    the split and the live receiver_member rows moved meanwhile)."""
    started = time.monotonic()
    low = total // len(pids)
    history: list[tuple[float, list[int], list[int]]] = []
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        while time.monotonic() - started < within:
            owners = await connection.fetch(
                "SELECT owner FROM inbox_watch WHERE owner IS NOT NULL AND expires_at > now()"
            )
            members = await connection.fetch(
                "SELECT owner FROM receiver_member WHERE expires_at > now()"
            )
            held = [sum(1 for r in owners if f":{pid}:" in r["owner"]) for pid in pids]
            live = [sum(1 for r in members if f":{pid}:" in r["owner"]) for pid in pids]
            if not history or history[-1][1:] != (held, live):
                history.append((time.monotonic() - started, held, live))
            if sum(held) == total and all(low <= n <= low + 1 for n in held):
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        moves = ", ".join(f"{t:.1f} s: leases {h}, registered {m}" for t, h, m in history)
        log(f"not shared evenly within {within:.0f} s: {moves}")
        return None
    finally:
        await connection.close()


@dataclass
class Stack:
    api_proc: Proc
    api: Api
    workers: list[Proc]
    inbox_ids: dict[str, str]  # username -> inbox id
    even_in: float | None = None  # seconds after every inbox was watched until shared evenly

    def split(self, sampler: LeaseSampler) -> str:
        """Live leases per worker in the sampler's last sample, as ``a/b``."""
        if not sampler.samples:
            return "?"
        held = LeaseSampler.held(sampler.samples[-1], tuple(w.pid for w in self.workers))
        return "/".join(map(str, held))


async def start_stack(
    drill: Drill,
    users: dict[str, str],
    smtp_port: int,
    imap_port: int,
    *,
    workers: int = 2,
    workers_after_active: bool = False,
    **extra: str,
) -> Stack:
    """An ``inboxd serve`` that verifies (receiving off) and ``workers`` receiving workers;
    every inbox created, ACTIVE and watched. With ``workers_after_active`` the workers start
    (back to back) only once every inbox is ACTIVE, so they race for all of them at once."""
    api_proc = drill.start("serve", "api", INBOXD_RECEIVING_ENABLED="false", **extra)
    procs: list[Proc] = []

    def start_workers() -> None:
        for n in range(workers):
            procs.append(drill.start("worker", f"worker{n + 1}", **{**RECEIVING_ENV, **extra}))

    if not workers_after_active:
        start_workers()
    api = Api(api_proc.base_url, await drill.tenant_key())
    inbox_ids = await create_inboxes(api, users, smtp_port, imap_port)
    log(f"created {len(inbox_ids)} inboxes")
    if workers_after_active:
        await wait_active(drill.database_url, list(inbox_ids.values()), 120)
        start_workers()
    took = await wait_watched(drill.database_url, list(inbox_ids.values()), 120, drill.name)
    log(f"every inbox watched ({took:.1f} s after the creates)")
    stack = Stack(api_proc, api, procs, inbox_ids)
    if workers > 1:  # the burst starts from the steady state: the inboxes shared out evenly
        pids = [w.pid for w in procs]
        stack.even_in = await wait_even(drill.database_url, pids, len(inbox_ids), EVEN_WITHIN)
        even = "never" if stack.even_in is None else f"{stack.even_in:.1f} s later"
        log(f"inboxes shared evenly among the {workers} workers: {even}")
        if stack.even_in is not None:
            await wait_watched(drill.database_url, list(inbox_ids.values()), 120, drill.name)
    return stack


async def wait_active(database_url: str, inbox_ids: list[str], within: float) -> None:
    started = time.monotonic()
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        while time.monotonic() - started < within:
            active = await connection.fetchval(
                "SELECT count(*) FROM email_inbox WHERE status = 'ACTIVE' AND id = ANY($1::uuid[])",
                [uuid.UUID(i) for i in inbox_ids],
            )
            if active == len(inbox_ids):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"inboxes not ACTIVE after {within} s")
    finally:
        await connection.close()


# --- the outcome ---------------------------------------------------------------------------------


async def read_messages(database_url: str) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT m.id, i.imap_username AS user, m.folder, m.uidvalidity, m.uid, m.message_id "
            "FROM message m JOIN email_inbox i ON i.id = m.inbox_id"
        )
        return [dict(r) for r in rows]
    finally:
        await connection.close()


async def wait_stored(database_url: str, expected: int, within: float) -> tuple[int, float]:
    """Until ``expected`` message rows exist (or ``within`` passes): rows, seconds waited."""
    started = time.monotonic()
    count = 0
    while time.monotonic() - started < within:
        try:
            connection = await asyncpg.connect(database_url, timeout=3)
            try:
                count = await connection.fetchval("SELECT count(*) FROM message")
            finally:
                await connection.close()
        except (OSError, asyncpg.PostgresError, TimeoutError):
            pass
        if count >= expected:
            break
        await asyncio.sleep(0.2)
    return count, time.monotonic() - started


@dataclass
class Settled:
    rows: list[dict[str, Any]]
    waited: float  # seconds from the call until every message was stored (or gave up)
    all_stored_at: float  # monotonic time of that moment
    complete: bool


async def settle(
    drill: Drill,
    sent: dict[str, str],
    within: float,
    problems: list[str],
    late: float = 330.0,
    logs: Sequence[Path] = (),
) -> Settled:
    """Wait until every sent message is stored (``within`` s); if some are not, say where their
    inboxes stand, keep the logs (the processes' and ``logs``) and wait up to ``late`` s more,
    to tell late mail (a watcher in a long backoff: a problem too) from lost mail. Then 2 s
    more, for any duplicate to show."""
    count, waited = await wait_stored(drill.database_url, len(sent), within)
    all_stored_at = time.monotonic()
    complete = count >= len(sent)
    if not complete:
        log(f"only {count} of {len(sent)} stored after {within:.0f} s; where they stand:")
        await diagnose(drill.database_url, sent, await read_messages(drill.database_url))
        save_logs(drill, *logs)
        later, extra = await wait_stored(drill.database_url, len(sent), late)
        problems.append(
            f"{len(sent) - count} messages not stored within {within:.0f} s of the last APPEND; "
            f"{later - count} of them were stored {extra:.0f} s later"
        )
        log(f"{later} of {len(sent)} stored {extra:.0f} s later")
    await asyncio.sleep(2)  # anything stored twice would show up meanwhile
    rows = await read_messages(drill.database_url)
    return Settled(rows, waited, all_stored_at, complete)


def bare(message_id: str | None) -> str:
    return (message_id or "").strip().strip("<>")


@dataclass
class Tally:
    sent: int = 0
    rows: int = 0
    stored_once: int = 0
    duplicates: int = 0
    missing: int = 0
    strangers: int = 0
    notified_twice: int = 0
    not_notified: int = 0

    def line(self) -> str:
        return (
            f"sent {self.sent}, stored rows {self.rows}, stored exactly once {self.stored_once}, "
            f"duplicates {self.duplicates}, missing {self.missing}, unexpected {self.strangers}, "
            f"notified twice {self.notified_twice}, not notified {self.not_notified}"
        )


def check_exactly_once(
    sent: dict[str, str],
    rows: list[dict[str, Any]],
    events: EventCounter,
    problems: list[str],
    *,
    notifications_may_be_missed: bool = False,
) -> Tally:
    """Every sent Message-ID stored exactly once, in its user's inbox; no (folder, UIDVALIDITY,
    UID) twice; every stored message notified once (at most once when the listener itself
    lost its connection, as it does while Postgres is down)."""
    tally = Tally(sent=len(sent), rows=len(rows))
    by_message_id: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_message_id.setdefault(bare(row["message_id"]), []).append(row)
    by_uid = Counter((r["user"], r["folder"], r["uidvalidity"], r["uid"]) for r in rows)
    for key, count in by_uid.items():
        if count > 1:
            tally.duplicates += count - 1
            problems.append(f"(user, folder, UIDVALIDITY, UID) {key} stored {count} times")
    for message_id, user in sent.items():
        found = by_message_id.get(bare(message_id), [])
        if not found:
            tally.missing += 1
            problems.append(f"{message_id} (to {user}) was never stored")
            continue
        if len(found) > 1:
            tally.duplicates += len(found) - 1
            problems.append(f"{message_id} stored {len(found)} times")
        else:
            tally.stored_once += 1
        if any(r["user"] != user for r in found):
            problems.append(f"{message_id} stored for {[r['user'] for r in found]}, sent to {user}")
    wanted = {bare(m) for m in sent}
    for message_id in by_message_id:
        if message_id not in wanted:
            tally.strangers += 1
            problems.append(f"a message that was never sent was stored: {message_id!r}")
    for row in rows:
        count = events.received.get(str(row["id"]), 0)
        if count > 1:
            tally.notified_twice += 1
            problems.append(f"message {row['id']} notified {count} times")
        elif count == 0:
            tally.not_notified += 1
    if tally.not_notified and not notifications_may_be_missed:
        problems.append(f"{tally.not_notified} stored messages were never notified")
    return tally


async def diagnose(database_url: str, sent: dict[str, str], rows: list[dict[str, Any]]) -> None:
    """For each username with a missing message: its watch, its folder's progress, and how
    many of its messages are stored, so a loss can be told from a watcher that stopped."""
    stored = {bare(r["message_id"]) for r in rows}
    missing = Counter(user for m, user in sent.items() if bare(m) not in stored)
    if not missing:
        return
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        for user, count in sorted(missing.items()):
            r = await connection.fetchrow(
                "SELECT w.owner, w.expires_at > now() AS live, w.state, w.last_error_code, "
                "w.auth_failures, f.uidvalidity, f.last_uid, i.status, i.last_check_at, "
                "(SELECT count(*) FROM message m WHERE m.inbox_id = i.id) AS stored, "
                "(SELECT array_agg(DISTINCT m.uidvalidity) FROM message m "
                " WHERE m.inbox_id = i.id) AS stored_uidvalidities, "
                "(SELECT max(m.uid) FROM message m WHERE m.inbox_id = i.id) AS max_stored_uid "
                "FROM email_inbox i LEFT JOIN inbox_watch w ON w.inbox_id = i.id "
                "LEFT JOIN folder_sync f ON f.inbox_id = i.id AND f.folder = 'INBOX' "
                "WHERE i.imap_username = $1",
                user,
            )
            print(f"  missing {count} of {user}: {dict(r) if r else None}", flush=True)
    finally:
        await connection.close()


def save_logs(drill: Drill, *extra: Path) -> Path:
    """Copy the processes' logs out of the temp dir (removed at the end) for a failed run."""
    keep = Path(tempfile.mkdtemp(prefix=f"{drill.name}-logs-"))
    for path in (*drill.tmp.rglob("*.log"), *extra):
        if path.exists():
            shutil.copy(path, keep / path.name)
    print(f"  logs kept in {keep}", flush=True)
    return keep


def worker_problems(stack: Stack, problems: list[str], *, dead: tuple[Proc, ...] = ()) -> None:
    if len(stack.workers) > 1 and stack.even_in is None:
        problems.append(f"the inboxes were not shared evenly within {EVEN_WITHIN:.0f} s")
    for proc in (stack.api_proc, *stack.workers):
        if proc in dead:
            continue
        if not proc.alive():
            problems.append(f"{proc.log_path.name} exited ({proc.proc.poll()}): {proc.log_tail()}")
