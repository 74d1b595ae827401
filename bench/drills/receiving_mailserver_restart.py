"""Drill: the IMAP server restarted in the middle of a burst of 500 arrivals.

The IMAP server is the test suite's private Dovecot (``tests/support/dovecot.py``: implicit TLS
on a loopback port, Maildirs in a temp dir of its own), because its mail and UIDVALIDITY outlive
a restart as a real server's do; pymap's in-memory backend would forget every mailbox. Starts
(all on loopback, in a temp dir): an EmbeddedPostgres, an ``inboxd serve`` that verifies
(receiving off), two receiving ``inboxd worker`` processes (lease 3 s), the Dovecot, and a
counting SMTP server for the verifications. Creates ``INBOXES`` inboxes, waits until every one
is watched, then APPENDs ``MESSAGES`` messages (unique Message-IDs) at ``RATE`` per second from
sessions of its own. A ``STOP_AT`` fraction into the burst Dovecot is stopped (SIGTERM to its
master and its sessions, or with ``--mode kill`` SIGKILL to every Dovecot process at once) for
``DOWN`` seconds and started again on the same port; APPENDs refused meanwhile are sent again
once it is back. Dovecot's defaults allow 10 sessions per username and ~100 TLS connections in
all (a login process each): keep ``--inboxes`` at 30 or fewer.

Fails (exit 1) unless every sent Message-ID is stored exactly once in its user's inbox, no
(folder, UIDVALIDITY, UID) is stored twice, every stored message was notified exactly once,
both workers survive and every inbox is watched again.

    .venv/bin/python bench/drills/receiving_mailserver_restart.py [--mode kill]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter

import pytest
from _common import CountingSmtp, Drill, log, mail_users, report
from _receiving import (
    Observers,
    check_exactly_once,
    save_logs,
    settle,
    start_stack,
    wait_watched,
    worker_problems,
)

from tests.support.dovecot import SKIP_REASON, Dovecot, dovecot_binary

INBOXES = 20
MESSAGES = 500
RATE = 50.0  # messages per second: the burst lasts 10 s (plus the outage)
STOP_AT = 0.3
DOWN = 5.0
STORE_WITHIN = 90.0
# What Dovecot logs when the drill stops it: its sessions killed, anvil gone, and a login
# process caught by the stop (its anvil socket gone or not yet there).
STOPS_OWN = (
    "Killed with signal",
    "killed with signal",
    "read(anvil) failed: EOF",
    "read(anvil-auth-penalty) failed: EOF",
    "net_connect_unix(anvil-auth-penalty) failed",
)


async def wait_all_watched(database_url: str, inbox_ids: list[str]) -> None:
    """Before the next restart: every inbox watched again (or give up after 5 minutes)."""
    try:
        await wait_watched(database_url, inbox_ids, 300, "after the restart")
    except RuntimeError as exc:
        log(str(exc))


def log_summary(dovecot: Dovecot) -> str:
    """Dovecot's warnings and errors by kind (a process limit reached, inotify given up: mail
    then waits for the idle check interval), but for those of the stops themselves."""
    text = dovecot.log_file.read_text(errors="replace") if dovecot.log_file.exists() else ""
    kinds: Counter[str] = Counter()
    for line in text.splitlines():
        if any(stop in line for stop in STOPS_OWN):
            continue
        if re.search(r" (Warning|Error|Fatal|Panic): ", line):
            kinds[re.sub(r"\d+", "N", line.split(": ", 1)[-1])[:120]] += 1
    return "; ".join(f"{n}x {k}" for k, n in kinds.most_common(8)) or "none"


async def main(
    mode: str, messages: int, inboxes: int, restarts: int, backoff: str, rate: float
) -> int:
    if dovecot_binary() is None:
        print(f"receiving_mailserver_restart: cannot run: {SKIP_REASON}", flush=True)
        return 2
    drill = await asyncio.to_thread(Drill, "receiving_mailserver_restart")
    problems: list[str] = []
    dovecot: Dovecot | None = None
    try:
        users = mail_users(inboxes, "m")
        try:
            dovecot = Dovecot(users, drill.certs)
        except pytest.skip.Exception as exc:  # not Dovecot 2.3
            print(f"receiving_mailserver_restart: cannot run: {exc}", flush=True)
            return 2
        await asyncio.to_thread(dovecot.__enter__)
        log(f"dovecot on 127.0.0.1:{dovecot.imaps_port}, files in {dovecot.folder}")
        with CountingSmtp(users, drill.certs) as smtp:
            extra: dict[str, str] = {}
            if backoff == "default":  # the product's backoff (2 s doubling up to 300 s)
                extra.update(
                    INBOXD_RECEIVING_BACKOFF_BASE_SECONDS="2",
                    INBOXD_RECEIVING_BACKOFF_MAX_SECONDS="300",
                )
            stack = await start_stack(drill, users, smtp.port, dovecot.imaps_port, **extra)
            run = await Observers.start(drill, dovecot.imaps_port, users)
            sampler, sent = run.sampler, run.sent
            started = time.monotonic()
            sending = run.burst(messages, rate)
            burst_took: list[float] = []
            sending.add_done_callback(lambda _t: burst_took.append(time.monotonic() - started))

            outages: list[tuple[float, float]] = []  # (stopped, back) per restart
            for n in range(restarts):
                at = STOP_AT + n * (1 - STOP_AT) / restarts
                await run.until_sent(messages * at, sending)
                sent_before = len(sent)
                stopping = time.monotonic()
                await asyncio.to_thread(dovecot.stop, crash=mode == "kill")
                log(f"dovecot stopped ({mode}) after {sent_before} sent")
                await asyncio.sleep(DOWN)
                await asyncio.to_thread(dovecot.start)
                outages.append((stopping, time.monotonic()))
                log(f"dovecot back after {time.monotonic() - stopping:.1f} s")
                await wait_all_watched(drill.database_url, list(stack.inbox_ids.values()))
            back_at = outages[-1][1]

            await sending
            log(f"burst done: {len(sent)} sent in {burst_took[0]:.1f} s")
            settled = await settle(drill, sent, STORE_WITHIN, problems, logs=[dovecot.log_file])
            rows, waited, all_stored_at = settled.rows, settled.waited, settled.all_stored_at
            await run.stop()
            await stack.api.aclose()
            ids = list(stack.inbox_ids.values())
            rewatched_each = [sampler.all_watched_at(ids, back) for _, back in outages]
            rewatched = None if None in rewatched_each else max(rewatched_each)  # type: ignore[type-var]
            worker_problems(stack, problems)
            tally = check_exactly_once(sent, rows, run.events, problems)

        if rewatched is None:
            problems.append("not every inbox was watched again after the mail server came back")
        print(flush=True)
        log(f"receiving_mailserver_restart results (mode {mode})")
        print(f"  {tally.line()}", flush=True)
        downs = ", ".join(f"{back - stop:.1f}" for stop, back in outages)
        again = ", ".join("never" if t is None else f"{t:.1f}" for t in rewatched_each)
        print(
            f"  Dovecot restarted {len(outages)}x, down {downs} s; APPENDs sent again after a "
            f"failure {run.appender.retries}",
            flush=True,
        )
        print(
            f"  after each restart every inbox watched again in {again} s; all stored "
            f"{all_stored_at - back_at:.1f} s after the last restart ({waited:.1f} s after the "
            f"last APPEND); lease owner changes {sampler.owner_changes()}; leases per worker at "
            f"the end {stack.split(sampler)}",
            flush=True,
        )
        print(f"  Dovecot's other warnings and errors: {log_summary(dovecot)}", flush=True)
    finally:
        if problems:
            save_logs(drill, *([dovecot.log_file] if dovecot else []))
        if dovecot is not None:
            dovecot.close()
        drill.close()
    return report("receiving_mailserver_restart", problems)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("stop", "kill"), default="stop")
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--inboxes", type=int, default=INBOXES)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--rate", type=float, default=RATE, help="messages per second")
    parser.add_argument(
        "--backoff",
        choices=("drill", "default"),
        default="drill",
        help="drill: reconnect backoff 0.5 s doubling to 5 s; default: the product's 2 s to 300 s",
    )
    args = parser.parse_args()
    code = main(args.mode, args.messages, args.inboxes, args.restarts, args.backoff, args.rate)
    sys.exit(asyncio.run(code))
