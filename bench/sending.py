"""B11-B13: sending mail (issue 13), each beside its floor, against aiosmtpd (STARTTLS) and
pymap (implicit TLS, the Sent folder) in processes of their own.

- B11: ``sendEmail`` accepted into the outbox, throughput over HTTP (32 connections, requests
  spread round robin over 600 ACTIVE inboxes, the outbox and daily counts emptied before
  every load so that neither the daily limit nor the per-minute rate refuses any; any other
  answer voids the figure). No worker runs: only the acceptance is measured. Floor
  (floors/raw_send.py): the same row inserted in one transaction by a raw route.
- B12: ``sendEmail`` until an ``outgoingMessage`` subscriber (graphql-transport-ws) sees SENT,
  one message at a time, taking turns with the floor (floors/smtp_send.py ``send_one``:
  aiosmtplib sending the same message directly, one session per message).
- B13: 1,000 sends across 20 inboxes until every one is SENT; the same sends by the floor at
  the worker's concurrency. The SMTP server (``smtp-sink`` below) counts what it received by
  Message-ID: duplicates and lost messages.

Receiving stays off (INBOXD_RECEIVING_ENABLED=false), as in B1-B7. Helper modes of this file,
each started as its own process by the phase:

    python bench/sending.py smtp-sink --certdir DIR --users N --password PW
    python bench/sending.py load --port P --key K --inboxes FILE --seconds S --tag T
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BENCH,
    HOST,
    VENV_PYTHON,
    cpu_seconds,
    dumps,
    percentile,
    start,
)

SEND_B11 = (  # the floor answers exactly this document (floors/raw_send.py SEND)
    "mutation Send($inboxId: ID!, $input: SendEmailInput!) { sendEmail(inboxId: $inboxId, "
    "input: $input) { __typename ... on SendEmailSuccess { outgoingMessage { id state "
    "messageId } } ... on UserError { code message } } }"
)
FOLLOW = "subscription Follow($id: ID!) { outgoingMessage(id: $id) { id state version lastCode } }"
TO = "Rita Receiver <rita@receiver.example.com>"
TEXT = "Hello,\n\nthe numbers for this quarter are attached below.\n\n" + "Line of text. " * 20
SENDING_FIGURES = {"B11", "B12", "B13"}
MARKER = "## Sending (B11-B13)"


def send_input(subject: str) -> dict:
    return {"to": [TO], "subject": subject, "text": TEXT}


def inbox_input(email: str, ports: tuple[int, int], password: str) -> dict:
    return {
        "email": email,
        "displayName": "Bench Inbox",
        "dailySendLimit": 50,  # the most an inbox may send a day (1-50)
        # Each inbox its own signature, as in real use: inboxd remembers each inbox's cleaned
        # signature, and one shared by all would make that memory look better than it is.
        "signature": f"<p>Bench Sender ({email.partition('@')[0]}), <b>Sales</b></p>",
        "smtp": {"host": HOST, "port": ports[0], "security": "STARTTLS", "password": password},
        "imap": {"host": HOST, "port": ports[1], "security": "TLS", "password": password},
    }


# --- the SMTP server that counts (its own process) ------------------------------------------

_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]+>)")


def message_id_of(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    found = _MESSAGE_ID.search(head)
    return found.group(1).decode() if found else None


def smtp_sink(args: argparse.Namespace) -> int:
    """aiosmtpd (STARTTLS, AUTH) from tests/support/mailservers.py that keeps what it
    received. stdin commands: ``tally`` -> {"received": N, "counts": {Message-ID: n}} since the
    last ``reset``; ``count`` -> {"auth_attempts": N}; ``quit``."""
    import os

    from bench.mailserver import server_context, user
    from tests.support.mailservers import SmtpMode, SmtpServer

    users = {user(i): args.password for i in range(args.users)}
    server = SmtpServer(SmtpMode.STARTTLS, users, ssl_context=server_context(args.certdir))
    server.start()
    timer = threading.Timer(args.max_seconds, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    print(json.dumps({"port": server.port}), flush=True)
    since = 0
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "tally":
                received = list(server.messages[since:])
                counts = Counter(message_id_of(m.data) or "(none)" for m in received)
                print(json.dumps({"received": len(received), "counts": counts}), flush=True)
            elif command == "reset":
                since = len(server.messages)
                print(json.dumps({"since": since}), flush=True)
            elif command == "count":
                print(json.dumps({"auth_attempts": server.auth_attempts}), flush=True)
            elif command == "quit":
                break
    finally:
        server.stop()
    return 0


class Sink:
    def __init__(self, run: Any, certdir: Path, users: int, password: str) -> None:
        self.proc = start(
            "smtp-sink",
            [
                str(VENV_PYTHON), str(BENCH / "sending.py"), "smtp-sink", "--certdir",
                str(certdir), "--users", str(users), "--password", password,
            ],
            log=run.tmp / "smtp-sink.log",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        run.procs.append(self.proc)
        line = self.proc.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"SMTP sink did not start; see {run.tmp}/smtp-sink.log")
        self.port = int(json.loads(line)["port"])

    def ask(self, command: str) -> dict:
        self.proc.popen.stdin.write(command.encode() + b"\n")
        self.proc.popen.stdin.flush()
        return dict(json.loads(self.proc.popen.stdout.readline()))


# --- B11's load generator (its own process) --------------------------------------------------


async def _load(args: argparse.Namespace) -> dict:
    """Like bench/loadgen.py, but each request goes to the next inbox of --inboxes."""
    from bench.loadgen import post

    ids = Path(args.inboxes).read_text().split()
    stats = {"requests": 0, "bad": 0, "socket_errors": 0, "sample": ""}
    latencies: list[float] = []
    until = time.monotonic() + args.seconds
    turn = iter(range(10**9))

    async def connection(index: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, args.port)
        try:
            while time.monotonic() < until:
                n = next(turn)
                body = dumps(
                    {
                        "query": SEND_B11,
                        "operationName": "Send",
                        "variables": {
                            "inboxId": ids[n % len(ids)],
                            "input": send_input(f"B11 {args.tag}-{index}-{n}"),
                        },
                    }
                ).encode()
                started = time.perf_counter()
                status, payload = await post(
                    reader, writer, HOST, args.port, "/graphql", args.key, body
                )
                latencies.append(time.perf_counter() - started)
                stats["requests"] += 1
                if b" 200 " not in status or b'"SendEmailSuccess"' not in payload:
                    stats["bad"] += 1
                    stats["sample"] = stats["sample"] or (status + payload).decode()[:300]
        except (OSError, asyncio.IncompleteReadError):
            stats["socket_errors"] += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(connection(i) for i in range(args.connections)))
    return {
        **stats,
        "duration_us": int((time.monotonic() - started) * 1e6),
        "p50_us": int(percentile(latencies, 50) * 1e6),
        "p99_us": int(percentile(latencies, 99) * 1e6),
    }


def load(run: Any, port: int, key: str, inboxes: Path, seconds: float, tag: str) -> Any:
    from bench.run import Load

    argv = [
        str(VENV_PYTHON), str(BENCH / "sending.py"), "load", "--port", str(port), "--key",
        key, "--inboxes", str(inboxes), "--seconds", str(seconds), "--tag", tag,
        "--connections", str(run.args.connections),
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if not line.startswith("BENCHJSON "):
        raise RuntimeError(f"B11 load failed: {out.stdout[-500:]} {out.stderr[-800:]}")
    data = json.loads(line[len("BENCHJSON ") :])
    return Load(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        requests=data["requests"],
        bad=data["bad"],
        socket_errors=data["socket_errors"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        sample=data["sample"],
    )


# --- B11 ------------------------------------------------------------------------------------


async def admin_sql(url: str, sql: str, *values: Any) -> Any:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=10)
    try:
        return await connection.fetchrow(sql, *values)
    finally:
        await connection.close()


# Before every B11 load (each side's warm-up and every round), the same statements for both
# sides: what the last load queued is counted (rows and distinct Message-IDs, to hold against
# the successes the load generator saw), then the outbox and the daily counts are emptied, so
# that neither the daily limit (50 per inbox) nor inboxd's per-minute rate (60 per inbox,
# counted over the outbox's rows) refuses a send however fast the machine is: one load would
# need over 50 sends per inbox (30,000 over 600 inboxes in a 2 s round: 15,000 req/s) to meet
# either, and if one did, ``b11_problems`` voids the figure rather than quote it.
B11_COUNT_SQL = (
    "SELECT count(*) AS rows, count(DISTINCT message_id) AS ids FROM outgoing_message "
    "WHERE workspace_id = $1"
)
B11_RESET_SQL = "TRUNCATE outgoing_message, outgoing_attachment, send_count"


async def b11_reset(url: str, workspace: str) -> dict[str, int]:
    """What the last load queued in ``workspace``; then the outbox and the counts emptied."""
    import asyncpg

    connection = await asyncpg.connect(url, timeout=10)
    try:
        counted = await connection.fetchrow(B11_COUNT_SQL, uuid.UUID(workspace))
        await connection.execute(B11_RESET_SQL)
        return {"rows": counted["rows"], "ids": counted["ids"]}
    finally:
        await connection.close()


def b11_problems(name: str, loads: list[Any], queued: list[dict[str, int]]) -> list[str]:
    """Why a side's answers cannot be quoted: any answer but SendEmailSuccess (a daily limit,
    a rate limit, an error: each one cheaper or dearer than a send, so the rate would measure
    something else), a socket error, or rows queued that differ from the successes seen."""
    problems = []
    bad = sum(x.bad for x in loads)
    errors = sum(x.socket_errors for x in loads)
    if bad:
        sample = next((x.sample for x in loads if x.sample), "").replace("\n", " ")
        problems.append(f"{name}: {bad} answers not SendEmailSuccess, e.g. {sample}")
    if errors:
        problems.append(f"{name}: {errors} socket errors")
    for i, (part, rows) in enumerate(zip(loads, queued, strict=True)):
        ok = part.requests - part.bad
        if rows["rows"] != ok or rows["ids"] != rows["rows"]:
            problems.append(
                f"{name} load {i}: {ok} successes but {rows['rows']} rows queued "
                f"({rows['ids']} distinct Message-IDs)"
            )
    return problems


def phase_accept(run: Any, pg: Any) -> None:
    from bench.receiving import create_many
    from bench.run import (
        PASSWORD,
        Row,
        fmt,
        inboxd_env,
        make_workspace,
        profile,
        start_floor,
        start_inboxd,
    )
    from tests.support.mailservers import closed_port

    args = run.args
    n = args.b11_inboxes
    print(f"B11: sendEmail accepted into the outbox, across {n} inboxes per side", flush=True)
    url = pg.scratch()  # its own: no worker may take these messages
    server, port = start_inboxd(run, "inboxd-send-accept", inboxd_env(run, url, worker=False))
    floor, floor_port = start_floor(run, "floor-send", "raw_send.py", url)
    ports = (closed_port(), closed_port())
    sides = {}
    for name, (proc, side_port) in (("inboxd", (server, port)), ("floor", (floor, floor_port))):
        ws, key = asyncio.run(make_workspace(url, f"bench-send-{name}", 1_000_000))
        inputs = [inbox_input(f"b11-{name}-{i:04d}@bench.example.com", ports, PASSWORD)
                  for i in range(n)]  # fmt: skip
        ids = asyncio.run(create_many(port, key, inputs))
        # Verification is B4/B5's subject: these inboxes are made ACTIVE by hand.
        asyncio.run(
            admin_sql(
                url,
                "UPDATE email_inbox SET status = 'ACTIVE' WHERE workspace_id = $1",
                uuid.UUID(ws),
            )
        )
        path = run.tmp / f"b11-{name}-inboxes.txt"
        path.write_text("\n".join(ids))
        sides[name] = (proc, side_port, key, path, ws)
    rounds = max(1, args.rounds)
    slice_s = max(1.0, args.duration / rounds)
    warm: dict[str, list[Any]] = {}
    queued: dict[str, list[dict[str, int]]] = {name: [] for name in sides}
    for name, (_, side_port, key, path, ws) in sides.items():
        asyncio.run(b11_reset(url, ws))
        warm[name] = [load(run, side_port, key, path, args.warmup, f"w{name[0]}")]
        queued[name].append(asyncio.run(b11_reset(url, ws)))
    parts: dict[str, list[Any]] = {name: [] for name in sides}
    cpu = dict.fromkeys(sides, 0.0)
    for r in range(rounds):
        for name, (proc, side_port, key, path, ws) in sides.items():
            spy = profile(run, proc, f"B11-{name}-r{r}", slice_s) if r == 0 else None
            before = cpu_seconds(proc.pid)
            parts[name].append(load(run, side_port, key, path, slice_s, f"m{name[0]}{r}"))
            cpu[name] += cpu_seconds(proc.pid) - before
            queued[name].append(asyncio.run(b11_reset(url, ws)))
            if spy is not None:
                spy.wait(slice_s + 30)
    rps = {}
    problems = []
    for name, loads in parts.items():
        requests = sum(x.requests for x in loads)
        bad = sum(x.bad for x in loads)
        errors = sum(x.socket_errors for x in loads)
        rps[name] = requests / (slice_s * rounds)
        problems += b11_problems(name, warm[name] + loads, queued[name])
        run.detail(
            f"B11 {name}: {rps[name]:,.0f} req/s (rounds: "
            + ", ".join(f"{x.rps:,.0f}" for x in loads)
            + f"), {requests} requests, server CPU {cpu[name] * 1000 / max(1, requests):.2f} "
            f"ms/request, p50 {percentile([x.p50_ms for x in loads], 50):.1f} ms, p99 "
            f"{max(x.p99_ms for x in loads):.1f} ms, bad answers {bad}, socket errors {errors}"
        )
    rows = {name: sum(q["rows"] for q in queued[name]) for name in sides}
    run.detail(
        f"B11: outgoing_message rows queued (warm-up included), each load's checked against its "
        f"successes and its distinct Message-IDs: inboxd {rows['inboxd']}, floor {rows['floor']}"
    )
    ratio = rps["inboxd"] / rps["floor"] if rps["floor"] else float("nan")
    for problem in problems:
        run.detail(f"B11 INVALID: {problem[:400]}")
    if problems:
        print("B11 IS NOT VALID: the ratio is not quoted (see B11 INVALID above)", flush=True)
    run.rows.append(
        Row(
            "B11 sendEmail accepted into the outbox (req/s)",
            fmt(rps["inboxd"]),
            fmt(rps["floor"]),
            "INVALID" if problems else f"{ratio:.2f}x",
            ">= 0.50x",
            ratio >= 0.5 and not problems,
        )
    )
    run.stop_all()


# --- B12, B13 -------------------------------------------------------------------------------


async def make_sent_folders(imap_port: int, ca: Path, names: list[str], password: str) -> None:
    """Each mailbox gets a "Sent" folder (pymap starts with INBOX only), as real ones have:
    inboxd files a copy of every sent message there."""
    from bench.receiving import appender

    for name in names:
        client = await appender(imap_port, ca, name, password)
        response = await client.create("Sent")
        if response.result != "OK":
            raise RuntimeError(f"CREATE Sent for {name}: {response}")
        await client.logout()


class Sender:
    """sendEmail over one keep-alive HTTP/1.1 connection (bench.loadgen.post)."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.streams: Any = None

    async def send(self, inbox_id: str, subject: str) -> dict:
        from bench.loadgen import post

        if self.streams is None:
            self.streams = await asyncio.open_connection(HOST, self.port)
        body = dumps({"query": SEND_B11, "variables": {"inboxId": inbox_id,
                                                        "input": send_input(subject)}})  # fmt: skip
        status, payload = await post(*self.streams, HOST, self.port, "/graphql", self.key,
                                     body.encode())  # fmt: skip
        answer = json.loads(payload)
        sent = (answer.get("data") or {}).get("sendEmail") or {}
        if b" 200 " not in status or sent.get("__typename") != "SendEmailSuccess":
            raise RuntimeError(f"sendEmail refused: {status!r} {payload[:300]!r}")
        return dict(sent["outgoingMessage"])

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


async def b12_latencies(
    port: int, key: str, inboxes: list[str], floor_users: list[str], smtp_port: int,
    ca: Path, password: str, count: int,
) -> tuple[list[float], list[float], int, dict[str, list[float]]]:  # fmt: skip
    """``count`` messages each way, taking turns: sendEmail until the subscriber sees SENT,
    and the floor's direct send. (inboxd ms, floor ms, messages not SENT)."""
    import websockets

    from bench.floors.smtp_send import send_one

    context = ssl.create_default_context(cafile=str(ca))
    sender = Sender(port, key)
    ours: list[float] = []
    theirs: list[float] = []
    not_sent = 0
    steps: dict[str, list[float]] = {}
    async with websockets.connect(
        f"ws://{HOST}:{port}/graphql", subprotocols=["graphql-transport-ws"], compression=None
    ) as ws:
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}
        await ws.send(dumps(init))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
        for i in range(count):
            started = time.perf_counter()
            queued = await sender.send(inboxes[i % len(inboxes)], f"B12 {i}")
            seen = {"sendEmail answered": time.perf_counter()}
            sub = f"s{i}"
            payload = {"query": FOLLOW, "variables": {"id": queued["id"]}}
            await ws.send(dumps({"id": sub, "type": "subscribe", "payload": payload}))
            state = None
            while state not in ("SENT", "FAILED"):
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if message.get("type") == "ping":
                    await ws.send(dumps({"type": "pong"}))
                    continue
                if message.get("id") != sub:
                    continue
                if message["type"] != "next":
                    raise RuntimeError(f"subscription ended before SENT: {message}")
                state = message["payload"]["data"]["outgoingMessage"]["state"]
                seen.setdefault(f"{state} seen", time.perf_counter())
            for name, at in seen.items():
                steps.setdefault(name, []).append((at - started) * 1000)
            ours.append((time.perf_counter() - started) * 1000)
            not_sent += state != "SENT"
            await ws.send(dumps({"id": sub, "type": "complete"}))
            started = time.perf_counter()
            who = floor_users[i % len(floor_users)]
            await send_one(smtp_port, context, who, password, "rita@receiver.example.com",
                           f"B12 floor {i}")  # fmt: skip
            theirs.append((time.perf_counter() - started) * 1000)
    sender.close()
    return ours, theirs, not_sent, steps


async def b13_burst(port: int, key: str, inboxes: list[str], count: int, connections: int) -> dict:
    """``count`` sendEmail over ``connections`` connections, round robin over ``inboxes``."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    ids: list[str] = []

    async def connection() -> None:
        sender = Sender(port, key)
        try:
            while not queue.empty():
                i = queue.get_nowait()
                queued = await sender.send(inboxes[i % len(inboxes)], f"B13 {i}")
                ids.append(queued["messageId"])
        finally:
            sender.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return {"message_ids": ids, "accepted_seconds": time.perf_counter() - started}


# Sends each side makes, untimed, before B13 is measured.
B13_WARMUP = 100

OUTBOX_STATES = (
    "SELECT count(*) FILTER (WHERE state = 'SENT') AS sent, "
    "count(*) FILTER (WHERE state = 'FAILED') AS failed, "
    "count(*) FILTER (WHERE sent_folder IS NOT NULL) AS filed, "
    "coalesce(sum(attempts), 0) AS attempts, count(*) AS total "
    "FROM outgoing_message WHERE workspace_id = $1"
)


# What the measured wait polls every 20 ms: messages not yet final, read through the workers'
# own partial indexes (a few rows), not a count over the whole table, which would load the
# Postgres that inboxd shares with this poll (the floor's wait polls nothing).
OUTBOX_OPEN = (
    "SELECT (SELECT count(*) FROM outgoing_message WHERE state = 'QUEUED') "
    "+ (SELECT count(*) FROM outgoing_message WHERE state = 'SENDING') AS open, "
    "(SELECT count(*) FROM outgoing_message WHERE copy_due_at IS NOT NULL) AS copies_due"
)


async def wait_open(url: str, done: Any, within: float) -> float:
    """Poll OUTBOX_OPEN until ``done(row)``; the seconds it took."""
    import asyncpg

    started = time.perf_counter()
    connection = await asyncpg.connect(url, timeout=10)
    try:
        while True:
            row = dict(await connection.fetchrow(OUTBOX_OPEN))
            if done(row) or time.perf_counter() - started > within:
                return time.perf_counter() - started
            await asyncio.sleep(0.02)
    finally:
        await connection.close()


async def wait_outbox(url: str, workspace: str, done: Any, within: float) -> tuple[dict, float]:
    import asyncpg

    started = time.perf_counter()
    connection = await asyncpg.connect(url, timeout=10)
    try:
        while True:
            row = dict(await connection.fetchrow(OUTBOX_STATES, uuid.UUID(workspace)))
            if done(row) or time.perf_counter() - started > within:
                return row, time.perf_counter() - started
            await asyncio.sleep(0.02)
    finally:
        await connection.close()


def floor_burst(run: Any, sink: Sink, ca: Path, users: list[str], count: int) -> dict:
    from bench.run import PASSWORD

    argv = [
        str(VENV_PYTHON), str(BENCH / "floors" / "smtp_send.py"), "burst", "--port",
        str(sink.port), "--ca-file", str(ca), "--password", PASSWORD, "--users",
        ",".join(users), "--count", str(count), "--concurrency",
        str(run.args.send_concurrency),
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"B13 floor failed: {out.stderr[-800:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def tally(sink: Sink, expected: list[str]) -> tuple[int, int, int]:
    """(received, duplicates, lost) of ``expected`` Message-IDs at the server since reset."""
    got = sink.ask("tally")
    counts = got["counts"]
    duplicates = sum(max(0, counts.get(m, 0) - 1) for m in expected)
    lost = sum(1 for m in expected if counts.get(m, 0) == 0)
    return got["received"], duplicates, lost


def b13_inboxd(run: Any, ctx: dict, inboxes: list[str], label: str) -> tuple[float, bool]:
    """One B13 burst through inboxd; (seconds until all SENT, nothing lost or doubled)."""
    args, sink, imap, server = run.args, ctx["sink"], ctx["imap"], ctx["server"]
    count = args.b13_count
    sink.ask("reset")
    mail_before = cpu_seconds(sink.proc.pid) + cpu_seconds(imap.proc.pid)
    inboxd_before = cpu_seconds(server.pid)
    pg_before = ctx["pg"].cpu_seconds()
    own = resource.getrusage(resource.RUSAGE_SELF)
    url, ws_id = ctx["url"], ctx["workspace"]
    before = asyncio.run(wait_outbox(url, ws_id, lambda r: True, 1))[0]
    from bench.run import profile

    spy = profile(run, server, f"B13-inboxd{label.replace(' ', '-').replace(',', '')}", 10)
    began = time.perf_counter()
    burst = asyncio.run(b13_burst(ctx["port"], ctx["key"], inboxes, count, args.connections))
    accepted = asyncio.run(wait_outbox(url, ws_id, lambda r: True, 1))[0]
    # Every sendEmail was answered (its row QUEUED or further): none open means all final.
    asyncio.run(wait_open(url, lambda r: r["open"] == 0, 600))
    seconds = time.perf_counter() - began
    asyncio.run(wait_open(url, lambda r: r["copies_due"] == 0, 120))
    filed_seconds = time.perf_counter() - began
    row, _ = asyncio.run(wait_outbox(url, ws_id, lambda r: True, 1))
    filed = row
    used = {
        "inboxd": cpu_seconds(server.pid) - inboxd_before,
        "mail servers": cpu_seconds(sink.proc.pid) + cpu_seconds(imap.proc.pid) - mail_before,
    }
    if pg_before is not None:
        used["Postgres"] = ctx["pg"].cpu_seconds() - pg_before
    after = resource.getrusage(resource.RUSAGE_SELF)  # sendEmail's client, and the polling
    used["load generator"] = after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime
    received, dup, lost = tally(sink, burst["message_ids"])
    sent = row["sent"] - before["sent"]
    failed = row["failed"] - before["failed"]
    attempts = row["attempts"] - before["attempts"]
    copies = filed["filed"] - before["filed"]
    if spy is not None:
        spy.wait(60)
    run.detail(
        f"B13 inboxd{label}: {seconds:.2f} s until all {count} SENT or FAILED (the {count} "
        f"sendEmail took {burst['accepted_seconds']:.2f} s, when "
        f"{accepted['sent'] - before['sent']} were SENT), SENT {sent}, FAILED {failed}, "
        f"attempts {attempts}; Sent copies filed {copies}"
        + (f", the last {filed_seconds:.2f} s after the start" if copies else "")
        + f"; server received {received}, duplicates {dup}, lost {lost}; CPU seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in used.items())
    )
    clean = dup == 0 and lost == 0 and failed == 0 and sent == count
    ctx.setdefault("counts", []).append((dup, lost))
    return seconds, clean


def phase_deliver(run: Any, pg: Any, certdir: Path, ca: Path) -> None:
    from bench.mailserver import user
    from bench.receiving import ACTIVE_IN_WORKSPACE, create_many, wait_sql
    from bench.run import PASSWORD, MailServer, Row, fmt, inboxd_env, make_workspace, start_inboxd

    args = run.args
    figures = args.only
    b12_n, b13_n = 10, args.b13_inboxes
    # users: 0..9 B12 inboxd, 10..19 B12 floor, then B13's inboxes (the floor logs in as
    # them too), then B13's inboxes whose provider files sent mail itself (no Sent copy).
    users_needed = 20 + 2 * b13_n
    sink = Sink(run, certdir, users_needed, PASSWORD)
    imap = MailServer(run, "imap", certdir, users_needed)
    ports = (sink.port, imap.port)
    asyncio.run(make_sent_folders(imap.port, ca, [user(i) for i in range(users_needed)], PASSWORD))
    url = pg.scratch()
    env = {
        **inboxd_env(run, url, worker=True, ca_file=str(ca)),
        "INBOXD_SEND_CONCURRENCY": str(args.send_concurrency),
    }
    server, port = start_inboxd(run, "inboxd-sending", env)
    ws_id, key = asyncio.run(make_workspace(url, "bench-sending", 1_000_000))
    started = time.monotonic()
    wanted = list(range(b12_n)) + list(range(20, 20 + 2 * b13_n))
    inputs = [inbox_input(user(i), ports, PASSWORD) for i in wanted]
    ids = asyncio.run(create_many(port, key, inputs))
    asyncio.run(
        wait_sql(url, ACTIVE_IN_WORKSPACE, (uuid.UUID(ws_id),), lambda v: v >= len(ids), 300)
    )
    run.detail(
        f"B12/B13: {len(ids)} inboxes created and verified in {time.monotonic() - started:.1f} s"
    )
    b12_inboxes, b13_inboxes, no_copy = ids[:b12_n], ids[b12_n : b12_n + b13_n], ids[-b13_n:]
    ctx = {"sink": sink, "imap": imap, "server": server, "url": url, "workspace": ws_id,
           "port": port, "key": key, "pg": pg}  # fmt: skip
    if "B12" in figures:
        samples, warm = args.b12_samples, args.b12_warmup
        print(f"B12: sendEmail -> SENT seen by a subscriber, {samples} messages", flush=True)
        ours, theirs, not_sent, steps = asyncio.run(
            b12_latencies(
                port, key, b12_inboxes, [user(10 + i) for i in range(10)], sink.port, ca,
                PASSWORD, samples + warm,
            )
        )  # fmt: skip
        ours, theirs = ours[warm:], theirs[warm:]
        for name, values in (("inboxd", ours), ("floor", theirs)):
            run.detail(
                f"B12 {name}: {len(values)} messages, p50 {percentile(values, 50):.1f} ms, p90 "
                f"{percentile(values, 90):.1f} ms, p99 {percentile(values, 99):.1f} ms, max "
                f"{max(values):.1f} ms" + (f", not SENT {not_sent}" if name == "inboxd" else "")
            )
        run.detail(
            "B12 inboxd, median time after sendEmail was sent: "
            + ", ".join(
                f"{name} {percentile(values[warm:], 50):.1f} ms"
                for name, values in sorted(steps.items(), key=lambda kv: percentile(kv[1], 50))
            )
        )
        o50, f50 = percentile(ours, 50), percentile(theirs, 50)
        o99, f99 = percentile(ours, 99), percentile(theirs, 99)
        run.rows.append(
            Row("B12 sendEmail -> SENT p50 (ms)", fmt(o50, 1), fmt(f50, 1), f"{o50 / f50:.2f}x",
                "<= 1.50x", o50 <= 1.5 * f50 and not_sent == 0)
        )  # fmt: skip
        run.rows.append(
            Row("B12 sendEmail -> SENT p99 (ms)", fmt(o99, 1), fmt(f99, 1), f"{o99 / f99:.2f}x",
                "-", None if not_sent == 0 else False)
        )  # fmt: skip
        # The Sent copies of B12 are filed after SENT: let them finish before B13 starts.
        asyncio.run(wait_outbox(url, ws_id, lambda r: r["filed"] >= r["sent"], 60))
    if "B13" in figures:
        count = args.b13_count
        print(f"B13: {count} sends across {b13_n} inboxes until all SENT", flush=True)
        # Both sides warm up first, untimed, as B11 and B12 do: WARMUP sends, the floor's
        # from B12's floor users, inboxd's through B12's inboxes (their daily limit allows it).
        floor_burst(run, sink, ca, [user(10 + i) for i in range(b12_n)], B13_WARMUP)
        asyncio.run(b13_burst(port, key, b12_inboxes, B13_WARMUP, args.connections))
        asyncio.run(wait_open(url, lambda r: r["open"] == 0 and r["copies_due"] == 0, 120))
        sink.ask("reset")
        mail_cpu = cpu_seconds(sink.proc.pid) + cpu_seconds(imap.proc.pid)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        floor = floor_burst(run, sink, ca, [user(20 + i) for i in range(b13_n)], count)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        floor_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        floor_received, floor_dup, floor_lost = tally(sink, floor["message_ids"])
        floor_mail_cpu = cpu_seconds(sink.proc.pid) + cpu_seconds(imap.proc.pid) - mail_cpu
        run.detail(
            f"B13 floor: {floor['seconds']:.2f} s for {count} messages at concurrency "
            f"{args.send_concurrency} (aiosmtplib, one session each), sent {floor['sent']}, "
            f"server received {floor_received}, duplicates {floor_dup}, lost {floor_lost}; "
            f"CPU seconds: floor {floor_cpu:.1f}, mail servers {floor_mail_cpu:.1f}"
            + (f"; failures e.g. {floor['failed']}" if floor["failed"] else "")
        )
        time.sleep(2)
        seconds, clean = b13_inboxd(run, ctx, b13_inboxes, "")
        ratio = seconds / floor["seconds"]
        run.rows.append(
            Row(f"B13 {count} sends, {b13_n} inboxes: all SENT (s)", fmt(seconds, 2),
                fmt(floor["seconds"], 2), f"{ratio:.2f}x", "<= 1.30x", ratio <= 1.3 and clean)
        )  # fmt: skip
        # The same with no Sent copy: what the APPEND costs. There is no per-inbox setting
        # for it yet; a provider that files sent mail itself gets none (set here by hand).
        time.sleep(2)
        asyncio.run(
            admin_sql(
                url,
                "UPDATE email_inbox SET provider = 'GMAIL' WHERE id = ANY($1::uuid[])",
                [uuid.UUID(i) for i in no_copy],
            )
        )
        bare, bare_clean = b13_inboxd(run, ctx, no_copy, ", no Sent copy")
        run.rows.append(
            Row("B13 same, no Sent copy (provider GMAIL) (s)", fmt(bare, 2),
                fmt(floor["seconds"], 2), f"{bare / floor['seconds']:.2f}x", "-",
                None if bare_clean else False)
        )  # fmt: skip
        dup = sum(d for d, _ in ctx["counts"])
        lost = sum(n for _, n in ctx["counts"])
        run.rows.append(
            Row("B13 duplicates / lost (counted by the SMTP server)", f"{dup} / {lost}",
                f"{floor_dup} / {floor_lost}", "-", "0 / 0", dup == 0 and lost == 0)
        )  # fmt: skip
    run.stop_all()


def phase_sending(run: Any, pg: Any, certdir: Path, ca: Path) -> None:
    if "B11" in run.args.only:
        phase_accept(run, pg)
    if run.args.only & {"B12", "B13"}:
        phase_deliver(run, pg, certdir, ca)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--b11-inboxes", type=int, default=600, help="B11 inboxes per side")
    parser.add_argument("--b12-samples", type=int, default=200)
    parser.add_argument("--b12-warmup", type=int, default=10)
    parser.add_argument("--b13-count", type=int, default=1000)
    parser.add_argument("--b13-inboxes", type=int, default=20)
    parser.add_argument(
        "--send-concurrency", type=int, default=8, help="INBOXD_SEND_CONCURRENCY, and B13's floor"
    )


def quick(args: argparse.Namespace) -> None:
    args.b11_inboxes, args.b12_samples, args.b12_warmup, args.b13_count = 200, 30, 3, 200


# --- the doc ------------------------------------------------------------------------------------


def is_sending(text: str) -> bool:
    """A row's figure or a detail line of B11, B12 or B13."""
    return text.split(" ", 1)[0].rstrip(":") in ("B11", "B12", "B13", "B12/B13")


def section(run: Any, command: str, started: Any, seconds: float) -> str:
    from bench.run import load_after, machine, table

    args = run.args
    lines = [
        MARKER,
        "",
        "Sending mail (issue 13), measured by `bench/sending.py` against aiosmtpd (STARTTLS,",
        "AUTH) and pymap (implicit TLS, a Sent folder per mailbox), each in its own process,",
        "each figure beside its floor in the same run. Receiving is off",
        "(INBOXD_RECEIVING_ENABLED=false).",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}, the whole run took "
        f"{seconds / 60:.1f} min; load average before/after: {run.load_before} / {load_after()}",
        f"- Postgres: {args.pg_kind}; inboxd: `inboxd serve` (uvloop), log level "
        f"{args.log_level}, INBOXD_SEND_CONCURRENCY={args.send_concurrency}; B11: "
        f"{args.connections} connections (bench/sending.py load, Python), {args.warmup:g} s "
        f"warm-up, then {args.duration:g} s per side in {args.rounds} alternating rounds",
        "",
        table([r for r in run.rows if is_sending(r.figure)]),
        "",
        "```",
        *[d for d in run.details if is_sending(d)],
        "```",
        "",
        SENDING_METHOD,
    ]
    return "\n".join(lines) + kept_notes()


NOTES = "### Sending notes (kept across runs)"


def kept_notes() -> str:
    """The hand-written notes at the end of the doc's sending section, kept as they were."""
    from bench.run import DOC

    text = DOC.read_text() if DOC.exists() else ""
    if MARKER not in text or NOTES not in text:
        return ""
    own = text[text.index(MARKER) :]
    end = own.find("\n## ", len(MARKER))
    own = own if end < 0 else own[:end]
    return "\n" + own[own.index(NOTES) :].rstrip("\n") + "\n" if NOTES in own else ""


SENDING_METHOD = """What each sending figure measures:

- **B11** `sendEmail` accepted into the outbox (QUEUED), over HTTP with an API key; requests
  go round robin over 600 ACTIVE inboxes per side (dailySendLimit 50, the per-minute rate at
  its default of 60; each inbox its own signature); no worker runs. Before every load (each
  side's warm-up and each round) the same statements run for both sides: the rows the last
  load queued are counted, then `outgoing_message` and `send_count` are emptied, so neither
  the daily limit nor the per-minute rate refuses a send at any machine speed. Any answer but
  SendEmailSuccess, a socket error, or a load whose rows differ from its successes (or whose
  Message-IDs repeat) marks the row INVALID instead of quoting a ratio. inboxd: validation,
  the rate check, the compose rules and a size bound, the daily count, the row with its event
  and NOTIFY, the audit row. Floor (`floors/raw_send.py`): the API-key check, then one
  transaction: the inbox read, the same `send_count` upsert, the same `outgoing_message` row,
  NOTIFY.
- **B12** `sendEmail`, then an `outgoingMessage(id)` subscription on an open
  graphql-transport-ws connection, until it shows SENT; one message at a time, round robin over
  10 inboxes. Floor (`floors/smtp_send.py send_one`): the same message (header registry, the
  signature appended) sent by aiosmtplib in a session of its own (STARTTLS, AUTH, DATA, QUIT),
  as inboxd's worker does. The two take turns after a warm-up. inboxd then also APPENDs a copy
  to the Sent folder, after SENT (not in the figure, but on the same cores).
- **B13** 1,000 `sendEmail` (32 connections) over 20 inboxes (50 each: their daily limit);
  time from the first request until all are SENT, polled in Postgres every 20 ms (the rows
  still QUEUED or SENDING, read through the workers' partial indexes). Floor: the same 1,000
  messages from the same 20 logins by aiosmtplib at the worker's concurrency
  (INBOXD_SEND_CONCURRENCY). Each side first makes 100 untimed sends (B12's inboxes; B12's
  floor users). The SMTP server counts what it received by Message-ID: a Message-ID received
  twice is a duplicate, one never received is lost. The detail lines give the CPU time of
  inboxd, the mail servers, Postgres and the load generator.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sink = sub.add_parser("smtp-sink")
    sink.add_argument("--certdir", type=Path, required=True)
    sink.add_argument("--users", type=int, default=100)
    sink.add_argument("--password", required=True)
    sink.add_argument("--max-seconds", type=float, default=3600)
    gen = sub.add_parser("load")
    gen.add_argument("--port", type=int, required=True)
    gen.add_argument("--key", required=True)
    gen.add_argument("--inboxes", required=True)
    gen.add_argument("--seconds", type=float, required=True)
    gen.add_argument("--tag", default="x")
    gen.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if args.mode == "smtp-sink":
        return smtp_sink(args)
    import uvloop

    print("BENCHJSON " + json.dumps(uvloop.run(_load(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
