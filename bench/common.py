"""Shared pieces of the benchmark suite: paths, processes, Postgres, GraphQL documents.

Everything here talks to 127.0.0.1 or to a Unix socket only.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
HOST = "127.0.0.1"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# --- GraphQL documents (the floors answer exactly these selections) -------------------------

INBOX_SELECTION = (
    "id name email displayName status statusReason provider active department tags "
    "dailySendLimit sendingEnabled "
    "smtp { host port security username hasPassword } "
    "imap { host port security username hasPassword } "
    "lastVerifiedAt createdAt updatedAt version"
)
READ_ONE = f"query Inbox($id: ID!) {{ emailInbox(id: $id) {{ {INBOX_SELECTION} }} }}"
LIST_PAGE = (
    "query Inboxes($first: Int!) { emailInboxes(first: $first) { totalCount "
    "pageInfo { hasNextPage endCursor } edges { cursor node { " + INBOX_SELECTION + " } } } }"
)
CREATE = (
    "mutation Create($input: CreateEmailInboxInput!) { createEmailInbox(input: $input) { "
    "__typename ... on CreateEmailInboxSuccess { inbox { id email status } } "
    "... on UserError { code message } } }"
)
STATUS_SUBSCRIPTION = (
    "subscription Status($id: ID!) { emailInboxStatus(id: $id) { id status version } }"
)

# Columns the floors read: what INBOX_SELECTION needs, nothing more.
INBOX_COLUMNS = (
    "id, name, email, display_name, status, status_reason, provider, active, department, tags, "
    "daily_send_limit, sending_enabled, smtp_host, smtp_port, smtp_security, smtp_username, "
    "smtp_password, imap_host, imap_port, imap_security, imap_username, imap_password, "
    "last_verified_at, created_at, updated_at, version"
)


def iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def inbox_json(row: Any) -> dict[str, Any]:
    """An email_inbox row as the GraphQL API renders INBOX_SELECTION (same keys, same order)."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "email": row["email"],
        "displayName": row["display_name"],
        "status": row["status"],
        "statusReason": row["status_reason"],
        "provider": row["provider"],
        "active": row["active"],
        "department": row["department"],
        "tags": list(row["tags"]),
        "dailySendLimit": row["daily_send_limit"],
        "sendingEnabled": row["sending_enabled"],
        "smtp": {
            "host": row["smtp_host"],
            "port": row["smtp_port"],
            "security": row["smtp_security"],
            "username": row["smtp_username"],
            "hasPassword": bool(row["smtp_password"]),
        },
        "imap": {
            "host": row["imap_host"],
            "port": row["imap_port"],
            "security": row["imap_security"],
            "username": row["imap_username"],
            "hasPassword": bool(row["imap_password"]),
        },
        "lastVerifiedAt": iso(row["last_verified_at"]),
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
        "version": row["version"],
    }


def inbox_cursor(row: Any) -> str:
    raw = f"{row['created_at'].isoformat()}|{row['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- numbers ------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time of ``root`` and every process below it still running (a
    Postgres server and its backends, say)."""
    below: dict[int, list[int]] = {}
    spent: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        below.setdefault(int(fields[1]), []).append(int(entry))
        spent[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += spent.get(pid, 0.0)
        todo.extend(below.get(pid, []))
    return total


def wait_http(port: int, path: str = "/healthz", within: float = 30.0) -> None:
    """Until GET path answers 200 (any answer from a floor that has no such route is fine)."""
    deadline = time.monotonic() + within
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                sock.sendall(request)
                head = sock.recv(64)
                if head.startswith(b"HTTP/1.1 200"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"nothing answered on {HOST}:{port}{path} within {within} s ({last})")


@dataclass
class Proc:
    """A child process we started; stopped by its own pid only."""

    name: str
    popen: subprocess.Popen[Any]
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


def _raise_limits() -> None:  # preexec_fn for servers that hold many sockets
    raise_fd_limit()


def start(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = None,
) -> Proc:
    handle: Any = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    popen = subprocess.Popen(
        argv,
        env={**os.environ, **(env or {})},
        stdin=stdin,
        stdout=stdout if stdout is not None else handle,
        stderr=handle,
        cwd=ROOT,
        preexec_fn=_raise_limits,
    )
    return Proc(name, popen, log)


# --- Postgres -----------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def admin(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
