"""Drill: Postgres stopped and started again in the middle of a burst of 500 arrivals.

Starts (all on loopback, in a temp dir): an EmbeddedPostgres, an ``inboxd serve`` that verifies
(receiving off), two receiving ``inboxd worker`` processes (lease 3 s), a pymap IMAP server
(TLS) and a counting SMTP server for the verifications. Creates ``INBOXES`` inboxes, waits
until every one is watched, then APPENDs ``MESSAGES`` messages (unique Message-IDs) at
``RATE`` per second. A ``STOP_AT`` fraction into the burst the drill's Postgres is stopped
(``pg_ctl -m fast``, or ``--mode immediate``: a crash) for ``DOWN`` seconds and started again;
the burst goes on meanwhile (the mail server does not need Postgres).

Fails (exit 1) unless every sent Message-ID is stored exactly once in its user's inbox, no
(folder, UIDVALIDITY, UID) is stored twice, no message was notified twice (a notification
committed while the drill's own listener was reconnecting is missed by the listener, so
missed ones are counted, not failed), both workers survive and every inbox is watched again.

    .venv/bin/python bench/drills/receiving_postgres_restart.py [--mode immediate]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from _common import CountingSmtp, Drill, log, mail_users, report
from _receiving import (
    Observers,
    WatchImap,
    check_exactly_once,
    read_messages,
    save_logs,
    settle,
    start_stack,
    worker_problems,
)

INBOXES = 20
MESSAGES = 500
RATE = 50.0  # messages per second: the burst lasts 10 s
STOP_AT = 0.3
DOWN = 5.0
STORE_WITHIN = 90.0


async def main(mode: str, messages: int, inboxes: int) -> int:
    drill = await asyncio.to_thread(Drill, "receiving_postgres_restart")
    problems: list[str] = []
    try:
        users = mail_users(inboxes, "p")
        with (
            CountingSmtp(users, drill.certs) as smtp,
            WatchImap(users, drill.certs) as imap,
        ):
            stack = await start_stack(drill, users, smtp.port, imap.port)
            run = await Observers.start(drill, imap.port, users)
            sampler, sent = run.sampler, run.sent
            started = time.monotonic()
            sending = run.burst(messages, RATE)

            await run.until_sent(messages * STOP_AT, sending)
            before = await read_messages(drill.database_url)
            sent_before = len(sent)
            stopping = time.monotonic()
            await asyncio.to_thread(drill.postgres.stop, mode)
            stopped_at = time.monotonic()
            log(
                f"Postgres stopped ({mode}, {stopped_at - stopping:.1f} s) after {len(sent)} "
                f"sent, {len(before)} stored"
            )
            await asyncio.sleep(DOWN)
            sent_while_down = len(sent)
            await asyncio.to_thread(drill.postgres.start)
            back_at = time.monotonic()
            log(f"Postgres back after {back_at - stopped_at:.1f} s; {len(sent)} sent by then")

            await sending
            log(f"burst done: {len(sent)} sent in {time.monotonic() - started:.1f} s")
            settled = await settle(drill, sent, STORE_WITHIN, problems)
            rows, waited, all_stored_at = settled.rows, settled.waited, settled.all_stored_at
            await run.stop()
            await stack.api.aclose()
            ids = list(stack.inbox_ids.values())
            rewatched = sampler.all_watched_at(ids, back_at)
            worker_problems(stack, problems)
            tally = check_exactly_once(
                sent, rows, run.events, problems, notifications_may_be_missed=True
            )
            doubled = imap.doubled()

        if rewatched is None:
            problems.append("not every inbox was watched again after Postgres came back")
        print(flush=True)
        log(f"receiving_postgres_restart results (mode {mode})")
        print(f"  {tally.line()}", flush=True)
        print(
            f"  Postgres down {back_at - stopping:.1f} s; at the stop {sent_before} sent, "
            f"{len(before)} stored; {sent_while_down - sent_before} sent while it was down",
            flush=True,
        )
        print(
            f"  after Postgres was back: every inbox watched again (IDLE under a live lease) in "
            f"{rewatched if rewatched is None else round(rewatched, 1)} s, all stored in "
            f"{all_stored_at - back_at:.1f} s ({waited:.1f} s after the last APPEND); lease owner "
            f"changes {sampler.owner_changes()}; max watching sessions per username at once "
            f"{max(doubled.values(), default=1)}; event listener reconnects {run.events.outages}; "
            f"leases per worker at the end {stack.split(sampler)}",
            flush=True,
        )
    finally:
        if problems:
            save_logs(drill)
        drill.close()
    return report("receiving_postgres_restart", problems)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("fast", "immediate"), default="fast")
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--inboxes", type=int, default=INBOXES)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.mode, args.messages, args.inboxes)))
