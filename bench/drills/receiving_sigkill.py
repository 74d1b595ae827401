"""Drill: SIGKILL the process watching most inboxes in the middle of a burst of 500 arrivals.

Starts (all on loopback, in a temp dir): an EmbeddedPostgres, an ``inboxd serve`` that verifies
(receiving off), two receiving ``inboxd worker`` processes (lease 3 s), a pymap IMAP server
(TLS) counting watching sessions, and a counting SMTP server for the verifications. Creates
``INBOXES`` inboxes (distinct users), waits until every one is watched, then APPENDs
``MESSAGES`` messages (unique Message-IDs) from sessions of its own at ``RATE`` per second,
round robin. A ``KILL_AT`` fraction into the burst, the worker holding the most leases gets
SIGKILL; the other must take its inboxes over once their leases lapse.

Fails (exit 1) unless every sent Message-ID is stored exactly once in its user's inbox, no
(folder, UIDVALIDITY, UID) is stored twice, every stored message was notified exactly once,
the survivor watches every inbox again, and no username was watched by two sessions at once.

    .venv/bin/python bench/drills/receiving_sigkill.py
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
import time

from _common import CountingSmtp, Drill, log, mail_users, report
from _receiving import (
    Appender,
    EventCounter,
    LeaseSampler,
    WatchImap,
    burst,
    check_exactly_once,
    save_logs,
    settle,
    start_stack,
    worker_problems,
)

INBOXES = 20
MESSAGES = 500
RATE = 50.0  # messages per second: the burst lasts 10 s
KILL_AT = 0.4
STORE_WITHIN = 90.0


async def main(messages: int, inboxes: int) -> int:
    drill = await asyncio.to_thread(Drill, "receiving_sigkill")
    problems: list[str] = []
    try:
        users = mail_users(inboxes, "r")
        with (
            CountingSmtp(users, drill.certs) as smtp,
            WatchImap(users, drill.certs) as imap,
        ):
            stack = await start_stack(drill, users, smtp.port, imap.port)
            events = EventCounter(drill.database_url)
            sampler = LeaseSampler(drill.database_url)
            await events.start()
            await sampler.start()
            await asyncio.sleep(0.5)
            context = ssl.create_default_context(cafile=drill.certs.ca_file)
            appender = Appender(imap.port, users, context)
            sent: dict[str, str] = {}
            started = time.monotonic()
            sending = asyncio.create_task(burst(appender, list(users), messages, RATE, sent))

            while len(sent) < messages * KILL_AT and not sending.done():
                await asyncio.sleep(0.02)
            held = sampler.owners_at(time.monotonic())
            victim = max(
                stack.workers, key=lambda w: sum(n for o, n in held.items() if f":{w.pid}:" in o)
            )
            victim_leases = sum(n for o, n in held.items() if f":{victim.pid}:" in o)
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            killed_at = time.monotonic()
            log(
                f"SIGKILLed {victim.log_path.stem} (pid {victim.pid}) holding {victim_leases} "
                f"of {inboxes} leases, after {len(sent)} of {messages} messages"
            )

            await sending
            sent_at = time.monotonic()
            log(f"burst done: {len(sent)} sent in {sent_at - started:.1f} s")
            settled = await settle(drill, sent, STORE_WITHIN, problems)
            rows, waited, all_stored_at = settled.rows, settled.waited, settled.all_stored_at
            await sampler.stop()
            await events.stop()
            await appender.close()
            await stack.api.aclose()
            ids = list(stack.inbox_ids.values())
            takeover = sampler.all_watched_at(ids, killed_at, not_pids=(victim.pid,))
            worker_problems(stack, problems, dead=(victim,))
            tally = check_exactly_once(sent, rows, events, problems)
            doubled = {u: n for u, n in imap.max_watching.items() if n > 1}

        if takeover is None:
            problems.append("the survivor never watched every inbox again")
        if doubled:
            longest = max(imap.doubled_for.values(), default=0.0)
            problems.append(
                f"{len(doubled)} usernames watched by two sessions at once, for up to "
                f"{longest:.1f} s: {sorted(doubled)}"
            )
        print(flush=True)
        log("receiving_sigkill results")
        print(f"  {tally.line()}", flush=True)
        print(
            f"  killed worker held {victim_leases}/{inboxes} leases; every inbox watched by the "
            f"survivor {takeover if takeover is None else round(takeover, 1)} s after the kill "
            f"(lease 3 s); lease owner changes {sampler.owner_changes()}; leases per worker at "
            f"the end {stack.split(sampler)}",
            flush=True,
        )
        print(
            f"  all stored {all_stored_at - killed_at:.1f} s after the kill, {waited:.1f} s after "
            f"the last APPEND; APPEND retries {appender.retries}; watching sessions "
            f"{sum(imap.watch_sessions.values())}, max per username at once "
            f"{max(imap.max_watching.values(), default=0)}",
            flush=True,
        )
    finally:
        if problems:
            save_logs(drill)
        drill.close()
    return report("receiving_sigkill", problems)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--inboxes", type=int, default=INBOXES)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.messages, args.inboxes)))
