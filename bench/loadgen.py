"""Fallback HTTP load generator for when wrk is not installed (slower than wrk: the table says
so). Same inputs and output as bench/wrk/graphql.lua: BENCH_KEY, BENCH_BODY_FILE (``@N@`` ->
a unique value per request), and one ``BENCHJSON {...}`` line.

    python bench/loadgen.py --url http://127.0.0.1:8000/graphql --connections 32 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from urllib.parse import urlsplit

import uvloop


async def post(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    path: str,
    key: str,
    body: bytes,
) -> tuple[bytes, bytes]:
    """One keep-alive HTTP/1.1 POST: (status line, body). Far cheaper in CPU than httpx, so
    a load generator on the benchmark machine takes less from what it measures."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status_line, await reader.readexactly(length)


async def worker(
    index: int,
    host: str,
    port: int,
    path: str,
    template: bytes,
    key: str,
    until: float,
    stats: dict,
    latencies: list[float],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    unique = b"@N@" in template
    counter = 0
    try:
        while time.monotonic() < until:
            counter += 1
            body = template.replace(b"@N@", f"{index}-{counter}".encode()) if unique else template
            started = time.perf_counter()
            status_line, payload = await post(reader, writer, host, port, path, key, body)
            latencies.append(time.perf_counter() - started)
            stats["requests"] += 1
            if b" 200 " not in status_line or b'"errors"' in payload or b'"code"' in payload:
                stats["bad"] += 1
                stats["sample"] = stats["sample"] or (status_line + payload).decode()[:300]
    except (OSError, asyncio.IncompleteReadError):
        stats["socket_errors"] += 1
    finally:
        writer.close()


async def main_async(args: argparse.Namespace) -> None:
    parts = urlsplit(args.url)
    with open(os.environ["BENCH_BODY_FILE"], "rb") as handle:
        template = handle.read()
    key = os.environ["BENCH_KEY"]
    stats = {"requests": 0, "bad": 0, "socket_errors": 0, "sample": ""}
    latencies: list[float] = []
    started = time.monotonic()
    until = started + args.seconds
    await asyncio.gather(
        *(
            worker(
                i,
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                parts.path,
                template,
                key,
                until,
                stats,
                latencies,
            )
            for i in range(args.connections)
        )
    )
    duration = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]

    def pct(p: float) -> int:
        return int(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e6)

    print(
        "BENCHJSON "
        + json.dumps(
            {
                "requests": stats["requests"],
                "duration_us": int(duration * 1e6),
                "bad": stats["bad"],
                "socket_errors": stats["socket_errors"],
                "p50_us": pct(50),
                "p90_us": pct(90),
                "p99_us": pct(99),
                "max_us": int(ordered[-1] * 1e6),
                "sample": stats["sample"],
            }
        ),
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    uvloop.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
