"""Drill: SIGTERM a serving process (API and worker) under load, then start a replacement.

Starts (all on loopback, in a temp dir): an EmbeddedPostgres, ``inboxd serve`` #1 (API and
worker), and counting SMTP (STARTTLS) and IMAP (TLS) servers whose IMAP logins take
``LOGIN_DELAY`` s, so verifications are in flight at the signal. ``SUBSCRIBERS`` websocket
clients subscribe on #1 (``emailInboxEvents`` and ``emailInboxStatus``), ``CLIENTS`` clients
create and read inboxes on #1; after ``LOAD_BEFORE`` s #1 gets SIGTERM. The drill records how
each subscription ended (close code), how long #1 took to exit and with what status, then starts
``inboxd serve`` #2 and waits for every verification to finish.

Fails (exit 1) if: #1 does not exit within ``EXIT_WITHIN`` s, or exits other than 0 or 143
(SIGTERM, cleanly); a subscription ends without a close frame (1006) or with a code other than
1000/1001/1012; an acknowledged create is missing; any inbox does not end with exactly one
connection test, PASSED, and ACTIVE; or a username had two SMTP or IMAP sessions open at once
(a job run twice concurrently).

    .venv/bin/python bench/drills/sigterm_under_load.py
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from typing import Any

from _common import (
    CREATE,
    GET,
    Api,
    CountingImap,
    CountingSmtp,
    Drill,
    check_acknowledged,
    check_one_final_verification,
    check_one_session_each,
    inbox_input,
    log,
    login_totals,
    mail_users,
    read_outcome,
    report,
    wait_all_final,
)
from websockets.exceptions import ConnectionClosed

from tests.support.ws import WSClient

CLIENTS = 6
SUBSCRIBERS = 6
MAX_CREATES = 400
LOAD_BEFORE = 6.0
LOGIN_DELAY = 0.5
# A few inboxes whose IMAP login outlasts the shutdown grace (INBOXD_SHUTDOWN_GRACE_SECONDS,
# 10 s by default): serve #1 must cancel and release them, serve #2 must finish them.
SLOW_INBOXES = 4
SLOW_LOGIN = 25.0
# ... which needs per-step (connect) and overall IMAP timeouts above it.
SLOW_ENV = {"INBOXD_IMAP_CONNECT_TIMEOUT": "40", "INBOXD_IMAP_TIMEOUT": "60"}
EXIT_WITHIN = 40.0
FINISH_WITHIN = 90.0
PROPER_CLOSE_CODES = {1000, 1001, 1012}

EVENTS = "subscription { emailInboxEvents { kind inboxId version } }"
STATUS = "subscription($id: ID!) { emailInboxStatus(id: $id) { id status version } }"


class Subscriber:
    def __init__(self, base_url: str, key: str, query: str, variables: dict[str, Any]) -> None:
        self.base_url = base_url
        self.key = key
        self.query = query
        self.variables = variables
        self.messages = 0
        self.ended: str = "still open"
        self.close_code: int | None = None
        self.ready = asyncio.Event()

    async def run(self, within: float) -> None:
        ws = await WSClient.connect(self.base_url, self.key)
        try:
            sub = await ws.subscribe(self.query, self.variables)
            self.ready.set()
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                try:
                    message = await ws.next_payload(sub, timeout=deadline - time.monotonic())
                except TimeoutError:
                    self.ended = "still open at the end"
                    return
                if message["type"] == "next":
                    self.messages += 1
                    continue
                self.ended = f"subscription message {message['type']}: {message}"[:200]
                # The server ended the operation; keep reading to see how the socket closes.
                await ws.receive(timeout=deadline - time.monotonic())
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                self.ended = "closed without a close frame (1006)"
                self.close_code = 1006
            else:
                self.close_code = exc.rcvd.code
                self.ended = f"closed {exc.rcvd.code} {exc.rcvd.reason!r}"
        except TimeoutError:
            self.ended = "still open at the end"
        finally:
            self.ready.set()
            await ws.close()


class Load:
    def __init__(self, api: Api, users: dict[str, str], smtp_port: int, imap_port: int) -> None:
        self.api = api
        self.pool = list(users.items())[:MAX_CREATES]
        self.smtp_port = smtp_port
        self.imap_port = imap_port
        self.acked: dict[str, str] = {}
        self.outcomes: Counter[str] = Counter()
        self.stop = asyncio.Event()

    async def client(self) -> None:
        while not self.stop.is_set() and self.pool:
            user, password = self.pool.pop()
            try:
                body = await self.api.call(
                    CREATE,
                    {"input": inbox_input(user, password, self.smtp_port, self.imap_port)},
                )
            except Exception as exc:
                self.outcomes[f"create {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)
                continue
            payload = (body.get("data") or {}).get("createEmailInbox") or {}
            if payload.get("__typename") == "CreateEmailInboxSuccess":
                self.acked[user] = payload["inbox"]["id"]
                self.outcomes["create ok"] += 1
                try:
                    read = await self.api.call(GET, {"id": payload["inbox"]["id"]})
                    ok = (read.get("data") or {}).get("emailInbox") is not None
                    self.outcomes["read ok" if ok else f"read {read}"[:120]] += 1
                except Exception as exc:
                    self.outcomes[f"read {type(exc).__name__}"] += 1
            else:
                errors = body.get("errors") or [{}]
                self.outcomes[f"create error {errors[0].get('message', '')[:80]}"] += 1
                await asyncio.sleep(0.2)


async def main() -> int:
    drill = await asyncio.to_thread(Drill, "sigterm_under_load")
    problems: list[str] = []
    try:
        users = mail_users(MAX_CREATES, "t")
        slow_users = dict(list(users.items())[:SLOW_INBOXES])
        with (
            CountingSmtp(users, drill.certs) as smtp,
            CountingImap(
                users,
                drill.certs,
                login_delay=LOGIN_DELAY,
                slow={u: SLOW_LOGIN for u in slow_users},
            ) as imap,
        ):
            first = drill.start("serve", "serve1", **SLOW_ENV)
            key = await drill.tenant_key()
            api = Api(first.base_url, key)

            # One inbox up front, for the emailInboxStatus subscribers to watch.
            user, password = users.popitem()
            body = await api.call(
                CREATE, {"input": inbox_input(user, password, smtp.port, imap.port)}
            )
            watched = body["data"]["createEmailInbox"]["inbox"]["id"]
            subscribers = [
                Subscriber(
                    first.base_url,
                    key,
                    *((EVENTS, {}) if i % 2 == 0 else (STATUS, {"id": watched})),
                )
                for i in range(SUBSCRIBERS)
            ]
            sub_tasks = [
                asyncio.create_task(s.run(LOAD_BEFORE + EXIT_WITHIN + 10)) for s in subscribers
            ]
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subscribers)), 20)

            load = Load(api, users, smtp.port, imap.port)
            load.acked[user] = watched
            for slow_user in slow_users:  # first, so they are in flight at the signal
                load.pool.remove((slow_user, users[slow_user]))
                body = await api.call(
                    CREATE,
                    {"input": inbox_input(slow_user, users[slow_user], smtp.port, imap.port)},
                )
                load.acked[slow_user] = body["data"]["createEmailInbox"]["inbox"]["id"]
            clients = [asyncio.create_task(load.client()) for _ in range(CLIENTS)]
            await asyncio.sleep(LOAD_BEFORE)

            outcome_before = await read_outcome(drill.database_url)
            running = sum(
                1 for ts in outcome_before.tests.values() for t in ts if t["state"] == "RUNNING"
            )
            acked_before = len(load.acked)
            log(f"{acked_before} creates acknowledged, {running} verifications running: SIGTERM")
            signalled = time.monotonic()
            first.signal(signal.SIGTERM)
            code = await asyncio.to_thread(first.wait, EXIT_WITHIN)
            exit_after = time.monotonic() - signalled
            if code is None:
                problems.append(f"inboxd serve #1 still running {EXIT_WITHIN} s after SIGTERM")
                log("serve #1 hangs; SIGKILL")
                first.signal(signal.SIGKILL)
                await asyncio.to_thread(first.wait, 10)
            else:
                # uvicorn re-raises the signal after its graceful shutdown, and inboxd turns
                # it into SystemExit(128 + 15) (inboxd.runtime.exit_on_sigterm): 143 is a
                # clean exit (-15 was, before that).
                log(f"serve #1 exited with {code} after {exit_after:.1f} s")
                if code not in (0, 128 + signal.SIGTERM, -signal.SIGTERM):
                    problems.append(f"inboxd serve #1 exited with status {code}")
            after_exit = await read_outcome(drill.database_url)
            held_by_first = [
                t
                for ts in after_exit.tests.values()
                for t in ts
                if t["state"] == "RUNNING" and f":{first.pid}:" in (t["worker_id"] or "")
            ]
            load.stop.set()
            await asyncio.gather(*clients)
            await asyncio.wait_for(asyncio.gather(*sub_tasks, return_exceptions=True), 30)
            await api.aclose()

            second = drill.start("serve", "serve2", **SLOW_ENV)
            outcome, waited = await wait_all_final(
                drill.database_url, len(load.acked), FINISH_WITHIN, label="sigterm_under_load"
            )
            second_alive = second.alive()

        # --- the checks ---
        for s in subscribers:
            if s.close_code not in PROPER_CLOSE_CODES:
                problems.append(f"subscription {s.query[:40]!r} ended: {s.ended}")
        check_acknowledged(outcome, load.acked, problems)
        summary = check_one_final_verification(outcome, problems)
        check_one_session_each(smtp, imap, problems)
        if not second_alive:
            problems.append(f"inboxd serve #2 exited: {second.log_tail()}")
        unacked = len(outcome.inboxes) - len(set(load.acked.values()) & set(outcome.inboxes))

        print(flush=True)
        log("sigterm_under_load results")
        print(f"  creates acknowledged: {len(load.acked)} ({acked_before} before SIGTERM)")
        print(
            f"  inboxes in the database: {len(outcome.inboxes)} "
            f"(created but not acknowledged: {unacked})"
        )
        print(f"  verifications running at SIGTERM: {running}")
        print(f"  serve #1: exit status {code}, {exit_after:.1f} s after SIGTERM")
        print(
            f"  tests still RUNNING under serve #1 after it exited (left to lease expiry, "
            f"not released): {len(held_by_first)}"
        )
        slow_tests = [
            (t["state"], t["attempts"])
            for u in slow_users
            for t in outcome.tests.get(load.acked[u], [])
        ]
        print(f"  slow inboxes (login {SLOW_LOGIN} s > grace): (state, attempts) {slow_tests}")
        print(f"  requests: {dict(load.outcomes.most_common())}")
        print(
            f"  subscriptions: {dict(Counter(s.ended for s in subscribers))}, "
            f"messages received {sum(s.messages for s in subscribers)}"
        )
        print(f"  outcome: {dict(sorted(summary.items()))}")
        print(
            f"  {login_totals(smtp, imap)}; all final {waited:.1f} s after serve #2 started",
            flush=True,
        )
        if outcome.open_tests():
            problems.append(f"{outcome.open_tests()} tests still open after {FINISH_WITHIN} s")
        if problems:
            print(f"--- serve1 log tail\n{first.log_tail(30)}", flush=True)
            print(f"--- serve2 log tail\n{second.log_tail(30)}", flush=True)
    finally:
        drill.close()
    return report("sigterm_under_load", problems)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
