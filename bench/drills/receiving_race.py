"""Drill: two receiving processes started at the same moment race for the same 50 inboxes.

Starts (all on loopback, in a temp dir): an EmbeddedPostgres, an ``inboxd serve`` that verifies
(receiving off), a pymap IMAP server (TLS) that counts, per username, the sessions that opened a
mailbox (a watcher; the delivering sessions only APPEND), and a counting SMTP server for the
verifications. Creates ``INBOXES`` inboxes and waits until all are ACTIVE. Then, ``ROUNDS``
times: two receiving ``inboxd worker`` processes are started back to back, race for the
inboxes, every inbox must be watched, ``MESSAGES / ROUNDS`` messages (unique Message-IDs) are
APPENDed round robin, and both workers get SIGTERM (their leases are given back) before the
next pair races.

Fails (exit 1) unless every sent Message-ID is stored exactly once in its user's inbox, no
(folder, UIDVALIDITY, UID) is stored twice, every stored message was notified exactly once, and
no username ever had two watching sessions open at once (one inbox watched by two processes).

    .venv/bin/python bench/drills/receiving_race.py
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
import time
from collections import Counter

import asyncpg
from _common import Api, CountingSmtp, Drill, Proc, log, mail_users, report
from _receiving import (
    RECEIVING_ENV,
    Appender,
    EventCounter,
    LeaseSampler,
    WatchImap,
    burst,
    check_exactly_once,
    create_inboxes,
    settle,
    wait_active,
    wait_watched,
)

INBOXES = 50
MESSAGES = 500
ROUNDS = 3
RATE = 50.0
STORE_WITHIN = 90.0


async def main(messages: int, inboxes: int, rounds: int) -> int:
    drill = await asyncio.to_thread(Drill, "receiving_race")
    problems: list[str] = []
    try:
        users = mail_users(inboxes, "x")
        with (
            CountingSmtp(users, drill.certs) as smtp,
            WatchImap(users, drill.certs) as imap,
        ):
            api_proc = drill.start("serve", "api", INBOXD_RECEIVING_ENABLED="false")
            api = Api(api_proc.base_url, await drill.tenant_key())
            inbox_ids = await create_inboxes(api, users, smtp.port, imap.port)
            ids = list(inbox_ids.values())
            await wait_active(drill.database_url, ids, 120)
            verification_sessions = Counter(imap.watch_sessions)
            log(f"{len(ids)} inboxes ACTIVE; the race begins")
            events = EventCounter(drill.database_url)
            sampler = LeaseSampler(drill.database_url, every=0.1)
            await events.start()
            await sampler.start()
            context = ssl.create_default_context(cafile=drill.certs.ca_file)
            appender = Appender(imap.port, users, context)
            sent: dict[str, str] = {}
            split: list[str] = []
            watched_in: list[float] = []
            for round_ in range(rounds):
                pair: list[Proc] = []
                for n in (1, 2):
                    pair.append(
                        drill.start("worker", f"round{round_ + 1}-worker{n}", **RECEIVING_ENV)
                    )
                raced_at = time.monotonic()
                watched_in.append(await wait_watched(drill.database_url, ids, 120, "race"))
                held = sampler.owners_at(time.monotonic())
                counts = [sum(c for o, c in held.items() if f":{w.pid}:" in o) for w in pair]
                split.append("/".join(str(c) for c in counts))
                log(f"round {round_ + 1}: every inbox watched, split {split[-1]}")
                part: dict[str, str] = {}
                share = messages // rounds + (1 if round_ < messages % rounds else 0)
                await burst(appender, list(users), share, RATE, part)
                sent.update(part)
                await settle(drill, sent, STORE_WITHIN, problems)
                for proc in pair:
                    if not proc.alive():
                        problems.append(f"{proc.log_path.name} exited: {proc.log_tail()}")
                    proc.signal(signal.SIGTERM)
                for proc in pair:
                    # 143: SIGTERM becomes SystemExit(128 + 15) (inboxd.runtime.exit_on_sigterm)
                    if proc.wait(30) not in (0, 143, -signal.SIGTERM):
                        problems.append(f"{proc.log_path.name} exit {proc.proc.poll()}")
                kept = await held_leases(drill.database_url)
                if kept:
                    problems.append(f"round {round_ + 1}: {kept} leases not given back on SIGTERM")
                log(f"round {round_ + 1} done in {time.monotonic() - raced_at:.1f} s")
            settled = await settle(drill, sent, STORE_WITHIN, problems)
            await sampler.stop()
            await events.stop()
            await appender.close()
            await api.aclose()
            tally = check_exactly_once(sent, settled.rows, events, problems)
            doubled = {u: n for u, n in imap.max_watching.items() if n > 1}
            reconnects = sum(
                imap.watch_sessions[u] - verification_sessions[u] - rounds for u in users
            )

        if doubled:
            problems.append(f"usernames watched by two sessions at once: {doubled}")
        print(flush=True)
        log("receiving_race results")
        print(f"  {tally.line()}", flush=True)
        print(
            f"  {rounds} races of 2 workers for {inboxes} inboxes: leases split {split}; every "
            f"inbox watched {', '.join(f'{t:.1f}' for t in watched_in)} s after the start; max "
            f"watching sessions per username at once {max(imap.max_watching.values(), default=0)};"
            f" watching sessions beyond one per inbox and round {reconnects}; lease owner "
            f"changes within a round {owner_changes_within(sampler, rounds)}",
            flush=True,
        )
    finally:
        drill.close()
    return report("receiving_race", problems)


async def held_leases(database_url: str) -> int:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM inbox_watch WHERE owner IS NOT NULL")
        )
    finally:
        await connection.close()


def owner_changes_within(sampler: LeaseSampler, rounds: int) -> int:
    """Owner changes that are not the hand-over from one round's pair to the next: at most
    one per inbox per later round is expected."""
    return max(0, sampler.owner_changes() - len(sampler.samples[-1].rows) * (rounds - 1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--inboxes", type=int, default=INBOXES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.messages, args.inboxes, args.rounds)))
