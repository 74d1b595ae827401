"""B8-B10: receiving mail (issue 12), each beside its floor, against pymap over implicit TLS.

One IMAP server (bench/mailserver.py: pymap, counting its connections) and one SMTP server
(for the verification that makes an inbox ACTIVE) serve all three figures; every watched
mailbox belongs to a distinct user. inboxd runs as ``inboxd serve`` with its worker and
receiver on (INBOXD_RECEIVING_ENABLED=true here; B1-B7 keep it off).

- B8: a message APPENDed (from another session) to a watched INBOX until a ``messageReceived``
  subscriber (graphql-transport-ws) has it. Floor (floors/imap_idle.py watch): aioimaplib in
  IDLE on another user's INBOX, EXISTS then UID FETCH. Deliveries alternate inboxd / floor.
- B9: N inboxes watched by one process: RSS growth per watched inbox once all are IDLE (the
  inboxes exist and are ACTIVE before; only receiving is switched on), the connections the
  server holds, idle CPU, and B8 meanwhile. Floor (floors/imap_idle.py hold): N TLS sessions
  in IDLE on bare asyncio streams.
- B10: a backlog of M messages (every 10th with a 50 KiB attachment) taken in through the
  inbox's backfill, until all are stored; peak RSS of that inboxd process. Floor
  (floors/imap_backlog.py): UID FETCH in batches + ``email`` parse of the same mailbox.
"""

from __future__ import annotations

import asyncio
import json
import queue
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH,
    CREATE,
    HOST,
    VENV_PYTHON,
    Proc,
    cpu_seconds,
    dumps,
    percentile,
    rss_bytes,
    start,
)
from bench.mailserver import user

RECEIVED = "subscription($id: ID!) { messageReceived(inboxId: $id) { id subject messageId } }"


def command(server: Any, text: str, within: float = 600) -> dict:
    """One line to bench/mailserver.py, its JSON answer."""
    server.proc.popen.stdin.write(text.encode() + b"\n")
    server.proc.popen.stdin.flush()
    return dict(json.loads(server.proc.popen.stdout.readline()))


def receiving_env(base: dict) -> dict:
    return {
        **base,
        "INBOXD_RECEIVING_ENABLED": "true",
        "INBOXD_RECEIVING_MAX_INBOXES_PER_PROCESS": "5000",
        # The IDLE checker's second connection closes after this long unused (default 60 s):
        # shorter here so B9 reaches the steady state, one connection per quiet inbox, sooner.
        "INBOXD_RECEIVING_IDLE_CHECK_LINGER_SECONDS": "5",
    }


def inbox_input(
    email: str, ports: tuple[int, int], password: str, receiving: dict | None = None
) -> dict:
    value = {
        "email": email,
        "smtp": {"host": HOST, "port": ports[0], "security": "STARTTLS", "password": password},
        "imap": {"host": HOST, "port": ports[1], "security": "TLS", "password": password},
    }
    if receiving is not None:
        value["receiving"] = receiving
    return value


async def create_many(port: int, key: str, inputs: list[dict], connections: int = 16) -> list[str]:
    from bench.loadgen import post

    queue: asyncio.Queue[tuple[int, dict]] = asyncio.Queue()
    for item in enumerate(inputs):
        queue.put_nowait(item)
    ids: dict[int, str] = {}

    async def sender() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while not queue.empty():
                index, value = queue.get_nowait()
                body = dumps({"query": CREATE, "variables": {"input": value}}).encode()
                _, payload = await post(reader, writer, HOST, port, "/graphql", key, body)
                answer = json.loads(payload)["data"]["createEmailInbox"]
                if answer["__typename"] != "CreateEmailInboxSuccess":
                    raise RuntimeError(f"create failed: {answer}")
                ids[index] = answer["inbox"]["id"]
        finally:
            writer.close()

    await asyncio.gather(*(sender() for _ in range(min(connections, len(inputs)))))
    return [ids[i] for i in range(len(inputs))]


async def wait_sql(url: str, sql: str, args: tuple, done: Any, within: float) -> tuple[Any, float]:
    """Poll ``sql`` until ``done(value)``; the value and the seconds it took."""
    import asyncpg

    started = time.monotonic()
    connection = await asyncpg.connect(url, timeout=10)
    try:
        while True:
            value = await connection.fetchval(sql, *args)
            if done(value):
                return value, time.monotonic() - started
            if time.monotonic() - started > within:
                raise TimeoutError(f"not reached within {within} s: {sql} -> {value}")
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


IDLE_IN_WORKSPACE = (
    "SELECT count(*) FROM inbox_watch w JOIN email_inbox i ON i.id = w.inbox_id "
    "WHERE i.workspace_id = $1 AND w.state = 'IDLE' AND w.expires_at > now()"
)
ACTIVE_IN_WORKSPACE = (
    "SELECT count(*) FROM email_inbox WHERE workspace_id = $1 AND status IN ('ACTIVE', 'FAILED')"
)
STORED = "SELECT count(*) FROM message WHERE inbox_id = $1"


# --- B8: one delivery at a time --------------------------------------------------------------


def mail(to: str, subject: str) -> bytes:
    return (
        f"From: Bench <bench@sender.example.com>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@sender.example.com>\r\n"
        f"Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n\r\nHello, {subject}.\r\n"
    ).encode()


async def appender(port: int, ca: Path, name: str, password: str) -> Any:
    import aioimaplib

    client = aioimaplib.IMAP4_SSL(
        HOST, port, ssl_context=ssl.create_default_context(cafile=str(ca)), timeout=30
    )
    await client.wait_hello_from_server()
    assert (await client.login(name, password)).result == "OK"
    return client


async def append(client: Any, to: str, subject: str) -> None:
    response = await asyncio.wait_for(client.append(mail(to, subject), mailbox="INBOX"), 30)
    if response.result != "OK":
        raise RuntimeError(f"APPEND refused: {response}")


async def b8_latencies(
    port: int,
    key: str,
    inbox_id: str,
    imap_port: int,
    ca: Path,
    password: str,
    inboxd_user: str,
    floors: list[tuple[str, Proc]],
    count: int,
) -> dict[str, list[float]]:
    """``count`` deliveries to inboxd's mailbox and as many to each floor's (``floors``: the
    watching process and its user), taking turns: milliseconds from just before APPEND until
    the subscriber (or the floor) has it."""
    import websockets

    ours: list[float] = []
    theirs: dict[str, list[float]] = {name: [] for name, _, _ in floors}
    loop = asyncio.get_running_loop()
    ours_append = await appender(imap_port, ca, inboxd_user, password)
    sides = [
        (name, lines_of(proc), await appender(imap_port, ca, name_of, password), name_of)
        for name, proc, name_of in floors
    ]
    async with websockets.connect(
        f"ws://{HOST}:{port}/graphql", subprotocols=["graphql-transport-ws"], compression=None
    ) as ws:
        await ws.send(
            dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}})
        )
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
        await ws.send(
            dumps(
                {
                    "id": "r",
                    "type": "subscribe",
                    "payload": {"query": RECEIVED, "variables": {"id": inbox_id}},
                }
            )
        )
        await asyncio.sleep(0.5)  # the subscription is registered before the first delivery
        for i in range(count):
            subject = f"b8-{i}-{uuid.uuid4().hex[:8]}"
            started = time.monotonic()
            await append(ours_append, inboxd_user, subject)
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message.get("type") == "ping":
                    await ws.send(dumps({"type": "pong"}))
                    continue
                if message.get("id") == "r" and message["type"] != "next":
                    raise RuntimeError(f"subscription ended: {message}")
                got = message["payload"]["data"]["messageReceived"]["subject"]
                if got == subject:
                    break
            ours.append((time.monotonic() - started) * 1000)
            for name, lines, client, to in sides:
                started = time.monotonic()
                await append(client, to, subject)
                # Bounded in its thread too: asyncio.run waits for executor threads at exit.
                text = await loop.run_in_executor(None, lines.get, True, 30)
                if not text.startswith("GOT "):
                    raise RuntimeError(f"{name} said {text!r}")
                theirs[name].append((json.loads(text[4:])["at"] - started) * 1000)
    for client in (ours_append, *(side[2] for side in sides)):
        await client.logout()
    return {"inboxd": ours, **theirs}


_LINES: dict[int, queue.Queue[str]] = {}


def lines_of(proc: Proc) -> queue.Queue[str]:
    """The process's stdout lines, read by a daemon thread (one per process)."""
    if proc.pid not in _LINES:
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in proc.popen.stdout:
                lines.put(line.decode().strip())

        threading.Thread(target=read, daemon=True).start()
        _LINES[proc.pid] = lines
    return _LINES[proc.pid]


def start_floor_watch(
    run: Any, imap_port: int, ca: Path, password: str, name: str, steps: str
) -> Proc:
    proc = start(
        f"floor-imap-watch-{steps}",
        [
            str(VENV_PYTHON),
            str(BENCH / "floors" / "imap_idle.py"),
            "watch",
            "--port",
            str(imap_port),
            "--ca-file",
            str(ca),
            "--password",
            password,
            "--user",
            name,
            "--steps",
            steps,
        ],
        log=run.tmp / f"floor-imap-watch-{steps}.log",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    run.procs.append(proc)
    line = proc.popen.stdout.readline().decode()
    if not line.startswith("READY"):
        raise RuntimeError(f"floor watch did not start: {line!r}; see {proc.log}")
    return proc


# --- sampling -----------------------------------------------------------------------------------


class PeakRss:
    """RSS of ``pid`` sampled every 50 ms in a thread; ``peak`` the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(2)
        return self.peak


def idle_cpu(pid: int, seconds: float) -> float:
    """Share of one core ``pid`` used over ``seconds`` (percent)."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started) * 100


# --- the phase ----------------------------------------------------------------------------------


def b8_rows(run: Any, label: str, ours: list[float], theirs: list[float]) -> None:
    from bench.run import Row, fmt

    o50, o99 = percentile(ours, 50), percentile(ours, 99)
    run.detail(
        f"B8 inboxd{label}: {len(ours)} messages, p50 {o50:.1f} ms, p90 "
        f"{percentile(ours, 90):.1f} ms, p99 {o99:.1f} ms, max {max(ours):.1f} ms"
    )
    if theirs:
        f50, f99 = percentile(theirs, 50), percentile(theirs, 99)
        run.detail(
            f"B8 floor{label}: {len(theirs)} messages, p50 {f50:.1f} ms, p90 "
            f"{percentile(theirs, 90):.1f} ms, p99 {f99:.1f} ms, max {max(theirs):.1f} ms"
        )
        run.rows.append(
            Row(
                f"B8 APPEND -> messageReceived p50{label} (ms)",
                fmt(o50, 1),
                fmt(f50, 1),
                f"{o50 / f50:.2f}x",
                "<= 1.50x",
                o50 <= 1.5 * f50,
            )
        )
    run.rows.append(
        Row(
            f"B8 APPEND -> messageReceived p99{label} (ms)",
            fmt(o99, 1),
            fmt(percentile(theirs, 99), 1) if theirs else "-",
            f"{o99 / percentile(theirs, 99):.2f}x" if theirs else "-",
            "<= 1,000 ms",
            o99 <= 1000,
        )
    )


def floor_hold(
    run: Any, imap_port: int, ca: Path, password: str, first: int, count: int, loop: str
) -> Any:
    proc = start(
        "floor-imap-hold",
        [
            str(VENV_PYTHON),
            str(BENCH / "floors" / "imap_idle.py"),
            "hold",
            "--port",
            str(imap_port),
            "--ca-file",
            str(ca),
            "--password",
            password,
            "--first-user",
            str(first),
            "--count",
            str(count),
            "--loop",
            loop,
        ],
        log=run.tmp / f"floor-imap-hold-{loop}.log",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    run.procs.append(proc)
    line = proc.popen.stdout.readline().decode()
    if not line.startswith("READY "):
        raise RuntimeError(f"floor hold failed: {line!r}; see {proc.log}")
    ready = json.loads(line[6:])
    ready["pid"] = proc.pid
    ready["proc"] = proc
    return ready


def phase_receiving(run: Any, pg: Any, certdir: Path, ca: Path) -> None:
    from bench.run import (
        PASSWORD,
        MailServer,
        Row,
        fmt,
        inboxd_env,
        make_workspace,
        start_inboxd,
    )

    args = run.args
    figures = args.only
    n = args.b9_inboxes
    # users: 0 B8 inboxd, 1 B8 floor, 2 B10 backlog, 3 B8 floor with inboxd's steps, 10.. B9
    smtp = MailServer(run, "smtp", certdir, n + 10)
    imap = MailServer(run, "imap", certdir, n + 10)
    ports = (smtp.port, imap.port)
    url = pg.scratch()
    base = inboxd_env(run, url, worker=True, ca_file=str(ca))
    ws_b8, key = asyncio.run(make_workspace(url, "bench-receiving-b8", 1_000_000))
    server, port = start_inboxd(run, "inboxd-receiving", receiving_env(base))
    [b8_inbox] = asyncio.run(create_many(port, key, [inbox_input(user(0), ports, PASSWORD)]))
    _, took = asyncio.run(
        wait_sql(url, IDLE_IN_WORKSPACE, (uuid.UUID(ws_b8),), lambda v: v >= 1, 60)
    )
    run.detail(f"B8 inbox created and IDLE in {took:.1f} s")
    floor = start_floor_watch(run, imap.port, ca, PASSWORD, user(1), "floor")
    # The floor sending inboxd's IMAP commands too (and parsing): what of inboxd's time is
    # IMAP round trips, what is the rest (Postgres, the event, the websocket).
    steps = start_floor_watch(run, imap.port, ca, PASSWORD, user(3), "inboxd")
    sides = [("floor", floor, user(1)), ("inboxd's IMAP steps", steps, user(3))]

    def b8(samples: int, label: str) -> None:
        got = asyncio.run(
            b8_latencies(
                port, key, b8_inbox, imap.port, ca, PASSWORD, user(0), sides,
                samples + args.b8_warmup,
            )
        )  # fmt: skip
        warm = args.b8_warmup
        b8_rows(run, label, got["inboxd"][warm:], got["floor"][warm:])
        also = got["inboxd's IMAP steps"][warm:]
        run.detail(
            f"B8 the floor with inboxd's IMAP command (UID FETCH of the next 20 UIDs: size, "
            f"flags, first 64 KiB) and parse{label}: p50 {percentile(also, 50):.1f} ms, p99 "
            f"{percentile(also, 99):.1f} ms"
        )

    if "B8" in figures:
        print(f"B8: {args.b8_samples} messages APPENDed -> messageReceived", flush=True)
        b8(args.b8_samples, "")
    if "B9" in figures:
        print(f"B9: {n} inboxes watched by one process", flush=True)
        ws_b9, key_b9 = asyncio.run(make_workspace(url, "bench-receiving-b9", 1_000_000))
        inputs = [inbox_input(user(10 + i), ports, PASSWORD, {"enabled": False}) for i in range(n)]
        started = time.monotonic()
        asyncio.run(create_many(port, key_b9, inputs))
        asyncio.run(wait_sql(url, ACTIVE_IN_WORKSPACE, (uuid.UUID(ws_b9),), lambda v: v >= n, 600))
        run.detail(f"B9: {n} inboxes created and verified in {time.monotonic() - started:.1f} s")
        time.sleep(3)
        conns_before = command(imap, "connections")["open"]
        rss_before = rss_bytes(server.pid)
        asyncio.run(
            admin_sql(
                url,
                "UPDATE email_inbox SET receiving_enabled = true WHERE workspace_id = $1",
                uuid.UUID(ws_b9),
            )
        )
        started = time.monotonic()
        peak = PeakRss(server.pid)
        cpu_before = cpu_seconds(server.pid)
        idle, took = asyncio.run(
            wait_sql(url, IDLE_IN_WORKSPACE, (uuid.UUID(ws_b9),), lambda v: v >= n, 600)
        )
        cpu_to_idle = cpu_seconds(server.pid) - cpu_before
        # Steady state: the checkers' second connections have lingered out (or 120 s passed).
        settle = time.monotonic() + 120
        while command(imap, "connections")["open"] > conns_before + n and (
            time.monotonic() < settle
        ):
            time.sleep(1)
        time.sleep(2)
        peak_rss = peak.stop()
        rss_after = rss_bytes(server.pid)
        conns = command(imap, "connections")
        per_inbox = (rss_after - rss_before) / n / 1024
        extra = conns["open"] - conns_before
        run.detail(
            f"B9 inboxd: {idle} of {n} IDLE {took:.1f} s after receiving was switched on "
            f"(the next receiver tick claims them; CPU {cpu_to_idle:.1f} s to get there), RSS "
            f"{rss_before / 2**20:.0f} MiB -> {rss_after / 2**20:.0f} MiB (peak "
            f"{peak_rss / 2**20:.0f} MiB), {per_inbox:.1f} KiB per watched inbox; IMAP "
            f"connections the server holds: {conns_before} -> {conns['open']} (+{extra}, "
            f"{extra / n:.2f} per inbox), {per_inbox * n / max(1, extra):.1f} KiB per connection"
        )
        cpu = idle_cpu(server.pid, args.b9_idle_seconds)
        run.detail(f"B9 inboxd idle CPU over {args.b9_idle_seconds:g} s: {cpu:.2f}% of a core")
        if "B8" in figures:
            b8(args.b9_b8_samples, f", {n} watched")
        large = b9_large_message(run, url, server, imap, uuid.UUID(ws_b9), n)
        server.stop()
        time.sleep(2)
        hold = floor_hold(run, imap.port, ca, PASSWORD, 10, n, "uvloop")
        time.sleep(3)
        floor_after = rss_bytes(hold["pid"])
        floor_per = (floor_after - hold["rss_before"]) / hold["connected"] / 1024
        conns_floor = command(imap, "connections")["open"]
        floor_cpu = idle_cpu(hold["pid"], min(10.0, args.b9_idle_seconds))
        run.detail(
            f"B9 floor (bare asyncio streams on uvloop, implicit TLS, LOGIN/EXAMINE/IDLE): "
            f"{hold['connected']} sessions in {hold['seconds']:.1f} s"
            + (f" (failures {hold['failures']})" if hold["failures"] else "")
            + f", RSS {hold['rss_before'] / 2**20:.0f} MiB -> {floor_after / 2**20:.0f} MiB, "
            f"{floor_per:.1f} KiB per session; server connections now {conns_floor}; idle CPU "
            f"{floor_cpu:.2f}%"
        )
        hold["proc"].stop()
        # The same floor on asyncio's own loop (what `inboxd worker` runs on): its SSLProtocol
        # allocates and zero-fills a 256 KiB read buffer per connection (max_size, 3.11+);
        # uvloop's is malloc'd and only the pages a read touches become resident.
        time.sleep(2)
        plain = floor_hold(run, imap.port, ca, PASSWORD, 10, n, "asyncio")
        time.sleep(3)
        plain_per = (rss_bytes(plain["pid"]) - plain["rss_before"]) / plain["connected"] / 1024
        plain["proc"].stop()
        run.detail(
            f"B9 floor on asyncio's default loop: {plain['connected']} sessions, "
            f"{plain_per:.1f} KiB per session"
        )
        run.rows.append(
            Row(
                f"B9 RSS per watched inbox, N={n:,} (KiB)",
                fmt(per_inbox, 1),
                fmt(floor_per, 1),
                f"+{per_inbox - floor_per:.1f} KiB",
                "<= floor + 16 KiB",
                per_inbox <= floor_per + 16 and idle >= n,
            )
        )
        if large is not None:
            run.rows.append(
                Row(
                    f"B9 RSS growth per inbox after one {args.b9_large_kib:,} KiB message "
                    f"each, {large[0]} inboxes (KiB)",
                    fmt(large[1], 1),
                    "-",
                    "-",
                    "-",
                    None,
                )
            )
        run.rows.append(
            Row(
                "B9 the floor's KiB per session: uvloop / asyncio loop",
                "-",
                f"{floor_per:.1f} / {plain_per:.1f}",
                "-",
                "-",
                None,
            )
        )
        run.rows.append(
            Row(
                "B9 IMAP connections per watched inbox (server count)",
                f"{extra / n:.2f}",
                "1.00",
                "-",
                "-",
                None,
            )
        )
        run.rows.append(
            Row(
                f"B9 idle CPU, {n:,} watched (% of a core)",
                f"{cpu:.2f}",
                f"{floor_cpu:.2f}",
                "-",
                "<= 2%",
                cpu <= 2.0,
            )
        )
    server.stop()
    floor.stop()
    steps.stop()
    if "B10" in figures:
        # A database of its own: B8's and B9's inboxes would be watched by B10's process too.
        url = pg.scratch()
        phase_backlog(run, url, inboxd_env(run, url, worker=True, ca_file=str(ca)), imap, ports, ca)
    run.stop_all()


def b9_large_message(
    run: Any, url: str, server: Proc, imap: Any, workspace: uuid.UUID, n: int
) -> tuple[int, float] | None:
    """One large message to each of the first --b9-large watched inboxes: how much RSS each
    session keeps once it has read one (TLS buffers grow with the largest read)."""
    count, kib = min(n, run.args.b9_large), run.args.b9_large_kib
    if count <= 0:
        return None
    before = rss_bytes(server.pid)
    started = time.monotonic()
    stored = 0
    for i in range(count):
        # One at a time: what stays is what each session keeps, not the peak of many
        # messages parsed at once (the heap keeps its high-water mark).
        command(imap, f"fill {user(10 + i)} 1 1 {kib}")
        stored, _ = asyncio.run(
            wait_sql(
                url,
                "SELECT count(*) FROM message m JOIN email_inbox i ON i.id = m.inbox_id "
                "WHERE i.workspace_id = $1",
                (workspace,),
                lambda v, i=i: v >= i + 1,
                60,
            )
        )
    seconds = time.monotonic() - started
    time.sleep(5)
    after = rss_bytes(server.pid)
    per = (after - before) / count / 1024
    run.detail(
        f"B9 inboxd: one {kib} KiB message to each of {count} watched inboxes, {stored} stored "
        f"in {seconds:.1f} s; RSS {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB, "
        f"{per:.1f} KiB more per inbox that received one"
    )
    return count, per


async def admin_sql(url: str, sql: str, *values: Any) -> None:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(sql, *values)
    finally:
        await connection.close()


def phase_backlog(run: Any, url: str, base: dict, imap: Any, ports: tuple, ca: Path) -> None:
    from bench.run import PASSWORD, Row, fmt, make_workspace, start_inboxd

    args = run.args
    m, every, kib = args.b10_messages, 10, 50
    name = user(2)
    print(f"B10: a backlog of {m} messages", flush=True)
    started = time.monotonic()
    command(imap, f"fill {name} {m} {every} {kib}")
    run.detail(
        f"B10: {m} messages (every {every}th with a {kib} KiB attachment) put into {name}'s "
        f"INBOX in {time.monotonic() - started:.1f} s"
    )
    out = subprocess.run(
        [
            str(VENV_PYTHON),
            str(BENCH / "floors" / "imap_backlog.py"),
            "--port",
            str(imap.port),
            "--ca-file",
            str(ca),
            "--user",
            name,
            "--password",
            PASSWORD,
            "--batch",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"backlog floor failed: {out.stderr[-800:]}")
    floor = json.loads(out.stdout.strip().splitlines()[-1])
    run.detail(
        f"B10 floor (aioimaplib UID FETCH in batches of 20 + email policy.default parse): "
        f"{floor['messages']} messages in {floor['seconds']:.1f} s, peak RSS "
        f"{floor['peak_rss'] / 2**20:.0f} MiB"
    )
    _, key = asyncio.run(make_workspace(url, "bench-receiving-b10", 1_000_000))
    server, port = start_inboxd(run, "inboxd-backlog", receiving_env(base))
    rss_start = rss_bytes(server.pid)
    peak = PeakRss(server.pid)
    started = time.monotonic()
    [inbox] = asyncio.run(
        create_many(port, key, [inbox_input(name, ports, PASSWORD, {"backfillDays": 1})])
    )
    # RSS as the backlog goes in, at each fifth: bounded memory levels off, a leak climbs.
    marks: list[str] = []
    for fifth in range(1, 6):
        stored, _ = asyncio.run(
            wait_sql(
                url,
                STORED,
                (uuid.UUID(inbox),),
                lambda v, goal=m * fifth // 5: v >= goal,
                args.b10_max_seconds,
            )
        )
        marks.append(f"{stored}: {rss_bytes(server.pid) / 2**20:.0f} MiB")
    seconds = time.monotonic() - started
    peak_rss = peak.stop()
    run.detail("B10 inboxd RSS as messages were stored: " + ", ".join(marks))
    run.detail(
        f"B10 inboxd: {stored} of {m} stored {seconds:.1f} s after the create (verification, "
        f"claim, backfill search, FETCH, parse, one transaction per message); RSS at start "
        f"{rss_start / 2**20:.0f} MiB, peak {peak_rss / 2**20:.0f} MiB"
    )
    ratio = seconds / floor["seconds"]
    run.rows.append(
        Row(
            f"B10 backlog of {m:,}: all stored (s)",
            fmt(seconds, 1),
            fmt(floor["seconds"], 1),
            f"{ratio:.2f}x",
            "<= 1.50x",
            ratio <= 1.5 and stored >= m,
        )
    )
    run.rows.append(
        Row(
            "B10 peak RSS during the backlog (MiB)",
            f"{peak_rss / 2**20:.0f} (from {rss_start / 2**20:.0f})",
            f"{floor['peak_rss'] / 2**20:.0f}",
            "-",
            "bounded",
            None,
        )
    )
    server.stop()


# --- the doc ------------------------------------------------------------------------------------

MARKER = "## Receiving (B8-B10)"


def is_receiving(text: str) -> bool:
    """A row's figure or a detail line of B8, B9 or B10."""
    return text.split(" ", 1)[0].rstrip(":") in ("B8", "B9", "B10")


def section(run: Any, command: str, started: Any, seconds: float) -> str:
    from bench.run import load_after, machine, table

    args = run.args
    lines = [
        MARKER,
        "",
        "Receiving mail (issue 12), measured by `bench/receiving.py` against pymap over implicit",
        "TLS (bench/mailserver.py, in its own process), each figure beside its floor in the same",
        "run. Every watched mailbox belongs to its own user.",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}, the whole run took "
        f"{seconds / 60:.1f} min; load average before/after: {run.load_before} / {load_after()}",
        f"- Postgres: {args.pg_kind}; inboxd: `inboxd serve` with its worker and receiver "
        "(INBOXD_RECEIVING_ENABLED=true only here), uvloop, log level "
        f"{args.log_level}",
        "",
        table([r for r in run.rows if is_receiving(r.figure)]),
        "",
        "```",
        *[d for d in run.details if is_receiving(d)],
        "```",
        "",
        RECEIVING_METHOD,
    ]
    return "\n".join(lines)


RECEIVING_METHOD = """What each receiving figure measures:

- **B8** a message APPENDed by another IMAP session to a watched INBOX, until a
  `messageReceived` subscriber (graphql-transport-ws) has it: IDLE push, FETCH, parse, one
  transaction, the event, the websocket. Floor (`floors/imap_idle.py watch`): aioimaplib in
  IDLE on another user's INBOX; on EXISTS it ends IDLE and UID FETCHes the message. The two
  take turns, one delivery at a time, after a warm-up; each from just before the APPEND.
- **B9** N inboxes, created and verified with receiving off, then switched on together: RSS
  growth of the inboxd process per watched inbox once all are IDLE in the database, the IMAP
  connections the server holds (counted by the server), then idle CPU of the process
  (/proc/<pid>/stat) and B8 again while all are watched. Floor (`floors/imap_idle.py hold`):
  the same N users' TLS sessions (LOGIN, EXAMINE, IDLE) on bare asyncio streams on uvloop,
  as inboxd runs.
- **B10** M messages (every 10th with a 50 KiB attachment) already in a mailbox; an inbox
  created on it with `receiving.backfillDays: 1` takes them all in; time from the create until
  all are stored, and the peak RSS of that (fresh) inboxd process, sampled every 50 ms.
  Floor (`floors/imap_backlog.py`): aioimaplib UID FETCH in batches of 20 (inboxd's
  INBOXD_RECEIVING_FETCH_BATCH) and each message parsed with `email` (`policy.default`:
  headers, text and HTML bodies, attachment bytes), nothing stored.
"""
