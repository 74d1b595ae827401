"""Drill: SIGKILL the process watching most inboxes in the middle of a burst of 500 arrivals.

Starts (all on loopback, in a temp dir): an EmbeddedPostgres, an ``inboxd serve`` that verifies
(receiving off), two receiving ``inboxd worker`` processes (lease 3 s), a pymap IMAP server
(TLS) counting watching sessions, and a counting SMTP server for the verifications. Creates
``INBOXES`` inboxes (distinct users), waits until every one is watched, then APPENDs
``MESSAGES`` messages (unique Message-IDs) from sessions of its own at ``RATE`` per second,
round robin. A ``KILL_AT`` fraction into the burst, the worker holding the most leases gets
SIGKILL; the other must take its inboxes over once their leases lapse.

With ``--stall S`` the worker is paused instead (SIGSTOP, S seconds, SIGCONT), as a process
stalls under CPU starvation, a long GC pause or a paused VM: its leases lapse while it still
holds its IMAP sessions; the other takes its inboxes over, and once it resumes the two must
share the inboxes evenly again. Two sessions at once for its users are expected while it is
paused (nothing can close them); it fails when they stay open ``RESUME_CLOSE_WITHIN`` s after
it resumed.

Fails (exit 1) unless every sent Message-ID is stored exactly once in its user's inbox, no
(folder, UIDVALIDITY, UID) is stored twice, every stored message was notified exactly once,
the survivor watches every inbox again, and no username was watched by two sessions at once.

    .venv/bin/python bench/drills/receiving_sigkill.py
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from _common import CountingSmtp, Drill, log, mail_users, report
from _receiving import (
    Observers,
    WatchImap,
    check_exactly_once,
    save_logs,
    settle,
    start_stack,
    wait_even,
    worker_problems,
)

INBOXES = 20
MESSAGES = 500
RATE = 50.0  # messages per second: the burst lasts 10 s
KILL_AT = 0.4
RESUME_CLOSE_WITHIN = 3.0  # seconds: a resumed worker closes the sessions it lost by then
EVEN_AGAIN_WITHIN = 30.0  # seconds: ... and has its share of the inboxes back
STORE_WITHIN = 90.0


async def main(messages: int, inboxes: int, stall: float) -> int:
    drill = await asyncio.to_thread(Drill, "receiving_sigkill")
    problems: list[str] = []
    try:
        users = mail_users(inboxes, "r")
        with (
            CountingSmtp(users, drill.certs) as smtp,
            WatchImap(users, drill.certs) as imap,
        ):
            stack = await start_stack(drill, users, smtp.port, imap.port)
            run = await Observers.start(drill, imap.port, users)
            sampler, sent = run.sampler, run.sent
            await asyncio.sleep(0.5)
            started = time.monotonic()
            sending = run.burst(messages, RATE)

            await run.until_sent(messages * KILL_AT, sending)
            held = sampler.owners_at(time.monotonic())
            victim = max(
                stack.workers, key=lambda w: sum(n for o, n in held.items() if f":{w.pid}:" in o)
            )
            victim_leases = sum(n for o, n in held.items() if f":{victim.pid}:" in o)
            what = f"paused for {stall:.0f} s" if stall else "SIGKILLed"
            log(
                f"{what}: {victim.log_path.stem} (pid {victim.pid}) holding {victim_leases} "
                f"of {inboxes} leases, after {len(sent)} of {messages} messages"
            )
            victim.signal(signal.SIGSTOP if stall else signal.SIGKILL)
            killed_at = time.monotonic()
            if stall:
                await asyncio.sleep(stall)
                victim.signal(signal.SIGCONT)
                resumed_at = time.monotonic()
            else:
                victim.wait(10)

            await sending
            sent_at = time.monotonic()
            log(f"burst done: {len(sent)} sent in {sent_at - started:.1f} s")
            settled = await settle(drill, sent, STORE_WITHIN, problems)
            rows, waited, all_stored_at = settled.rows, settled.waited, settled.all_stored_at
            if stall:  # the resumed worker gets its share back (the sampler is still going)
                pids_now = [w.pid for w in stack.workers]
                total = len(stack.inbox_ids)
                await wait_even(drill.database_url, pids_now, total, EVEN_AGAIN_WITHIN)
                await asyncio.sleep(2 * sampler.every)
            await run.stop()
            await stack.api.aclose()
            ids = list(stack.inbox_ids.values())
            takeover = sampler.all_watched_at(ids, killed_at, not_pids=(victim.pid,))
            even_again = None
            if stall:
                pids = tuple(w.pid for w in stack.workers)
                even_again = sampler.balanced_at(pids, len(ids), resumed_at)
                if even_again is None:
                    problems.append("the inboxes were not shared evenly again after the pause")
            worker_problems(stack, problems, dead=() if stall else (victim,))
            tally = check_exactly_once(sent, rows, run.events, problems)
            doubled = imap.doubled()

        if takeover is None:
            problems.append("the other worker never watched every inbox")
        # A paused process cannot close its sessions: two at once is expected until it resumes,
        # and then it must close them within a lease renewal (1 s) or two.
        stale_for = max(imap.doubled_until.values(), default=0.0) - resumed_at if stall else 0.0
        if stall and stale_for > RESUME_CLOSE_WITHIN:
            problems.append(
                f"the paused worker's sessions stayed open {stale_for:.1f} s after it resumed"
            )
        if doubled and not stall:
            problems.append(imap.watched_twice(doubled))
        print(flush=True)
        log("receiving_sigkill results")
        print(f"  {tally.line()}", flush=True)
        print(
            f"  {what} worker held {victim_leases}/{inboxes} leases; every inbox watched by the "
            f"other {takeover if takeover is None else round(takeover, 1)} s after the signal "
            f"(lease 3 s); lease owner changes {sampler.owner_changes()}; leases per worker at "
            f"the end {stack.split(sampler)}",
            flush=True,
        )
        print(
            f"  all stored {all_stored_at - killed_at:.1f} s after the signal, {waited:.1f} s "
            f"after the last APPEND; APPEND retries {run.appender.retries}; watching sessions "
            f"{sum(imap.watch_sessions.values())}, max per username at once "
            f"{max(imap.max_watching.values(), default=0)}",
            flush=True,
        )
        if stall:
            again = "never" if even_again is None else f"{even_again:.1f} s"
            longest = max(imap.doubled_for.values(), default=0.0)
            print(
                f"  after the pause: leases even again in {again}; usernames watched by two "
                f"sessions at once {len(doubled)}, for up to {longest:.1f} s, the last until "
                f"{stale_for:.1f} s after the resume",
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
    parser.add_argument(
        "--stall", type=float, default=0.0, help="pause the worker this long instead of a kill"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.messages, args.inboxes, args.stall)))
