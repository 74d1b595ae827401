"""Drill: stop and start Postgres under a load of creates and reads.

Starts (all on loopback, in a temp dir): an EmbeddedPostgres, one ``inboxd serve`` (API and
worker), and counting SMTP (STARTTLS) and IMAP (TLS) servers. ``CLIENTS`` clients loop: create
an inbox, read it back, list. After ``LOAD_BEFORE`` s Postgres is stopped (``pg_ctl stop -m
fast``), kept down ``DOWN_FOR`` s and started again; the load continues ``LOAD_AFTER`` s, then
the drill waits for every verification to finish.

Measures how long after Postgres is back /readyz answers 200 and the first create succeeds.
Fails (exit 1) if: an acknowledged create is missing afterwards, or a read of an acknowledged
inbox came back empty once the database was up; any inbox (acknowledged or not) does not have
exactly one connection test, PASSED, and ACTIVE status; or the service was not back within
``BACK_WITHIN`` s of the database.

    .venv/bin/python bench/drills/postgres_restart.py [--mode fast|immediate] [--down SECONDS]

``--mode immediate`` stops Postgres the way a crash does (no checkpoint, clients cut at once).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter

from _common import (
    CREATE,
    GET,
    LIST,
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
    report,
    wait_all_final,
)

CLIENTS = 6
MAX_CREATES = 600
LOAD_BEFORE = 8.0
DOWN_FOR = 5.0
LOAD_AFTER = 10.0
BACK_WITHIN = 30.0
# Creates are held back so some are left for each phase however fast the machine: until
# Postgres stops, the pool may shrink to two thirds; while it is down, to one third.
BEFORE_STOP_KEEP = MAX_CREATES * 2 // 3
WHILE_DOWN_KEEP = MAX_CREATES // 3
FINISH_WITHIN = 90.0
LOGIN_DELAY = 0.2  # keeps verifications in flight when the database goes away


def fmt(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f}"


class Load:
    def __init__(self, api: Api, users: dict[str, str], smtp_port: int, imap_port: int) -> None:
        self.api = api
        self.pool = list(users.items())[:MAX_CREATES]
        self.smtp_port = smtp_port
        self.imap_port = imap_port
        self.acked: dict[str, str] = {}  # email -> id
        self.outcomes: Counter[str] = Counter()
        self.lost_reads: list[str] = []
        self.stop = asyncio.Event()
        self.db_up = True
        self.first_create_after_start: float | None = None
        self.db_started_at: float | None = None
        self.keep = BEFORE_STOP_KEEP  # creates left untouched until the next phase

    def _classify(self, body: dict | None, exc: Exception | None) -> str:
        if exc is not None:
            return f"exception {type(exc).__name__}: {str(exc)[:80]}"
        errors = (body or {}).get("errors") or []
        if errors:
            codes = sorted({str((e.get("extensions") or {}).get("code")) for e in errors})
            return f"graphql error {','.join(codes)}: {errors[0].get('message', '')[:80]}"
        return "ok"

    async def client(self) -> None:
        while not self.stop.is_set():
            created_id = None
            if len(self.pool) > self.keep:
                user, password = self.pool.pop()
                body, exc = None, None
                try:
                    body = await self.api.call(
                        CREATE,
                        {"input": inbox_input(user, password, self.smtp_port, self.imap_port)},
                    )
                except Exception as e:
                    exc = e
                kind = self._classify(body, exc)
                payload = ((body or {}).get("data") or {}).get("createEmailInbox") or {}
                if payload.get("__typename") == "CreateEmailInboxSuccess":
                    created_id = payload["inbox"]["id"]
                    self.acked[user] = created_id
                    if self.db_started_at is not None and self.first_create_after_start is None:
                        self.first_create_after_start = time.monotonic()
                    kind = "create ok"
                elif kind == "ok":
                    kind = f"create {payload.get('__typename')}: {payload.get('message')}"
                self.outcomes[("" if kind.startswith("create") else "create ") + kind] += 1
                if exc is not None or (body or {}).get("errors"):
                    await asyncio.sleep(0.2)
            # Read back one acknowledged inbox (the new one, or any).
            target = created_id or (next(iter(self.acked.values()), None) if self.acked else None)
            if target is not None:
                body, exc = None, None
                was_up = self.db_up
                try:
                    body = await self.api.call(GET, {"id": target})
                except Exception as e:
                    exc = e
                kind = self._classify(body, exc)
                if kind == "ok":
                    if body["data"]["emailInbox"] is None:
                        if was_up and self.db_up:
                            self.lost_reads.append(target)
                        kind = "read null"
                    else:
                        kind = "read ok"
                else:
                    kind = "read " + kind
                self.outcomes[kind] += 1
            body, exc = None, None
            try:
                body = await self.api.call(LIST)
            except Exception as e:
                exc = e
            self.outcomes["list " + self._classify(body, exc)] += 1
            if exc is not None or (body or {}).get("errors"):
                await asyncio.sleep(0.2)
            if len(self.pool) <= self.keep:
                await asyncio.sleep(0.05)


async def main(mode: str, down_for: float) -> int:
    drill = await asyncio.to_thread(Drill, "postgres_restart")
    problems: list[str] = []
    try:
        users = mail_users(MAX_CREATES, "r")
        with (
            CountingSmtp(users, drill.certs) as smtp,
            CountingImap(users, drill.certs, login_delay=LOGIN_DELAY) as imap,
        ):
            # A short connect timeout, so requests during the outage fail fast instead of piling up.
            serve = drill.start("serve", "serve", INBOXD_DB_CONNECT_TIMEOUT="3")
            key = await drill.tenant_key()
            api = Api(serve.base_url, key)
            load = Load(api, users, smtp.port, imap.port)
            clients = [asyncio.create_task(load.client()) for _ in range(CLIENTS)]

            await asyncio.sleep(LOAD_BEFORE)
            before = len(load.acked)
            log(f"{before} creates acknowledged; stopping Postgres")
            load.db_up = False
            load.keep = WHILE_DOWN_KEEP
            stop_started = time.monotonic()
            await asyncio.to_thread(drill.postgres.stop, mode)
            took = time.monotonic() - stop_started
            log(f"Postgres stopped (-m {mode}, {took:.1f} s); down {down_for} s")
            await asyncio.sleep(down_for)
            during = dict(load.outcomes)
            await asyncio.to_thread(drill.postgres.start)
            started_at = time.monotonic()
            load.db_started_at = started_at
            load.keep = 0
            load.db_up = True
            log("Postgres started")

            ready_after = None
            while time.monotonic() - started_at < BACK_WITHIN + 30:
                if await api.ready():
                    ready_after = time.monotonic() - started_at
                    break
                await asyncio.sleep(0.2)
            log(f"/readyz 200 after {fmt(ready_after)} s")
            while load.first_create_after_start is None:
                if time.monotonic() - started_at > BACK_WITHIN + 30 or not load.pool:
                    break
                await asyncio.sleep(0.1)
            create_after = (
                None
                if load.first_create_after_start is None
                else load.first_create_after_start - started_at
            )
            log(f"first create acknowledged {fmt(create_after)} s after Postgres started")
            await asyncio.sleep(LOAD_AFTER)
            load.stop.set()
            await asyncio.gather(*clients)
            log(f"load stopped: {len(load.acked)} creates acknowledged")

            outcome, waited = await wait_all_final(
                drill.database_url, len(load.acked), FINISH_WITHIN, label="postgres_restart"
            )
            ready_at_end = await api.ready()
            await api.aclose()
            serve_alive = serve.alive()

        # --- the checks ---
        check_acknowledged(outcome, load.acked, problems)
        for target in load.lost_reads:
            problems.append(f"a read of acknowledged inbox {target} came back null")
        summary = check_one_final_verification(outcome, problems)
        unacked = len(outcome.inboxes) - len(set(load.acked.values()) & set(outcome.inboxes))
        if ready_after is None or ready_after > BACK_WITHIN:
            problems.append(
                f"/readyz not 200 within {BACK_WITHIN} s of Postgres (got {ready_after})"
            )
        if create_after is None or create_after > BACK_WITHIN:
            problems.append(
                f"no create succeeded within {BACK_WITHIN} s of Postgres ({create_after})"
            )
        if not serve_alive:
            problems.append(f"inboxd serve exited: {serve.log_tail()}")
        if not ready_at_end:
            problems.append("inboxd serve not ready at the end")
        check_one_session_each(smtp, imap, problems)

        print(flush=True)
        log("postgres_restart results")
        print(f"  creates acknowledged: {len(load.acked)} ({before} before the stop)", flush=True)
        print(
            f"  inboxes in the database: {len(outcome.inboxes)} "
            f"(of which created but not acknowledged: {unacked})",
            flush=True,
        )
        print(f"  outcome: {dict(sorted(summary.items()))}", flush=True)
        print(f"  requests up to the restart: {during}", flush=True)
        print(f"  requests in all: {dict(load.outcomes.most_common())}", flush=True)
        print(
            f"  Postgres stopped -m {mode}, down {down_for} s; /readyz 200 {fmt(ready_after)} s "
            f"and first create {fmt(create_after)} s after it started (limit {BACK_WITHIN} s)",
            flush=True,
        )
        print(
            f"  {login_totals(smtp, imap)}; "
            f"all verifications final {waited:.1f} s after the load stopped",
            flush=True,
        )
        if outcome.open_tests():
            problems.append(f"{outcome.open_tests()} tests still open after {FINISH_WITHIN} s")
        if problems:
            print(f"--- serve log tail\n{serve.log_tail(30)}", flush=True)
    finally:
        drill.close()
    return report("postgres_restart", problems)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["fast", "immediate"], default="fast")
    parser.add_argument("--down", type=float, default=DOWN_FOR, help="seconds Postgres stays down")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.mode, args.down)))
