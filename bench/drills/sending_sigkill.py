"""Drill: SIGKILL one of two sending workers in the middle of a burst of 500 sends.

Starts (all on loopback, in a temp dir): an EmbeddedPostgres, an API-only ``inboxd serve``,
two ``inboxd worker`` processes (send lease 5 s), a counting aiosmtpd (STARTTLS) that keeps
every message it accepts, and pymap (TLS) where every mailbox has a "Sent" folder. Creates
``INBOXES`` inboxes, then sends ``MESSAGES`` messages through ``sendEmail`` at ``RATE`` per
second (each with its own idempotencyKey, retried until acknowledged). Once ``KILL_AT`` of them
are SENT, the worker holding the most messages in SENDING gets SIGKILL; the other takes its
messages over when their leases run out, looking each up in the Sent folder first.

``--accept-delay S`` makes the SMTP server answer 250 only S seconds after it stored the
message, widening the window in which the server has the message and the worker does not know
yet; with ``--kill-in-window`` the kill waits until a worker holds such a message (delivered,
still SENDING): a process dying between the server accepting a message and the database
recording it, which the outbox must survive without a duplicate.

Fails (exit 1) unless every acknowledged send has one row, every row is SENT, every row's
Message-ID reached the SMTP server exactly once, the server received nothing else, and the
serve process and the surviving worker are alive.

    .venv/bin/python bench/drills/sending_sigkill.py [--accept-delay 0.3 --kill-in-window]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter
from typing import Any

import asyncpg
from _common import Drill, log, mail_users, report
from _sending import (
    FINAL,
    SentImap,
    SinkSmtp,
    check_exactly_once,
    copies_settled,
    read_rows,
    sent_copies,
    settle,
    start_stack,
    worker_problems,
)

INBOXES = 20
MESSAGES = 500
RATE = 50.0  # sends per second: the burst lasts 10 s
KILL_AT = 0.3
SETTLE_WITHIN = 120.0


async def holders(database_url: str, delivered: Counter[str] | None = None) -> Counter[str]:
    """Messages in SENDING per lease owner; with ``delivered``, only those the SMTP server
    already has (the worker has not recorded them SENT yet)."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT lease_owner, message_id FROM outgoing_message WHERE state = 'SENDING'"
        )
    finally:
        await connection.close()
    return Counter(
        r["lease_owner"] for r in rows if delivered is None or delivered[r["message_id"]]
    )


async def main(messages: int, inboxes: int, accept_delay: float, window: bool) -> int:
    drill = await asyncio.to_thread(Drill, "sending_sigkill")
    problems: list[str] = []
    try:
        users = mail_users(inboxes, "k")
        with (
            SinkSmtp(users, drill.certs, accept_delay=accept_delay) as smtp,
            SentImap(users, drill.certs) as imap,
        ):
            stack = await start_stack(drill, users, smtp.port, imap.port)
            sending = stack.start_burst(messages, RATE)
            result, started = sending.result, sending.started
            victim = None
            held: Counter[str] = Counter()
            rows: list[dict[str, Any]] = []
            # Until a worker holds a victim, even after the burst (a loaded machine sends
            # behind it), and only while unsent messages are left.
            while not sending.task.done() or any(r["state"] not in FINAL for r in rows):
                rows = await read_rows(drill.database_url)
                if sum(r["state"] == "SENT" for r in rows) >= messages * KILL_AT:
                    held = await holders(drill.database_url, smtp.delivered() if window else None)
                    if held:
                        break
                await asyncio.sleep(0.01)
            by_pid = {str(w.pid): w for w in stack.workers}
            if held:
                owner, count = held.most_common(1)[0]
                victim = by_pid.get(owner.split(":")[1])
            if victim is None:
                problems.append(f"no worker held a message in SENDING to kill (held {held})")
            else:
                victim.signal(signal.SIGKILL)
                killed_at = time.monotonic()
                what = "already delivered, not recorded" if window else "in SENDING"
                log(
                    f"SIGKILL worker pid {victim.pid} holding {count} messages {what} "
                    f"({dict(held)}), {killed_at - started:.1f} s into the burst"
                )
            await sending.finish()
            rows, waited = await settle(drill.database_url, messages, SETTLE_WITHIN)
            done_at = time.monotonic()
            copies_due = await copies_settled(drill.database_url, SETTLE_WITHIN)
            if copies_due:
                problems.append(f"{copies_due} SENT messages still wait for their Sent copy")
            delivered = smtp.delivered()
            copies = await sent_copies(imap.port, users, drill.certs.ca_file, rows)
            worker_problems(stack, problems, killed=victim)
            await stack.api.aclose()
        tally = check_exactly_once(result, rows, delivered, messages, problems)
        print(flush=True)
        log(f"sending_sigkill results (accept delay {accept_delay} s)")
        print(f"  {tally.line()}", flush=True)
        held_what = "delivered, unrecorded" if window else "in SENDING"
        print(
            f"  killed worker held {count if victim else 0} {held_what}; all final "
            f"{done_at - killed_at if victim else float('nan'):.1f} s after the kill "
            f"({waited:.1f} s after the last send was acknowledged); copies in the Sent "
            f"folders per message: {dict(sorted(copies.items()))}; refusals while sending "
            f"{dict(result.refusals)}",
            flush=True,
        )
    finally:
        drill.close()
    return report("sending_sigkill", problems)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--inboxes", type=int, default=INBOXES)
    parser.add_argument("--accept-delay", type=float, default=0.0)
    parser.add_argument(
        "--kill-in-window",
        action="store_true",
        help="kill the worker of a message the SMTP server has but the worker has not recorded",
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.messages, args.inboxes, args.accept_delay, args.kill_in_window)))
