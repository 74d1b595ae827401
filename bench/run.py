#!/usr/bin/env python3
"""The inboxd benchmark suite: one command, every figure beside its floor, one table.

    python3 bench/run.py                 # everything, ~11-13 minutes on 2 cores (+4-6 for B11-B13)
    python3 bench/run.py --only B1,B2    # some figures
    python3 bench/run.py --quick         # short runs, to check the suite itself

It needs only what `python3 dev.py test` needs (it reuses dev.py's .venv bootstrap) plus `wrk`
(installed with apt-get when missing and running as root; otherwise a Python load generator
stands in, and the table says so). It starts everything on loopback: Postgres (embedded
pgserver in a temp dir, or the server at INBOXD_BENCH_DATABASE_URL, where it creates and drops
scratch databases), inboxd as `inboxd serve` (one process, uvicorn with uvloop + httptools), the
floors in bench/floors/, and real SMTP/IMAP servers (bench/mailserver.py). It prints the table
and writes docs/benchmarks.md (unless --no-write).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def _bootstrap() -> None:
    """Re-run inside .venv (created/updated by dev.py's own bootstrap) when started outside."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    sys.path.insert(0, str(ROOT))
    import dev

    dev.ensure_environment()
    python = str(VENV / "bin" / "python")
    os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])


if __name__ == "__main__":
    _bootstrap()

# --- from here on we run inside .venv -----------------------------------------------------

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(ROOT))
# bench.receiving imports this module's helpers by name: let it find this run, not a copy.
sys.modules.setdefault("bench.run", sys.modules[__name__])

from bench.common import (  # noqa: E402
    BENCH,
    CREATE,
    HOST,
    LIST_PAGE,
    READ_ONE,
    STATUS_SUBSCRIPTION,
    VENV_PYTHON,
    Proc,
    admin,
    cpu_seconds,
    dumps,
    free_port,
    median,
    percentile,
    rss_bytes,
    start,
    wait_http,
    with_database,
)

DOC = ROOT / "docs" / "benchmarks.md"
RECEIVING = {"B8", "B9", "B10"}
SENDING = {"B11", "B12", "B13"}
NOTES_MARKER = "## Notes (kept across runs)"
PASSWORD = "Bench-Password-4711"


# --- results ------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    inboxd: str
    floor: str
    ratio: str
    target: str
    ok: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return "n/a" if self.ok is None else ("PASS" if self.ok else "FAIL")


@dataclass
class Run:
    args: argparse.Namespace
    tmp: Path
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    loadgen: str = "wrk"
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)
    load_before: str = ""

    def detail(self, text: str) -> None:
        print("  " + text, flush=True)
        self.details.append(text)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def fmt(value: float, digits: int = 0) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:,.{digits}f}"


# --- Postgres and seed data ---------------------------------------------------------------


class Postgres:
    def __init__(self, tmp: Path) -> None:
        self.server: Any = None
        configured = os.environ.get("INBOXD_BENCH_DATABASE_URL")
        if configured:
            self.admin_url = configured
            self.kind = "INBOXD_BENCH_DATABASE_URL"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pgserver

                self.server = pgserver.get_server(str(tmp / "pg"), cleanup_mode="delete")
            self.admin_url = str(self.server.get_uri())
            self.kind = "embedded pgserver (temp dir)"
        self.created: list[str] = []

    def cpu_seconds(self) -> float | None:
        """CPU time the embedded server and its backends have used (None: not ours)."""
        if self.server is None:
            return None
        from bench.common import tree_cpu_seconds

        postmaster = int((Path(self.server.pgdata) / "postmaster.pid").read_text().split()[0])
        return tree_cpu_seconds(postmaster)

    def scratch(self) -> str:
        from storage.migrate import upgrade

        name = f"inboxd_bench_{secrets.token_hex(4)}"
        asyncio.run(admin(self.admin_url, f'CREATE DATABASE "{name}"'))
        url = with_database(self.admin_url, name)
        self.created.append(name)
        upgrade(url)
        return url

    def close(self) -> None:
        for name in self.created:
            try:
                asyncio.run(admin(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except Exception as exc:  # best effort: the temp server goes away anyway
                print(f"could not drop {name}: {exc}", file=sys.stderr)
        if self.server is not None:
            self.server.cleanup()


async def make_workspace(url: str, name: str, max_inboxes: int) -> tuple[str, str]:
    """A workspace and a manage+view API key; returns (workspace id, key)."""
    from storage import api_keys, workspaces
    from storage.db import create_database
    from storage.models import Permission

    db = create_database(url, pool_size=1)
    try:
        async with db.connection() as connection, connection.transaction():
            ws = await workspaces.create_workspace(connection, name, max_inboxes=max_inboxes)
            _, key = await api_keys.create_api_key(
                connection, ws.id, [Permission.MANAGE_EMAIL_INBOX, Permission.VIEW_EMAIL_INBOX]
            )
        return str(ws.id), key
    finally:
        await db.dispose()


def inbox_input(email: str, smtp_port: int, imap_port: int, username: str | None = None) -> dict:
    return {
        "email": email,
        "displayName": "Bench Inbox",
        "smtp": {
            "host": HOST,
            "port": smtp_port,
            "security": "STARTTLS",
            "username": username or email,
            "password": PASSWORD,
        },
        "imap": {
            "host": HOST,
            "port": imap_port,
            "security": "TLS",
            "username": username or email,
            "password": PASSWORD,
        },
        "tags": ["bench"],
    }


async def graphql(client: Any, key: str, query: str, variables: dict) -> dict:
    response = await client.post(
        "/graphql",
        content=dumps({"query": query, "variables": variables}),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"GraphQL call failed: {response.status_code} {str(body)[:300]}")
    return body["data"]


async def create_inboxes(port: int, key: str, emails: list[str], ports: tuple[int, int]) -> list:
    import httpx

    ids = []
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as client:
        for email in emails:
            data = await graphql(client, key, CREATE, {"input": inbox_input(email, *ports)})
            payload = data["createEmailInbox"]
            if payload["__typename"] != "CreateEmailInboxSuccess":
                raise RuntimeError(f"seed create failed: {payload}")
            ids.append(payload["inbox"]["id"])
    return ids


# --- processes ----------------------------------------------------------------------------


def inboxd_env(run: Run, url: str, *, worker: bool, ca_file: str | None = None) -> dict:
    env = {
        "INBOXD_DATABASE_URL": url,
        "INBOXD_ENCRYPTION_KEYS": run.args.keyring,
        "INBOXD_ENVIRONMENT": "production",
        "INBOXD_HOST": HOST,
        "INBOXD_LOG_LEVEL": run.args.log_level,
        # Never ask a resolver: every host in the benchmark is an IP literal on loopback.
        "INBOXD_DNS_CHECK_ENABLED": "false",
        # B1-B7 measure the API and verification; receiving (a watcher and its IMAP sessions
        # for every ACTIVE inbox, issue 12) gets its own figures, B8-B10, and would otherwise
        # count as extra logins and load the mail servers these figures share.
        "INBOXD_RECEIVING_ENABLED": "false",
        "INBOXD_ALLOW_PRIVATE_HOSTS": "true",
        "INBOXD_WORKER_ENABLED": "true" if worker else "false",
        "INBOXD_WORKER_CONCURRENCY": str(run.args.worker_concurrency),
        # One key drives all the load: lift the per-key abuse limits out of the way.
        "INBOXD_RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000000",
        "INBOXD_WS_MAX_CONNECTIONS_PER_KEY": "1000000",
    }
    if ca_file:
        env["INBOXD_TLS_CA_FILE"] = ca_file
    return env


def start_inboxd(run: Run, name: str, env: dict) -> tuple[Proc, int]:
    port = free_port()
    argv = [str(VENV_PYTHON), "-m", "inboxd.cli", "serve", "--port", str(port), "--no-migrate"]
    proc = start(name, argv, env=env, log=run.tmp / f"{name}.log")
    run.procs.append(proc)
    wait_http(port, "/healthz", 60)
    wait_http(port, "/readyz", 30)
    return proc, port


def start_floor(run: Run, name: str, script: str, url: str) -> tuple[Proc, int]:
    port = free_port()
    env = {"INBOXD_BENCH_FLOOR_DATABASE_URL": url, "INBOXD_ENCRYPTION_KEYS": run.args.keyring}
    proc = start(
        name,
        [str(VENV_PYTHON), str(BENCH / "floors" / script), "--port", str(port)],
        env=env,
        log=run.tmp / f"{name}.log",
    )
    run.procs.append(proc)
    wait_http(port, "/healthz", 60)
    return proc, port


class MailServer:
    def __init__(self, run: Run, protocol: str, certdir: Path, users: int) -> None:
        self.proc = start(
            f"{protocol}-server",
            [
                str(VENV_PYTHON),
                str(BENCH / "mailserver.py"),
                protocol,
                "--certdir",
                str(certdir),
                "--users",
                str(users),
                "--password",
                PASSWORD,
                "--max-seconds",
                "3600",
            ],
            log=run.tmp / f"{protocol}.log",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        run.procs.append(self.proc)
        line = self.proc.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"{protocol} server did not start; see {run.tmp}/{protocol}.log")
        self.port = int(json.loads(line)["port"])

    def auth_attempts(self) -> int:
        self.proc.popen.stdin.write(b"count\n")
        self.proc.popen.stdin.flush()
        return int(json.loads(self.proc.popen.stdout.readline())["auth_attempts"])


# --- HTTP load ----------------------------------------------------------------------------


def ensure_wrk(run: Run) -> None:
    if shutil.which("wrk"):
        run.loadgen = "wrk"
        return
    if os.geteuid() == 0 and shutil.which("apt-get") and not run.args.no_install:
        print("wrk is missing: apt-get install -y wrk ...", flush=True)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300, **quiet)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"], check=False, timeout=300, **quiet
        )
    if shutil.which("wrk"):
        run.loadgen = "wrk"
    else:
        run.loadgen = "python"
        run.notes.append(
            "wrk was not available: the HTTP figures used bench/loadgen.py (Python, asyncio), "
            "which tops out lower than wrk, so absolute req/s are understated."
        )


@dataclass
class Load:
    rps: float
    requests: int
    bad: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    sample: str
    cpu_ms: float = float("nan")


def http_load(run: Run, port: int, key: str, body: str, seconds: float) -> Load:
    """POST ``body`` to /graphql with ``connections`` connections for ``seconds``."""
    body_file = run.tmp / f"body-{secrets.token_hex(4)}.json"
    body_file.write_text(body)
    args = run.args
    url = f"http://{HOST}:{port}/graphql"
    env = {**os.environ, "BENCH_KEY": key, "BENCH_BODY_FILE": str(body_file)}
    if run.loadgen == "wrk":
        argv = [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH / "wrk" / "graphql.lua"),
            url,
        ]
    else:
        argv = [
            str(VENV_PYTHON),
            str(BENCH / "loadgen.py"),
            "--url",
            url,
            "--connections",
            str(args.connections),
            "--seconds",
            str(seconds),
        ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            data = json.loads(line[len("BENCHJSON ") :])
            return Load(
                rps=data["requests"] / (data["duration_us"] / 1e6),
                requests=data["requests"],
                bad=data["bad"],
                socket_errors=data["socket_errors"],
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                sample=data.get("sample", ""),
            )
    raise RuntimeError(f"load generator failed: {out.stdout[-500:]} {out.stderr[-500:]}")


def profile(
    run: Run, proc: Proc, name: str, seconds: float | None = None
) -> subprocess.Popen[bytes] | None:
    """With --profile DIR: py-spy samples ``proc`` for the measured run (collapsed stacks)."""
    if not run.args.profile:
        return None
    spy = shutil.which("py-spy") or str(VENV_PYTHON.parent / "py-spy")
    out = Path(run.args.profile) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        spy,
        "record",
        "--pid",
        str(proc.pid),
        "--duration",
        str(int(seconds or run.args.duration)),
        "--rate",
        "250",
        "--format",
        "raw",
        "--nonblocking",
        "-o",
        str(out),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def throughput_pair(
    run: Run,
    figure: str,
    what: str,
    target: float,
    inboxd: tuple[Proc, int, str, str],
    floor: tuple[Proc, int, str, str],
    plans_off: tuple[Proc, int, str, str] | None = None,
    via_strawberry: tuple[Proc, int, str, str] | None = None,
    metrics_on: tuple[Proc, int, str, str] | None = None,
) -> None:
    """Warm both up, then measure them in alternating rounds (inboxd, floor, inboxd, ...) so
    that whatever else the machine is doing weighs on both alike; one table row. With
    ``plans_off`` (inboxd with INBOXD_COMPILED_QUERIES=false) a third side joins the same
    rounds, and two more rows say what the compiled query plans pay. With ``via_strawberry``
    (INBOXD_PLAN_SHORTCUT=false: plans run inside Strawberry's execute) a fourth side says
    what Strawberry's per-operation machinery costs a cached compiled query. With
    ``metrics_on`` (INBOXD_METRICS_ENABLED=true) one more says what the metrics cost: the
    target is within 5% of "inboxd" (metrics off, the default)."""
    args = run.args
    sides = {"inboxd": inboxd, "floor": floor}
    if plans_off is not None:
        sides["plans off"] = plans_off
    if via_strawberry is not None:
        sides["via strawberry"] = via_strawberry
    if metrics_on is not None:
        sides["metrics on"] = metrics_on
    rounds = max(1, args.rounds)
    slice_s = max(1.0, args.duration / rounds)
    tags = {name: f"{i}{name[0]}" for i, name in enumerate(sides)}  # distinct per side
    for name, (_, port, key, body) in sides.items():
        http_load(run, port, key, body.replace("@RUN@", f"w{tags[name]}"), args.warmup)
    parts: dict[str, list[Load]] = {name: [] for name in sides}
    cpu: dict[str, float] = dict.fromkeys(sides, 0.0)
    for r in range(rounds):
        for name, (proc, port, key, body) in sides.items():
            profiler = profile(run, proc, f"{figure}-{name}-r{r}", slice_s) if r == 0 else None
            before = cpu_seconds(proc.pid)
            parts[name].append(
                http_load(run, port, key, body.replace("@RUN@", f"m{tags[name]}r{r}"), slice_s)
            )
            cpu[name] += cpu_seconds(proc.pid) - before
            if profiler is not None:
                profiler.wait(slice_s + 30)
    results = {}
    for name, loads in parts.items():
        requests = sum(x.requests for x in loads)
        load = Load(
            rps=requests / (slice_s * rounds),
            requests=requests,
            bad=sum(x.bad for x in loads),
            socket_errors=sum(x.socket_errors for x in loads),
            p50_ms=median([x.p50_ms for x in loads]),
            p99_ms=max(x.p99_ms for x in loads),
            sample=next((x.sample for x in loads if x.sample), ""),
            cpu_ms=cpu[name] * 1000 / max(1, requests),
        )
        results[name] = load
        spread = ", ".join(f"{x.rps:,.0f}" for x in loads)
        run.detail(
            f"{figure} {name}: {load.rps:,.0f} req/s (rounds: {spread}), {load.requests} "
            f"requests, server CPU {load.cpu_ms:.2f} ms/request, p50 {load.p50_ms:.1f} ms, "
            f"p99 {load.p99_ms:.1f} ms, bad answers {load.bad}, socket errors "
            f"{load.socket_errors}" + (f"; e.g. {load.sample}" if load.bad else "")
        )
    a, b = results["inboxd"], results["floor"]
    ratio = a.rps / b.rps if b.rps else float("nan")
    clean = a.bad == 0 and b.bad == 0 and a.socket_errors == 0 and b.socket_errors == 0
    run.rows.append(
        Row(
            f"{figure} {what} (req/s)",
            fmt(a.rps),
            fmt(b.rps),
            f"{ratio:.2f}x",
            f">= {target:.2f}x",
            ratio >= target and clean,
        )
    )
    run.cpu[figure] = (a.cpu_ms, b.cpu_ms)
    if plans_off is not None:
        c = results["plans off"]
        off_ratio = c.rps / b.rps if b.rps else float("nan")
        gain = a.rps / c.rps if c.rps else float("nan")
        run.rows.append(
            Row(
                f"{figure} same, compiled plans off",
                fmt(c.rps),
                fmt(b.rps),
                f"{off_ratio:.2f}x",
                "-",
                None,
            )
        )
        run.rows.append(
            Row(
                f"{figure} compiled plans on / off",
                f"{a.cpu_ms:.2f} / {c.cpu_ms:.2f} ms CPU",
                "-",
                f"{gain:.2f}x",
                ">= 1.15x to keep them",
                None,
            )
        )
    if metrics_on is not None:
        m = results["metrics on"]
        share = m.rps / a.rps if a.rps else float("nan")
        run.rows.append(
            Row(
                f"{figure} metrics on / off",
                f"{fmt(m.rps)} / {fmt(a.rps)} ({m.cpu_ms:.2f} / {a.cpu_ms:.2f} ms CPU)",
                "-",
                f"{share:.3f}x",
                ">= 0.95x",
                share >= 0.95 and m.bad == 0 and m.socket_errors == 0,
            )
        )
    if via_strawberry is not None:
        d = results["via strawberry"]
        run.rows.append(
            Row(
                f"{figure} plans through Strawberry's execute",
                fmt(d.rps),
                fmt(b.rps),
                f"{d.rps / b.rps if b.rps else float('nan'):.2f}x",
                "-",
                None,
            )
        )
        run.rows.append(
            Row(
                f"{figure} plan shortcut on / through Strawberry",
                f"{a.cpu_ms:.2f} / {d.cpu_ms:.2f} ms CPU",
                "-",
                f"{d.cpu_ms / a.cpu_ms if a.cpu_ms else float('nan'):.2f}x",
                ">= 1.15x to keep it",
                None,
            )
        )


# --- B1-B3: HTTP throughput ---------------------------------------------------------------


def phase_http(run: Run, pg: Postgres, url: str, ports: tuple[int, int]) -> dict:
    """B1, B2, B3 on one database; returns what B6 can reuse (read workspace, inbox)."""
    figures = run.args.only
    read_ws, read_key = asyncio.run(make_workspace(url, "bench-read", 1000))
    _, inboxd_key = asyncio.run(make_workspace(url, "bench-create-inboxd", 10_000_000))
    _, floor_key = asyncio.run(make_workspace(url, "bench-create-floor", 10_000_000))
    inboxd, port = start_inboxd(run, "inboxd-http", inboxd_env(run, url, worker=False))
    # The same server with compiled query plans off (schema.fastpath), measured beside it.
    no_plans_env = {**inboxd_env(run, url, worker=False), "INBOXD_COMPILED_QUERIES": "false"}
    no_plans, no_plans_port = start_inboxd(run, "inboxd-http-no-plans", no_plans_env)
    # And with plans run inside Strawberry's execute (the Pipeline extension), not before it.
    via_env = {**inboxd_env(run, url, worker=False), "INBOXD_PLAN_SHORTCUT": "false"}
    via_strawberry, via_port = start_inboxd(run, "inboxd-http-via-strawberry", via_env)
    # And with Prometheus metrics on (scraped by nobody: what every request pays for them).
    metrics_env = {
        **inboxd_env(run, url, worker=False),
        "INBOXD_METRICS_ENABLED": "true",
        "INBOXD_METRICS_TOKEN": "bench-metrics",
    }
    with_metrics, metrics_port = start_inboxd(run, "inboxd-http-metrics", metrics_env)
    emails = [f"read{i:03d}@bench.example.com" for i in range(60)]
    ids = asyncio.run(create_inboxes(port, read_key, emails, ports))
    read_floor, read_port = start_floor(run, "floor-read", "raw_read.py", url)
    create_floor, create_port = start_floor(run, "floor-create", "raw_create.py", url)
    asyncio.run(shape_check(run, port, read_port, read_key, ids[7]))

    read_body = dumps({"query": READ_ONE, "variables": {"id": ids[7]}, "operationName": "Inbox"})
    list_body = dumps({"query": LIST_PAGE, "variables": {"first": 50}, "operationName": "Inboxes"})
    create_vars = {"input": inbox_input("b3-@RUN@-@N@@bench.example.com", *ports)}
    create_body = dumps({"query": CREATE, "variables": create_vars, "operationName": "Create"})
    if "B1" in figures:
        print("B1: emailInbox(id) throughput", flush=True)
        throughput_pair(
            run,
            "B1",
            "emailInbox(id)",
            0.40,
            (inboxd, port, read_key, read_body),
            (read_floor, read_port, read_key, read_body),
            (no_plans, no_plans_port, read_key, read_body),
            (via_strawberry, via_port, read_key, read_body),
            (with_metrics, metrics_port, read_key, read_body),
        )
    if "B2" in figures:
        print("B2: emailInboxes(first: 50) throughput", flush=True)
        throughput_pair(
            run,
            "B2",
            "emailInboxes(first: 50)",
            0.35,
            (inboxd, port, read_key, list_body),
            (read_floor, read_port, read_key, list_body),
            (no_plans, no_plans_port, read_key, list_body),
        )
    if "B3" in figures:
        print("B3: createEmailInbox throughput", flush=True)
        throughput_pair(
            run,
            "B3",
            "createEmailInbox",
            0.40,
            (inboxd, port, inboxd_key, create_body),
            (create_floor, create_port, floor_key, create_body),
            metrics_on=(with_metrics, metrics_port, inboxd_key, create_body),
        )
    run.stop_all()
    return {"key": read_key, "inbox": ids[0], "workspace": read_ws}


async def shape_check(run: Run, port: int, floor_port: int, key: str, inbox_id: str) -> None:
    """The floor must answer what inboxd answers, byte for byte in meaning."""
    import httpx

    async with (
        httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as a,
        httpx.AsyncClient(base_url=f"http://{HOST}:{floor_port}", timeout=30) as b,
    ):
        for query, variables in ((READ_ONE, {"id": inbox_id}), (LIST_PAGE, {"first": 50})):
            ours = await graphql(a, key, query, variables)
            theirs = await graphql(b, key, query, variables)
            name = "emailInbox" if query is READ_ONE else "emailInboxes"
            if ours != theirs:
                run.notes.append(f"shape check: the floor's {name} answer differs from inboxd's")
                run.detail(f"shape check {name}: MISMATCH\n{ours}\n{theirs}")
            else:
                run.detail(f"shape check {name}: floor answer == inboxd answer")


# --- B4, B5: verification against real mail servers ---------------------------------------


async def b4_inboxd(
    port: int, key: str, users: list[str], ports: tuple[int, int], warm: int, max_seconds: float
) -> tuple[list[float], int, dict[str, list[float]]]:
    """Sequential create -> ACTIVE; also when each step was seen, for the breakdown.

    The create goes through a plain keep-alive HTTP/1.1 client (bench.loadgen.post), as in B5:
    httpx spent ~1 ms of CPU per request on the same two cores, counted against inboxd."""
    import websockets

    from bench.loadgen import post

    phases: dict[str, list[float]] = {}
    latencies: list[float] = []
    failed = 0
    deadline = time.monotonic() + max_seconds
    reader, writer = await asyncio.open_connection(HOST, port)

    async def create(user: str) -> str:
        body = dumps({"query": CREATE, "variables": {"input": inbox_input(user, *ports, user)}})
        status_line, payload = await post(
            reader, writer, HOST, port, "/graphql", key, body.encode()
        )
        answer = json.loads(payload)
        if b" 200 " not in status_line or answer.get("errors"):
            raise RuntimeError(f"create failed: {status_line!r} {payload[:300]!r}")
        return str(answer["data"]["createEmailInbox"]["inbox"]["id"])

    async with (
        websockets.connect(
            f"ws://{HOST}:{port}/graphql",
            subprotocols=["graphql-transport-ws"],
            compression=None,
            open_timeout=10,
        ) as ws,
    ):
        await ws.send(
            dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}})
        )
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
        for i, user in enumerate(users):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            inbox_id = await create(user)
            seen = {"create answered": time.perf_counter()}
            sub = str(i)
            await ws.send(
                dumps(
                    {
                        "id": sub,
                        "type": "subscribe",
                        "payload": {"query": STATUS_SUBSCRIPTION, "variables": {"id": inbox_id}},
                    }
                )
            )
            status = None
            while status not in ("ACTIVE", "FAILED"):
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if message.get("type") == "ping":
                    await ws.send(dumps({"type": "pong"}))
                if message.get("id") != sub:
                    continue
                if message["type"] != "next":
                    raise RuntimeError(f"subscription ended: {message}")
                status = message["payload"]["data"]["emailInboxStatus"]["status"]
                seen.setdefault(f"{status} seen", time.perf_counter())
            elapsed = (time.perf_counter() - started) * 1000
            await ws.send(dumps({"id": sub, "type": "complete"}))
            if i >= warm:
                latencies.append(elapsed)
                failed += status != "ACTIVE"
                for name, at in seen.items():
                    phases.setdefault(name, []).append((at - started) * 1000)
    writer.close()
    return latencies, failed, phases


def logins_floor(
    run: Run, mode: str, ca: Path, ports: tuple[int, int], first_user: int, **extra: int
) -> dict:
    argv = [
        str(VENV_PYTHON),
        str(BENCH / "floors" / "logins.py"),
        mode,
        "--smtp-port",
        str(ports[0]),
        "--imap-port",
        str(ports[1]),
        "--ca-file",
        str(ca),
        "--password",
        PASSWORD,
        "--first-user",
        str(first_user),
        "--max-seconds",
        "300",
    ]
    for name, value in extra.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    if out.returncode != 0:
        raise RuntimeError(f"logins floor failed: {out.stderr[-800:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


async def b5_inboxd(
    port: int,
    key: str,
    url: str,
    workspace: str,
    users: list[str],
    ports: tuple[int, int],
    connections: int,
    max_seconds: float,
) -> dict:
    import asyncpg

    from bench.loadgen import post

    created, refused = 0, []
    queue: asyncio.Queue[str] = asyncio.Queue()
    for user in users:
        queue.put_nowait(user)
    started = time.perf_counter()

    async def sender() -> None:
        # A plain keep-alive HTTP/1.1 client (bench.loadgen.post): httpx cost ~3 CPU-seconds
        # for these 1,000 requests, on the same two cores the servers need.
        nonlocal created
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while not queue.empty():
                user = queue.get_nowait()
                body = dumps(
                    {"query": CREATE, "variables": {"input": inbox_input(user, *ports, user)}}
                ).encode()
                _, payload = await post(reader, writer, HOST, port, "/graphql", key, body)
                data = json.loads(payload)["data"]
                if data["createEmailInbox"]["__typename"] == "CreateEmailInboxSuccess":
                    created += 1
                else:
                    refused.append(data["createEmailInbox"])
        finally:
            writer.close()

    await asyncio.gather(*(sender() for _ in range(connections)))
    creates_done = time.perf_counter() - started
    connection = await asyncpg.connect(url, timeout=10)
    try:
        deadline = time.monotonic() + max_seconds
        settled = 0
        while time.monotonic() < deadline:
            settled = await connection.fetchval(
                "SELECT count(*) FROM email_inbox WHERE workspace_id = $1 "
                "AND status IN ('ACTIVE', 'FAILED')",
                uuid.UUID(workspace),
            )
            if settled >= len(users):
                break
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
        inboxes = await connection.fetchrow(
            "SELECT count(*) AS total, count(*) FILTER (WHERE status = 'ACTIVE') AS active, "
            "count(*) FILTER (WHERE status = 'FAILED') AS failed "
            "FROM email_inbox WHERE workspace_id = $1",
            uuid.UUID(workspace),
        )
        tests = await connection.fetchrow(
            "SELECT count(*) AS tests, coalesce(sum(attempts), 0) AS attempts, "
            "count(DISTINCT inbox_id) AS inboxes, "
            "count(*) FILTER (WHERE state = 'PASSED') AS passed, "
            # Where the time went: how long one test ran (claim to outcome), and how long
            # tests waited in the queue.
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
            "finished_at - started_at)) * 1000 AS run_ms_p50, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
            "started_at - created_at)) * 1000 AS wait_ms_p50, "
            # Slot use: test-seconds run / (seconds from first claim to last outcome).
            "extract(epoch FROM sum(finished_at - started_at)) / nullif(extract(epoch FROM "
            "max(finished_at) - min(started_at)), 0) AS busy_slots "
            "FROM connection_test WHERE workspace_id = $1",
            uuid.UUID(workspace),
        )
    finally:
        await connection.close()
    return {
        "seconds": seconds,
        "creates_seconds": creates_done,
        "created": created,
        "refused": refused[:3],
        "settled": settled,
        **{f"inboxes_{k}": v for k, v in dict(inboxes).items()},
        **{f"tests_{k}": v for k, v in dict(tests).items()},
    }


def phase_verify(run: Run, pg: Postgres, certdir: Path, ca: Path) -> None:
    args = run.args
    figures = args.only
    b4_total = args.b4_samples + args.b4_warmup
    users_needed = 2 * b4_total + 2 * args.b5_count
    smtp = MailServer(run, "smtp", certdir, users_needed)
    imap = MailServer(run, "imap", certdir, users_needed)
    ports = (smtp.port, imap.port)
    from bench.mailserver import user

    url = pg.scratch()
    _, key_b4 = asyncio.run(make_workspace(url, "bench-verify-b4", 1_000_000))
    server, port = start_inboxd(
        run, "inboxd-verify", inboxd_env(run, url, worker=True, ca_file=str(ca))
    )
    next_user = 0

    def mail_cpu() -> float:
        return cpu_seconds(smtp.proc.pid) + cpu_seconds(imap.proc.pid)

    def take(n: int) -> int:
        nonlocal next_user
        first, next_user = next_user, next_user + n
        return first

    if "B4" in figures:
        print("B4: create -> ACTIVE seen by a subscriber", flush=True)
        first = take(b4_total)
        floor = logins_floor(run, "seq", ca, ports, first, samples=b4_total)
        floor_ms = floor["latencies_ms"][args.b4_warmup :]
        first = take(b4_total)
        users = [user(first + i) for i in range(b4_total)]
        ours, failed, phases = asyncio.run(
            b4_inboxd(port, key_b4, users, ports, args.b4_warmup, 300)
        )
        f50, f99 = percentile(floor_ms, 50), percentile(floor_ms, 99)
        o50, o99 = percentile(ours, 50), percentile(ours, 99)
        run.detail(
            f"B4 inboxd: {len(ours)} samples, p50 {o50:.1f} ms, p90 {percentile(ours, 90):.1f} "
            f"ms, p99 {o99:.1f} ms, max {max(ours):.1f} ms, not ACTIVE {failed}"
        )
        steps = sorted(phases.items(), key=lambda kv: median(kv[1]))
        run.detail(
            "B4 inboxd, median time after the create was sent: "
            + ", ".join(f"{name} {median(values):.1f} ms" for name, values in steps)
        )
        run.detail(
            f"B4 floor: {len(floor_ms)} samples, p50 {f50:.1f} ms, p90 "
            f"{percentile(floor_ms, 90):.1f} ms, p99 {f99:.1f} ms, max {max(floor_ms):.1f} ms, "
            f"passed {floor['ok']}/{b4_total}"
        )
        run.rows.append(
            Row(
                "B4 create -> ACTIVE p50 (ms)",
                fmt(o50, 1),
                fmt(f50, 1),
                f"{o50 / f50:.2f}x",
                "<= 1.50x",
                o50 <= f50 * 1.5 and failed == 0,
            )
        )
        run.rows.append(
            Row(
                "B4 create -> ACTIVE p99 (ms)",
                fmt(o99, 1),
                fmt(f99, 1),
                f"{o99 / f99:.2f}x",
                "-",
                None if failed == 0 else False,
            )
        )
    if "B5" in figures:
        count = args.b5_count
        print(f"B5: burst of {count} creates until all settled", flush=True)
        first = take(count)
        # CPU seconds spent, to show where a run's time goes on a 2-core machine: the floor
        # script (a child: RUSAGE_CHILDREN), the mail servers, inboxd, this client.
        children, mail = resource.getrusage(resource.RUSAGE_CHILDREN), mail_cpu()
        floor = logins_floor(
            run, "burst", ca, ports, first, count=count, concurrency=args.worker_concurrency
        )
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        floor_cpu = {
            "floor script": children_after.ru_utime
            + children_after.ru_stime
            - children.ru_utime
            - children.ru_stime,
            "mail servers": mail_cpu() - mail,
        }
        run.detail(
            f"B5 floor: {floor['seconds']:.2f} s for {count} login pairs at concurrency "
            f"{args.worker_concurrency}, passed {floor['ok']}; one pair took "
            f"{floor.get('pair_ms_p50', 0):.0f} ms (median); CPU seconds: "
            + ", ".join(f"{k} {v:.1f}" for k, v in floor_cpu.items())
        )

        def b5(label: str, api: Proc, api_port: int, worker: Proc | None) -> None:
            """One B5 run against inboxd as deployed by ``label``."""
            ws_id, key = asyncio.run(make_workspace(url, f"bench-verify-b5-{label}", 1_000_000))
            first = take(count)
            users = [user(first + i) for i in range(count)]
            before = (smtp.auth_attempts(), imap.auth_attempts())
            procs = {"inboxd API": api, **({"inboxd worker": worker} if worker else {})}
            cpu_before = {name: cpu_seconds(p.pid) for name, p in procs.items()}
            mail, client_cpu = mail_cpu(), time.process_time()
            profiler = profile(run, worker or api, f"B5-inboxd-{label}", 15)
            ours = asyncio.run(
                b5_inboxd(api_port, key, url, ws_id, users, ports, args.connections, 600)
            )
            if profiler is not None:
                profiler.wait(60)
            our_cpu = {name: cpu_seconds(p.pid) - cpu_before[name] for name, p in procs.items()}
            our_cpu["mail servers"] = mail_cpu() - mail
            our_cpu["HTTP client"] = time.process_time() - client_cpu
            after = (smtp.auth_attempts(), imap.auth_attempts())
            logins = (after[0] - before[0], after[1] - before[1])
            lost = (
                count - ours["inboxes_active"] - ours["inboxes_failed"] + (count - ours["created"])
            )
            twice = (
                (ours["tests_tests"] - ours["tests_inboxes"])
                + (ours["tests_attempts"] - ours["tests_tests"])
                + max(0, logins[0] - count)
                + max(0, logins[1] - count)
            )
            run.detail(
                f"B5 inboxd ({label}): {ours['seconds']:.2f} s until all settled (the {count} "
                f"creates took {ours['creates_seconds']:.2f} s), ACTIVE {ours['inboxes_active']}, "
                f"FAILED {ours['inboxes_failed']}, tests {ours['tests_tests']} (attempts "
                f"{ours['tests_attempts']}), SMTP logins {logins[0]}, IMAP logins {logins[1]}; "
                f"one test ran {ours['tests_run_ms_p50']:.0f} ms (median, claim to outcome), "
                f"{ours['tests_busy_slots'] or 0:.1f} tests running on average; CPU seconds: "
                + ", ".join(f"{k} {v:.1f}" for k, v in our_cpu.items())
            )
            ratio = ours["seconds"] / floor["seconds"]
            run.rows.append(
                Row(
                    f"B5 {count} creates: all settled, {label} (s)",
                    fmt(ours["seconds"], 2),
                    fmt(floor["seconds"], 2),
                    f"{ratio:.2f}x",
                    "<= 1.30x",
                    ratio <= 1.3 and lost == 0 and twice == 0 and ours["inboxes_failed"] == 0,
                )
            )
            run.rows.append(
                Row(
                    f"B5 lost / run twice, {label}",
                    f"{lost} / {twice}",
                    "-",
                    "-",
                    "0 / 0",
                    lost == 0 and twice == 0,
                )
            )

        b5("one process", server, port, None)
    run.stop_all()


# --- B6: many subscribers -----------------------------------------------------------------


def _read_prefixed(proc: Proc, prefix: str, within: float) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = proc.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"{proc.name} exited early; see {proc.log}")
        text = line.decode().strip()
        if text.startswith(prefix + " "):
            return json.loads(text[len(prefix) + 1 :])
    raise TimeoutError(f"{proc.name}: no {prefix} within {within} s")


def ws_clients(run: Run, name: str, port: int, key: str, inbox: str, count: int) -> Proc:
    """``count`` subscribers; with no key, idle websockets for the floor."""
    target = ["--key", key, "--inbox", inbox] if key else ["--idle"]
    proc = start(
        name,
        [
            str(VENV_PYTHON),
            str(BENCH / "ws_clients.py"),
            "--port",
            str(port),
            *target,
            "--count",
            str(count),
            "--max-seconds",
            str(run.args.b6_max_seconds),
            "--deliver-seconds",
            str(run.args.b6_deliver_seconds),
        ],
        log=run.tmp / f"{name}.log",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    run.procs.append(proc)
    return proc


async def change_status(url: str, inbox_id: str) -> float:
    """Commit one status change of the inbox with its event, as the worker does; returns the
    monotonic time right after COMMIT returned."""
    import asyncpg

    from storage import inbox_changes

    flip = inbox_changes.statement(
        inbox_changes.change(
            "inbox",
            "status = CASE WHEN i.status = 'ACTIVE' THEN 'FAILED' ELSE 'ACTIVE' END",
            where="i.id = $1",
        ),
        result="inbox.version",
    )
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.fetchval(flip, uuid.UUID(inbox_id))  # autocommit: committed on return
        return time.monotonic()
    finally:
        await connection.close()


def _open_many(run: Run, server: Proc, port: int, key: str, inbox: str, prefix: str) -> tuple:
    """Warm up, then open B6's N connections from the client processes; returns (clients,
    connected, failures, connect seconds, RSS before, RSS after) of ``server``."""
    args = run.args
    n = args.b6_subscribers
    # Warm-up: a few subscribers come and go, so first-use allocations are not counted.
    warm = ws_clients(run, f"{prefix}-warm", port, key, inbox, 50)
    _read_prefixed(warm, "READY", 60)
    warm.popen.stdin.write(b"stop\n")
    warm.popen.stdin.flush()
    warm.popen.wait(30)
    time.sleep(2)
    before = rss_bytes(server.pid)
    halves = [
        n // args.b6_processes + (1 if i < n % args.b6_processes else 0)
        for i in range(args.b6_processes)
    ]
    started = time.monotonic()
    if key:
        profile(run, server, "B6-connect", 20)
    clients = [ws_clients(run, f"{prefix}-{i}", port, key, inbox, c) for i, c in enumerate(halves)]
    ready = [_read_prefixed(c, "READY", args.b6_max_seconds + 30) for c in clients]
    connect_seconds = time.monotonic() - started
    connected = sum(r["connected"] for r in ready)
    failures: dict[str, int] = {}
    for r in ready:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    time.sleep(3)
    return clients, connected, failures, connect_seconds, before, rss_bytes(server.pid)


def ws_floor(run: Run) -> tuple[float, str]:
    """The same N websockets held open by uvicorn alone (bench/floors/ws_idle.py): KiB per
    connection, and a detail line."""
    port = free_port()
    server = start(
        "floor-ws",
        [str(VENV_PYTHON), str(BENCH / "floors" / "ws_idle.py"), "--port", str(port)],
        log=run.tmp / "floor-ws.log",
    )
    run.procs.append(server)
    wait_http(port, "/", 30)
    _, connected, failures, seconds, before, after = _open_many(run, server, port, "", "", "idle")
    per_connection = (after - before) / connected / 1024 if connected else float("nan")
    run.stop_all()
    return per_connection, (
        f"B6 floor (uvicorn + websockets-sansio, idle ASGI app): {connected} websockets in "
        f"{seconds:.1f} s"
        + (f" (failures: {failures})" if failures else "")
        + f", RSS {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB, "
        f"{per_connection:.1f} KiB per connection"
    )


def phase_subscribers(run: Run, url: str, seed: dict) -> None:
    args = run.args
    n = args.b6_subscribers
    print(f"B6: {n} graphql-transport-ws subscribers on one process", flush=True)
    server, port = start_inboxd(run, "inboxd-ws", inboxd_env(run, url, worker=False))
    clients, connected, failures, connect_seconds, before, after = _open_many(
        run, server, port, seed["key"], seed["inbox"], "ws"
    )
    per_sub = (after - before) / connected / 1024 if connected else float("nan")
    profile(run, server, "B6-fanout", 10)
    committed = asyncio.run(change_status(url, seed["inbox"]))
    for c in clients:
        c.popen.stdin.write(b"go\n")
        c.popen.stdin.flush()
    results = [_read_prefixed(c, "RESULT", 60) for c in clients]
    latencies = [(t - committed) * 1000 for r in results for t in r["times"]]
    missing = connected - len(latencies)
    # A subscriber that never heard of the change counts as infinitely late.
    padded = latencies + [float("inf")] * missing
    p50, p99 = percentile(padded, 50), percentile(padded, 99)
    run.detail(
        f"B6: {connected} of {n} subscribed in {connect_seconds:.1f} s"
        + (f" (failures: {failures})" if failures else "")
        + f"; server RSS {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB, "
        f"{per_sub:.1f} KiB per subscriber"
    )
    run.detail(
        f"B6: one status change reached {len(latencies)} of {connected}: p50 {p50:.0f} ms, "
        f"p99 {p99:.0f} ms, max {max(latencies) if latencies else float('nan'):.0f} ms"
    )
    run.stop_all()
    floor, floor_detail = ws_floor(run)
    run.detail(floor_detail)
    label = f"B6 RSS per subscriber, N={connected:,} (KiB)"
    run.rows.append(
        Row(
            label,
            fmt(per_sub, 1),
            fmt(floor, 1),
            f"+{per_sub - floor:.1f} KiB",
            "<= 25 KiB",
            per_sub <= 25 and connected >= n,
        )
    )
    run.rows.append(
        Row(
            f"B6 one change -> all {connected:,} p99 (ms)",
            fmt(p99),
            "-",
            "-",
            "<= 1,000 ms",
            p99 <= 1000 and connected >= n,
        )
    )
    if connected < n:
        run.notes.append(f"B6 reached {connected} of the {n} subscribers asked for.")
    run.stop_all()


# --- B7: SQL statements per operation -----------------------------------------------------


def phase_counts(run: Run) -> None:
    print("B7: SQL statements per operation (tests/storage/test_query_counts.py)", flush=True)
    out = run.tmp / "counts.json"
    env = {**os.environ, "INBOXD_QUERY_COUNTS_OUT": str(out)}
    result = subprocess.run(
        [
            str(VENV_PYTHON),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/storage/test_query_counts.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = (result.stdout.strip().splitlines() or ["no output"])[-1]
    run.detail(f"B7 pytest: {summary}")
    counts = json.loads(out.read_text()) if out.exists() else {}
    passed = result.returncode == 0
    for name, label in (
        ("create", "create"),
        ("read", "read one"),
        ("list5", "list of 5"),
        ("list50", "list of 50"),
        ("job", "verification job"),
    ):
        c = counts.get(name)
        value = f"{c['statements']} stmts / {c['round_trips']} round trips" if c else "-"
        target = "== list of 5" if name == "list50" else "pinned"
        ok = passed and c is not None
        if name == "list50" and c and "list5" in counts:
            ok = ok and c == counts["list5"]
        run.rows.append(Row(f"B7 SQL per op: {label}", value, "-", "-", target, ok))


# --- report -------------------------------------------------------------------------------


def load_after() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs (nproc), {cpu}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def table(rows: list[Row]) -> str:
    header = ("figure", "inboxd", "floor", "ratio", "target", "result")
    cells = [header] + [(r.figure, r.inboxd, r.floor, r.ratio, r.target, r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(header))) + " |" for c in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_doc(run: Run, command: str, started: datetime, seconds: float) -> None:
    """The doc's parts this run measured are rewritten; the others (B1-B7, the receiving
    section B8-B10, the sending section B11-B13, the notes) are kept as they were."""
    from bench import sending
    from bench.receiving import MARKER, is_receiving, section

    text = DOC.read_text() if DOC.exists() else ""
    starts = sorted(i for i in (text.find(m) for m in (MARKER, sending.MARKER, NOTES_MARKER)))
    starts = [i for i in starts if i >= 0]

    def part(marker: str) -> str:
        at = text.find(marker)
        return "" if at < 0 else text[at : min([i for i in starts if i > at], default=len(text))]

    main = text[: min(starts, default=len(text))]
    receiving, sent, kept = part(MARKER), part(sending.MARKER), part(NOTES_MARKER)
    if any(not (is_receiving(r.figure) or sending.is_sending(r.figure)) for r in run.rows):
        main = main_part(run, command, started, seconds)
    if any(is_receiving(r.figure) for r in run.rows):
        receiving = section(run, command, started, seconds)
    if any(sending.is_sending(r.figure) for r in run.rows):
        sent = sending.section(run, command, started, seconds)
    if not kept:
        kept = NOTES_MARKER + "\n\nFindings and profiles go here; this section survives reruns.\n"
    sections = [main, receiving, sent]
    DOC.write_text("".join(x.rstrip("\n") + "\n\n" for x in sections if x) + kept)


def main_part(run: Run, command: str, started: datetime, seconds: float) -> str:
    from bench.receiving import is_receiving
    from bench.sending import is_sending

    args = run.args
    load = (
        f"wrk, {args.threads} threads, {args.connections} connections"
        if run.loadgen == "wrk"
        else f"bench/loadgen.py, {args.connections} connections"
    )
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python3 bench/run.py`; rerun it to refresh this file. Each figure runs",
        "beside its floor (a hand-written program doing the same essential work, in",
        "`bench/floors/`) in the same run, on the same machine, against the same Postgres.",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}, took {seconds / 60:.1f} min; "
        f"load average before/after: {run.load_before} / {load_after()}",
        f"- Postgres: {run.args.pg_kind}",
        f"- HTTP load: {load}, {args.warmup:g} s warm-up then {args.duration:g} s per figure",
        f"- inboxd: `inboxd serve` (one process, uvicorn + uvloop + httptools), "
        f"INBOXD_ENVIRONMENT=production, log level {args.log_level}, worker concurrency "
        f"{args.worker_concurrency}; per-key rate limits lifted (one key drives all load)",
        "",
        table([r for r in run.rows if not (is_receiving(r.figure) or is_sending(r.figure))]),
        "",
    ]
    if run.notes:
        lines += ["Notes on this run:", "", *[f"- {n}" for n in run.notes], ""]
    details = [d for d in run.details if not (is_receiving(d) or is_sending(d))]
    lines += ["## Details", "", "```", *details, "```", "", METHOD, ""]
    return "\n".join(lines)


METHOD = """## What each figure measures

- **B1** `emailInbox(id)` over HTTP with an API key. Floor (`bench/floors/raw_read.py`):
  Starlette + asyncpg, the same API-key check (SELECT by prefix, SHA-256 compare, revocation,
  permission) and the SELECT of the inbox by id and workspace; JSON built by hand (orjson).
  Before measuring, the suite checks that the floor's answer equals inboxd's.
- **B2** `emailInboxes(first: 50)` with `totalCount`, page info, cursors and the same 20-odd
  fields per node. Floor: the same two SELECTs (page, count) and the same JSON.
- **B3** `createEmailInbox`, a distinct inbox per request. Floor (`raw_create.py`): API-key
  check, then one transaction: workspace row lock + count (plan limit), AES-256-GCM of both
  passwords with inboxd's envelope and associated data, INSERT inbox, INSERT job, NOTIFY. It
  skips validation, the audit row, login spacing and subscriber events.
- **B4** create -> `ACTIVE` seen on an `emailInboxStatus` subscription, one at a time, against
  aiosmtpd (STARTTLS) and pymap (implicit TLS) in their own processes. Floor
  (`floors/logins.py seq`): `probe_smtp` and `probe_imap` in parallel, nothing else.
- **B5** 1,000 creates fired at once (32 connections); time from the first request until every
  inbox is ACTIVE or FAILED. Lost: not created or never settled. Run twice: extra tests,
  extra attempts, or more SMTP/IMAP logins than inboxes (counted by the mail servers). Floor
  (`floors/logins.py burst`): the same logins at the worker's concurrency.
- **B6** N graphql-transport-ws subscribers to one inbox on one inboxd process (clients:
  `bench/ws_clients.py`, in separate processes). RSS delta of the server per subscriber, then
  one committed status change (UPDATE + pg_notify, as the worker does it) and the time until
  each subscriber has the new version; a subscriber that never hears counts as infinitely late.
  Floor (`floors/ws_idle.py`): uvicorn as inboxd runs it, N websockets accepted by an ASGI app
  that only awaits `receive`: what any websocket costs before inboxd adds its own.
- **B7** SQL per operation, pinned with `==` by `tests/storage/test_query_counts.py`
  (statements, and round trips including BEGIN/COMMIT).
"""


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default="B1,B2,B3,B4,B5,B6,B7,B8,B9,B10,B11,B12,B13",
        help="comma-separated figures (default: all)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per HTTP figure")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="HTTP figures alternate inboxd and floor this many times",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--b4-samples", type=int, default=200)
    parser.add_argument("--b4-warmup", type=int, default=10)
    parser.add_argument("--b5-count", type=int, default=1000)
    parser.add_argument("--b6-subscribers", type=int, default=10_000)
    parser.add_argument("--b6-processes", type=int, default=2, help="client processes")
    parser.add_argument(
        "--b6-max-seconds",
        type=float,
        default=180.0,
        help="bound on each subscriber process's whole life",
    )
    parser.add_argument(
        "--b6-deliver-seconds",
        type=float,
        default=60.0,
        help="how long subscribers wait for the status change",
    )
    parser.add_argument("--b8-samples", type=int, default=200)
    parser.add_argument("--b8-warmup", type=int, default=10)
    parser.add_argument("--b9-inboxes", type=int, default=1000)
    parser.add_argument("--b9-idle-seconds", type=float, default=20.0)
    parser.add_argument("--b9-b8-samples", type=int, default=100, help="B8 during B9")
    parser.add_argument(
        "--b9-large", type=int, default=200, help="B9 inboxes sent one large message each"
    )
    parser.add_argument("--b9-large-kib", type=int, default=1024)
    parser.add_argument("--b10-messages", type=int, default=10_000)
    parser.add_argument("--b10-max-seconds", type=float, default=1800.0)
    parser.add_argument("--worker-concurrency", type=int, default=8)
    from bench.sending import add_arguments

    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="inboxd's INBOXD_LOG_LEVEL")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 s runs, 30 B4 samples, 200 creates, 1,000 subscribers",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write the doc")
    parser.add_argument("--no-install", action="store_true", help="never apt-get wrk")
    parser.add_argument(
        "--profile", default="", help="directory: py-spy profiles of inboxd (B1-B3, B5, B6)"
    )
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args(argv)
    args.only = {f.strip().upper() for f in args.only.split(",") if f.strip()}
    if args.quick:
        args.duration, args.warmup, args.rounds = 2.0, 1.0, 1
        args.b4_samples, args.b4_warmup = 30, 3
        args.b5_count, args.b6_subscribers = 200, 1000
        args.b8_samples, args.b9_inboxes, args.b9_idle_seconds = 30, 100, 5.0
        args.b9_b8_samples, args.b10_messages, args.b9_large = 20, 500, 20
        from bench.sending import quick

        quick(args)
    from storage.secrets import KeyRing

    args.keyring = KeyRing.generate_spec("bench")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="inboxd-bench-"))
    run = Run(args, tmp)
    run.load_before = load_after()
    print(f"inboxd benchmarks; scratch dir {tmp}", flush=True)
    print(f"machine: {machine()}", flush=True)
    pg = Postgres(tmp)
    args.pg_kind = pg.kind
    try:
        from bench.mailserver import make_certs
        from tests.support.mailservers import closed_port

        certdir = tmp / "certs"
        ca = make_certs(certdir)
        seed = None
        if args.only & {"B1", "B2", "B3", "B6"}:
            ensure_wrk(run)
            url = pg.scratch()
            # Inboxes made by B1-B3 point at ports nothing listens on; no worker runs here.
            seed = phase_http(run, pg, url, (closed_port(), closed_port()))
        if args.only & {"B4", "B5"}:
            phase_verify(run, pg, certdir, ca)
        if "B6" in args.only and seed is not None:
            phase_subscribers(run, url, seed)
        if "B7" in args.only:
            phase_counts(run)
        if args.only & RECEIVING:
            from bench.receiving import phase_receiving

            phase_receiving(run, pg, certdir, ca)
        if args.only & SENDING:
            from bench.sending import phase_sending

            phase_sending(run, pg, certdir, ca)
    finally:
        run.stop_all()
        pg.close()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - started
    command = "python3 bench/run.py" + (" " + " ".join(argv) if argv else "")
    print()
    print(table(run.rows))
    for note in run.notes:
        print(f"note: {note}")
    print(f"\n{machine()}; took {seconds / 60:.1f} min")
    if not args.no_write:
        write_doc(run, command, started_at, seconds)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0 if all(r.ok is not False for r in run.rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
