"""Drill: the drill's own Postgres stopped and started again in the middle of a burst of 500
sends.

Starts (all on loopback, in a temp dir): an EmbeddedPostgres (a private server on a Unix
socket in the temp dir, never the machine's), an API-only ``inboxd serve``, two ``inboxd
worker`` processes (send lease 5 s), a counting aiosmtpd (STARTTLS) that keeps every message
it accepts, and pymap (TLS) where every mailbox has a "Sent" folder. Creates ``INBOXES``
inboxes, then sends ``MESSAGES`` messages through ``sendEmail`` at ``RATE`` per second (each
with its own idempotencyKey, retried until acknowledged: the calls that fail while Postgres
is away are made again). Once ``STOP_AT`` of them are acknowledged, Postgres is stopped
(``pg_ctl -m fast``, or ``--mode immediate``: a crash) for ``DOWN`` seconds and started again.
Messages whose SMTP transaction ends while Postgres is away cannot be recorded SENT: their
copy goes to the Sent folder, their lease runs out, and the worker that takes them over finds
them there instead of sending them again.

Fails (exit 1) unless every acknowledged send has one row, every row is SENT, every row's
Message-ID reached the SMTP server exactly once, the server received nothing else, and every
process is alive.

    .venv/bin/python bench/drills/sending_postgres_restart.py [--mode immediate]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from _common import Drill, log, mail_users, report
from _sending import (
    SentImap,
    SinkSmtp,
    check_exactly_once,
    copies_settled,
    sent_copies,
    settle,
    start_stack,
    worker_problems,
)

INBOXES = 20
MESSAGES = 500
RATE = 50.0  # sends per second: the burst lasts 10 s without the outage
STOP_AT = 0.3
DOWN = 5.0
SETTLE_WITHIN = 120.0


async def main(mode: str, messages: int, inboxes: int, accept_delay: float) -> int:
    drill = await asyncio.to_thread(Drill, "sending_postgres_restart")
    problems: list[str] = []
    try:
        users = mail_users(inboxes, "r")
        with (
            SinkSmtp(users, drill.certs, accept_delay=accept_delay) as smtp,
            SentImap(users, drill.certs) as imap,
        ):
            stack = await start_stack(drill, users, smtp.port, imap.port)
            sending = stack.start_burst(messages, RATE)
            result = sending.result
            while len(result.acked) < messages * STOP_AT and not sending.task.done():
                await asyncio.sleep(0.02)
            acked_before, delivered_before = len(result.acked), len(smtp.messages)
            stopping = time.monotonic()
            await asyncio.to_thread(drill.postgres.stop, mode)
            log(
                f"Postgres stopped ({mode}, {time.monotonic() - stopping:.1f} s) after "
                f"{acked_before} acknowledged, {delivered_before} delivered"
            )
            await asyncio.sleep(DOWN)
            delivered_down = len(smtp.messages)
            await asyncio.to_thread(drill.postgres.start)
            back_at = time.monotonic()
            log(f"Postgres back after {back_at - stopping:.1f} s")
            await sending.finish()
            rows, waited = await settle(drill.database_url, messages, SETTLE_WITHIN)
            done_at = time.monotonic()
            # A burst is sent first and its copies follow; a copy whose filing the outage
            # interrupted comes due after the lease: every SENT message must get its copy.
            copies_due = await copies_settled(drill.database_url, SETTLE_WITHIN)
            if copies_due:
                problems.append(f"{copies_due} SENT messages still wait for their Sent copy")
            delivered = smtp.delivered()
            copies = await sent_copies(imap.port, users, drill.certs.ca_file, rows)
            sent = sum(r["state"] == "SENT" for r in rows)
            if copies.get(1, 0) != sent or any(n > 1 for n in copies):
                problems.append(f"Sent copies per message {dict(copies)} for {sent} SENT")
            worker_problems(stack, problems)
            await stack.api.aclose()
        tally = check_exactly_once(result, rows, delivered, messages, problems)
        print(flush=True)
        log(f"sending_postgres_restart results (mode {mode}, accept delay {accept_delay} s)")
        print(f"  {tally.line()}", flush=True)
        print(
            f"  Postgres down {back_at - stopping:.1f} s; {delivered_down - delivered_before} "
            f"messages delivered while it was down; all final {done_at - back_at:.1f} s after "
            f"it was back ({waited:.1f} s after the last send was acknowledged); copies in the "
            f"Sent folders per message: {dict(sorted(copies.items()))}; refusals while "
            f"sending {dict(result.refusals)}",
            flush=True,
        )
    finally:
        drill.close()
    return report("sending_postgres_restart", problems)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("fast", "immediate"), default="fast")
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--inboxes", type=int, default=INBOXES)
    parser.add_argument("--accept-delay", type=float, default=0.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.mode, args.messages, args.inboxes, args.accept_delay)))
