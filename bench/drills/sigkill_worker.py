"""Drill: SIGKILL one of two worker processes in the middle of a burst of 500 verifications.

Starts (all on loopback, in a temp dir): an EmbeddedPostgres, an API-only ``inboxd serve``,
two ``inboxd worker`` processes, and counting SMTP (STARTTLS) and IMAP (TLS) servers whose
IMAP logins take ``LOGIN_DELAY`` s, so jobs are in flight when the kill lands. Creates
``INBOXES`` inboxes through the API (each queues one verification), SIGKILLs worker 1 once a
third of them have finished while it holds running jobs, starts a replacement, and waits for
everything to finish.

Fails (exit 1) unless: every acknowledged create exists; every inbox has exactly one connection
test, PASSED, and is ACTIVE; the jobs the dead worker held were finished by another worker
(attempts >= 2); no username ever had two SMTP or two IMAP sessions open at once (no job ran
twice concurrently); and no username logged in more often than its test's attempts.

    .venv/bin/python bench/drills/sigkill_worker.py
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from _common import (
    CREATE,
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

INBOXES = 500
CREATE_CONCURRENCY = 16
LOGIN_DELAY = 0.3
KILL_AFTER_FINISHED = INBOXES // 3
FINISH_WITHIN = 120.0


async def create_all(api: Api, users: dict[str, str], smtp_port: int, imap_port: int):
    acked: dict[str, str] = {}  # email -> inbox id
    failed: list[str] = []
    queue = list(users.items())

    async def one_by_one() -> None:
        while queue:
            user, password = queue.pop()
            for attempt in range(3):
                try:
                    body = await api.call(
                        CREATE, {"input": inbox_input(user, password, smtp_port, imap_port)}
                    )
                except Exception as exc:
                    if attempt == 2:
                        failed.append(f"{user}: {exc!r}")
                    continue
                payload = (body.get("data") or {}).get("createEmailInbox") or {}
                if payload.get("__typename") == "CreateEmailInboxSuccess":
                    acked[user] = payload["inbox"]["id"]
                else:
                    failed.append(f"{user}: {body}")
                break

    await asyncio.gather(*(one_by_one() for _ in range(CREATE_CONCURRENCY)))
    return acked, failed


async def main() -> int:
    drill = await asyncio.to_thread(Drill, "sigkill_worker")
    problems: list[str] = []
    try:
        users = mail_users(INBOXES, "k")
        with (
            CountingSmtp(users, drill.certs) as smtp,
            CountingImap(users, drill.certs, login_delay=LOGIN_DELAY) as imap,
        ):
            api_proc = drill.start("serve", "api", INBOXD_WORKER_ENABLED="false")
            w1 = drill.start("worker", "worker1")
            w2 = drill.start("worker", "worker2")
            key = await drill.tenant_key()
            api = Api(api_proc.base_url, key)
            started = time.monotonic()
            creating = asyncio.create_task(create_all(api, users, smtp.port, imap.port))

            # Kill worker 1 once a third are done, at a moment it holds running jobs.
            killed_running: list[str] = []
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                outcome = await read_outcome(drill.database_url)
                tests = [t for ts in outcome.tests.values() for t in ts]
                finished = sum(1 for t in tests if t["state"] == "PASSED")
                mine = [
                    t
                    for t in tests
                    if t["state"] == "RUNNING" and f":{w1.pid}:" in (t["worker_id"] or "")
                ]
                if finished >= KILL_AFTER_FINISHED and mine:
                    w1.signal(signal.SIGKILL)
                    w1.wait(10)
                    killed_running = [str(t["id"]) for t in mine]
                    log(
                        f"SIGKILLed worker1 (pid {w1.pid}) at {finished} finished, "
                        f"holding {len(mine)} running jobs"
                    )
                    break
                await asyncio.sleep(0.05)
            else:
                problems.append("worker 1 never held running jobs after a third had finished")
            killed_at = time.monotonic()
            w3 = drill.start("worker", "worker3")

            acked, failed = await creating
            created_in = time.monotonic() - started
            log(f"created {len(acked)} inboxes in {created_in:.1f} s, {len(failed)} failed")
            for failure in failed[:10]:
                problems.append(f"create failed: {failure}")
            if failed:
                problems.append(f"{len(failed)} creates failed (no outage in this drill)")

            outcome, waited = await wait_all_final(
                drill.database_url, len(acked), FINISH_WITHIN, label="sigkill_worker"
            )
            done_at = time.monotonic()
            await api.aclose()
            for label, proc in (("worker2", w2), ("worker3", w3), ("api", api_proc)):
                if not proc.alive():
                    problems.append(f"{label} exited ({proc.proc.poll()}): {proc.log_tail()}")

        # --- the checks ---
        check_acknowledged(outcome, acked, problems)
        summary = check_one_final_verification(outcome, problems)

        tests_by_id = {str(t["id"]): t for ts in outcome.tests.values() for t in ts}
        taken_over = 0
        for test_id in killed_running:
            test = tests_by_id.get(test_id)
            if test is None:
                problems.append(f"test {test_id} held by the killed worker vanished")
                continue
            if test["state"] != "PASSED":
                problems.append(f"test {test_id} held by the killed worker ended {test['state']}")
            if test["attempts"] < 2:
                problems.append(
                    f"test {test_id} held by the killed worker shows {test['attempts']} attempt(s)"
                )
            if test["state"] == "PASSED" and test["attempts"] >= 2:
                taken_over += 1

        attempts_by_user: dict[str, int] = {}
        for inbox_id, inbox in outcome.inboxes.items():
            attempts_by_user[inbox["smtp_username"]] = sum(
                t["attempts"] for t in outcome.tests.get(inbox_id, [])
            )
        check_one_session_each(smtp, imap, problems)
        for side, server in (("SMTP", smtp), ("IMAP", imap)):
            for user, logins in server.login_counts.items():
                if logins > attempts_by_user.get(user, 0):
                    problems.append(
                        f"{side}: {user} logged in {logins} times for "
                        f"{attempts_by_user.get(user, 0)} attempts"
                    )
            missing = [u for u in acked if server.login_counts[u] == 0]
            if missing:
                problems.append(
                    f"{side}: {len(missing)} inboxes never logged in, e.g. {missing[:3]}"
                )

        print(flush=True)
        log("sigkill_worker results")
        print(f"  inboxes created (acknowledged): {len(acked)} of {INBOXES}", flush=True)
        print(f"  inboxes in the database:        {len(outcome.inboxes)}", flush=True)
        print(f"  outcome: {dict(sorted(summary.items()))}", flush=True)
        print(
            f"  jobs running on worker1 at SIGKILL: {len(killed_running)}, "
            f"finished later by another worker (PASSED, attempts >= 2): {taken_over}",
            flush=True,
        )
        print(
            f"  {login_totals(smtp, imap)}, "
            f"max sessions per username at once: SMTP {max(smtp.max_active.values(), default=0)},"
            f" IMAP {max(imap.max_active.values(), default=0)}",
            flush=True,
        )
        print(
            f"  all final {waited:.1f} s after the creates returned; "
            f"{done_at - killed_at:.1f} s after the kill; burst total {done_at - started:.1f} s",
            flush=True,
        )
        if outcome.open_tests():
            problems.append(f"{outcome.open_tests()} tests still open after {FINISH_WITHIN} s")
            for proc in drill.procs:
                print(f"--- {proc.log_path.name} (exit {proc.proc.poll()})\n{proc.log_tail()}")
    finally:
        drill.close()
    return report("sigkill_worker", problems)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
