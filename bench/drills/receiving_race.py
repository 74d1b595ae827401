"""Drill: two receiving processes started at the same moment race for the same 50 inboxes.

Starts (all on loopback, in a temp dir): an EmbeddedPostgres, an ``inboxd serve`` that verifies
(receiving off), a pymap IMAP server (TLS) that counts, per username, the sessions that opened a
mailbox (a watcher; the delivering sessions only APPEND), and a counting SMTP server for the
verifications. Creates ``INBOXES`` inboxes and waits until all are ACTIVE. Then, ``ROUNDS``
times: two receiving ``inboxd worker`` processes are started back to back and race for the
inboxes; once every inbox is watched ``MESSAGES / ROUNDS`` messages (unique Message-IDs) are
APPENDed round robin while the two share the inboxes out (each should end with half: whoever
claimed first hands the surplus over); once the split is even and has held ``STEADY`` s, both
workers get SIGTERM (their leases are given back) before the next pair races.

Fails (exit 1) unless every sent Message-ID is stored exactly once in its user's inbox, no
(folder, UIDVALIDITY, UID) is stored twice, every stored message was notified exactly once, no
username ever had two watching sessions open at once (one inbox watched by two processes, as a
hand-over could do), the leases were split evenly within ``BALANCE_WITHIN`` s of the start and
stayed so, and every lease was given back on SIGTERM.

    .venv/bin/python bench/drills/receiving_race.py
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
from _common import Api, CountingSmtp, Drill, Proc, log, mail_users, report
from _receiving import (
    RECEIVING_ENV,
    LeaseSampler,
    Observers,
    WatchImap,
    burst,
    check_exactly_once,
    create_inboxes,
    save_logs,
    settle,
    wait_active,
    wait_watched,
)

INBOXES = 50
MESSAGES = 500
ROUNDS = 3
RATE = 50.0
STORE_WITHIN = 90.0
BALANCE_WITHIN = 30.0  # seconds after the start: the leases shared evenly by then
STEADY = 3.0  # seconds the split must then hold (3 lease renewals)


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
            run = await Observers.start(drill, imap.port, users, every=0.1)
            sampler, sent = run.sampler, run.sent
            results: list[Round] = []
            for round_ in range(rounds):
                result = await race(drill, sampler, ids, round_ + 1)
                part: dict[str, str] = {}
                share = messages // rounds + (1 if round_ < messages % rounds else 0)
                result.burst_start = time.monotonic()
                await burst(run.appender, list(users), share, RATE, part)
                sent.update(part)
                result.burst_end = time.monotonic()
                await settle(drill, sent, STORE_WITHIN, problems)
                await end_round(drill, sampler, result, len(ids), problems)
                results.append(result)
            settled = await settle(drill, sent, STORE_WITHIN, problems)
            await run.stop()
            await api.aclose()
            tally = check_exactly_once(sent, settled.rows, run.events, problems)
            doubled = imap.doubled()
            sessions = sum(imap.watch_sessions[u] - verification_sessions[u] for u in users)
            handovers = sum(r.handovers for r in results)

        if doubled:
            problems.append(imap.watched_twice(doubled))
        print(flush=True)
        log("receiving_race results")
        print(f"  {tally.line()}", flush=True)
        print(
            f"  {rounds} races of 2 workers for {inboxes} inboxes; max watching sessions per "
            f"username at once {max(imap.max_watching.values(), default=0)}; watching sessions "
            f"opened {sessions} (one per inbox and round: {rounds * len(ids)}, hand-overs "
            f"{handovers}: a watcher handed over before it opened the mailbox opens none)",
            flush=True,
        )
        for n, r in enumerate(results, 1):
            print(f"  round {n}: {r.line()}", flush=True)
    finally:
        if problems:
            save_logs(drill)
        drill.close()
    return report("receiving_race", problems)


@dataclass
class Round:
    number: int
    procs: list[Proc]
    started: float
    watched_in: float  # seconds after the start until every inbox was watched
    burst_start: float = 0.0
    burst_end: float = 0.0
    balanced_in: float | None = None  # ... until the leases were shared evenly
    timeline: list[tuple[float, tuple[int, ...]]] = field(default_factory=list)
    handovers: int = 0
    changes_after_balance: int = 0

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self.procs)

    def line(self) -> str:
        split = ", ".join(f"{'/'.join(map(str, h))} at {t:.1f} s" for t, h in self.timeline)
        if self.balanced_in is None:
            balanced = "never even"
        else:
            at = self.started + self.balanced_in
            when = (
                "before" if at < self.burst_start else "during" if at <= self.burst_end else "after"
            )
            balanced = f"even {self.balanced_in:.1f} s after the start ({when} the burst)"
        return (
            f"every inbox watched {self.watched_in:.1f} s after the start; leases split "
            f"{split}; {balanced}; hand-overs {self.handovers}; owner changes once even "
            f"{self.changes_after_balance}"
        )


async def race(drill: Drill, sampler: LeaseSampler, ids: list[str], number: int) -> Round:
    """Two workers started back to back; returns once every inbox is watched."""
    procs = [drill.start("worker", f"round{number}-worker{n}", **RECEIVING_ENV) for n in (1, 2)]
    started = time.monotonic()
    watched_in = await wait_watched(drill.database_url, ids, 120, "race")
    result = Round(number, procs, started, watched_in)
    await asyncio.sleep(sampler.every * 2)  # a sample after the wait
    held = LeaseSampler.held(sampler.samples[-1], result.pids)
    log(f"round {number}: every inbox watched, split {held[0]}/{held[1]}")
    return result


async def end_round(
    drill: Drill, sampler: LeaseSampler, result: Round, total: int, problems: list[str]
) -> None:
    """Wait for an even split (up to ``BALANCE_WITHIN`` s after the start), read the round's
    split history, then SIGTERM both workers: every lease must be given back."""
    label = f"round {result.number}"
    deadline = result.started + BALANCE_WITHIN
    while time.monotonic() < deadline:
        if sampler.balanced_at(result.pids, total, result.started) is not None:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(STEADY)  # a split that moves again would show here
    now = time.monotonic()
    result.balanced_in = sampler.balanced_at(result.pids, total, result.started)
    result.timeline = sampler.split_timeline(result.pids, result.started, now)
    result.handovers = sampler.owner_changes(result.started, now)
    if result.balanced_in is None:
        problems.append(f"{label}: leases never shared evenly: {result.timeline}")
    else:
        even_at = result.started + result.balanced_in
        result.changes_after_balance = sampler.owner_changes(even_at, now)
        final = result.timeline[-1][1]
        if result.changes_after_balance or max(final) - min(final) > 1:
            problems.append(f"{label}: the split moved once even: {result.timeline}")
    for proc in result.procs:
        if not proc.alive():
            problems.append(f"{proc.log_path.name} exited: {proc.log_tail()}")
        proc.signal(signal.SIGTERM)
    for proc in result.procs:
        # 143: SIGTERM becomes SystemExit(128 + 15) (inboxd.runtime.exit_on_sigterm)
        if proc.wait(30) not in (0, 143, -signal.SIGTERM):
            problems.append(f"{proc.log_path.name} exit {proc.proc.poll()}")
    kept = await held_leases(drill.database_url)
    if kept:
        problems.append(f"{label}: {kept} leases not given back on SIGTERM")
    log(f"{label} done in {time.monotonic() - result.started:.1f} s")


async def held_leases(database_url: str) -> int:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM inbox_watch WHERE owner IS NOT NULL")
        )
    finally:
        await connection.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--inboxes", type=int, default=INBOXES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.messages, args.inboxes, args.rounds)))
