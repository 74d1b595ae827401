"""Many graphql-transport-ws subscribers in one process, for B6.

A deliberately small websocket client (asyncio.Protocol, no library): each connection costs
this process little, so two of these processes can hold 10,000 subscribers beside the server
on a 2-core machine without their own overhead dominating what is measured.

    python bench/ws_clients.py --port P --key KEY --inbox ID --count 5000

Each connection: HTTP upgrade, ``connection_init`` with the key, ``subscribe`` to
``emailInboxStatus(id)``, and the first ``next`` (the current state). Once every connection is
ready or has failed, prints ``READY {"connected": n, "failed": m, ...}``. It then waits for a
line ``go`` on stdin (the benchmark has committed a status change), records the monotonic time
at which each connection receives the next version, and prints ``RESULT {"times": [...]}``
after all have it or --deliver-seconds passed. Everything is bounded by --max-seconds.
With --idle a connection is ready once upgraded and sends nothing (the uvicorn floor,
bench/floors/ws_idle.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import STATUS_SUBSCRIPTION, raise_fd_limit


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (RFC 6455 requires clients to mask)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )
    return header + mask + masked


class Subscriber(asyncio.Protocol):
    def __init__(self, host: str, port: int, key: str, inbox_id: str, idle: bool = False) -> None:
        self.host, self.port, self.key, self.inbox_id = host, port, key, inbox_id
        # Idle: ready once upgraded, no graphql-transport-ws (for the uvicorn floor).
        self.idle = idle
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.changed_at: float | None = None
        self.version: int | None = None
        self.closed = False

    # --- transport ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        nonce = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET /graphql HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    def send(self, message: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(orjson.dumps(message)))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.fail(f"upgrade refused: {head[:60]!r}")
                return
            self.upgraded = True
            if self.idle:
                self.ready.set_result(0)
                return
            self.send(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {self.key}"}}
            )
        self._frames()

    def _frames(self) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                offset = 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if opcode in (0x1, 0x2):  # inboxd sends its JSON as binary frames
                self.on_message(orjson.loads(payload))
            elif opcode == 0x9:  # websocket ping: answer, or the server drops us
                if self.transport is not None:
                    self.transport.write(frame(payload, 0xA))
            elif opcode == 0x8:
                self.fail("closed by server")
                return

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.abort()

    # --- graphql-transport-ws -------------------------------------------------------------

    def on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "connection_ack":
            self.send(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": STATUS_SUBSCRIPTION, "variables": {"id": self.inbox_id}},
                }
            )
        elif kind == "next":
            data = (message.get("payload") or {}).get("data") or {}
            version = (data.get("emailInboxStatus") or {}).get("version")
            if self.version is None:
                self.version = version
                if not self.ready.done():
                    self.ready.set_result(version)
            elif version != self.version and self.changed_at is None:
                self.changed_at = time.monotonic()
        elif kind == "ping":
            self.send({"type": "pong"})
        elif kind in ("error", "complete"):
            self.fail(f"subscription ended: {str(message)[:120]}")


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + args.max_seconds
    subscribers: list[Subscriber] = []
    failures: dict[str, int] = {}
    gate = asyncio.Semaphore(args.connect_concurrency)

    async def open_one() -> None:
        async with gate:
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: Subscriber(args.host, args.port, args.key, args.inbox, args.idle),
                        args.host,
                        args.port,
                    ),
                    args.ready_timeout,
                )
                await asyncio.wait_for(protocol.ready, args.ready_timeout)
                subscribers.append(protocol)
            except (OSError, TimeoutError, ConnectionError) as exc:
                name = type(exc).__name__ + (f": {exc}"[:80] if str(exc) else "")
                failures[name] = failures.get(name, 0) + 1

    started = time.monotonic()
    connect_budget = max(1.0, deadline - time.monotonic() - args.deliver_seconds - 5)
    tasks = [asyncio.create_task(open_one()) for _ in range(args.count)]
    _, pending = await asyncio.wait(tasks, timeout=connect_budget)
    for task in pending:
        task.cancel()
    if pending:
        failures["connect budget exceeded"] = len(pending)
    ready = {
        "connected": len(subscribers),
        "failed": sum(failures.values()),
        "failures": failures,
        "seconds": round(time.monotonic() - started, 2),
    }
    print("READY " + json.dumps(ready), flush=True)

    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        os._exit(0)
    until = min(deadline, time.monotonic() + args.deliver_seconds)
    while time.monotonic() < until:
        if all(s.changed_at is not None or s.closed for s in subscribers):
            break
        await asyncio.sleep(0.02)
    times = [s.changed_at for s in subscribers if s.changed_at is not None]
    lost = sum(1 for s in subscribers if s.closed)
    print("RESULT " + json.dumps({"times": times, "closed": lost}), flush=True)
    sys.stdout.flush()
    os._exit(0)  # no orderly close of thousands of sockets: the server sees them drop


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--inbox", default="")
    parser.add_argument(
        "--idle", action="store_true", help="only open websockets (floor: bench/floors/ws_idle.py)"
    )
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--deliver-seconds", type=float, default=15.0)
    parser.add_argument("--max-seconds", type=float, default=150.0)
    args = parser.parse_args()
    raise_fd_limit()
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
