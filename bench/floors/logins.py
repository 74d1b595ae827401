"""Floor for B4 and B5: the same SMTP and IMAP logins inboxd's worker makes, with nothing else.

Each verification is ``probe_smtp`` and ``probe_imap`` in parallel (mail.probes, the worker's own
probe code and settings), against the benchmark's mail servers, on uvloop like the server.

    python bench/floors/logins.py seq   --samples 100 --first-user 0 ...   # B4: one at a time
    python bench/floors/logins.py burst --count 1000 --concurrency 8 ...    # B5: all at once

Prints one JSON line: latencies in ms (seq) or the total seconds (burst), and how many passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.mailserver import user
from mail.network import NetworkPolicy
from mail.probes import Endpoint, ProbeSettings, Security, probe_imap, probe_smtp
from storage.secrets import Secret


def settings(ca_file: str) -> ProbeSettings:
    # inboxd's defaults (INBOXD_SMTP/IMAP_CONNECT_TIMEOUT 10 s, overall 30 s).
    return ProbeSettings(
        connect_timeout=10.0,
        overall_timeout=30.0,
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=ca_file,
    )


async def verify_once(args: argparse.Namespace, index: int, probe: ProbeSettings) -> bool:
    name = user(index)
    secret = Secret(args.password)
    smtp = Endpoint("127.0.0.1", args.smtp_port, Security.STARTTLS, name, secret)
    imap = Endpoint("127.0.0.1", args.imap_port, Security.TLS, name, secret)
    smtp_result, imap_result = await asyncio.gather(
        probe_smtp(smtp, probe, "CUSTOM"), probe_imap(imap, probe, "CUSTOM")
    )
    return smtp_result.ok and imap_result.ok


async def sequential(args: argparse.Namespace) -> dict[str, object]:
    probe = settings(args.ca_file)
    latencies, ok = [], 0
    deadline = time.monotonic() + args.max_seconds
    for i in range(args.samples):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        ok += await verify_once(args, args.first_user + i, probe)
        latencies.append((time.perf_counter() - started) * 1000)
    return {"latencies_ms": latencies, "ok": ok}


async def burst(args: argparse.Namespace) -> dict[str, object]:
    probe = settings(args.ca_file)
    gate = asyncio.Semaphore(args.concurrency)

    pair_ms: list[float] = []

    async def one(i: int) -> bool:
        async with gate:
            begun = time.perf_counter()
            ok = await verify_once(args, args.first_user + i, probe)
            pair_ms.append((time.perf_counter() - begun) * 1000)
            return ok

    started = time.perf_counter()
    results = await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(args.count))), args.max_seconds
    )
    return {
        "seconds": time.perf_counter() - started,
        "ok": sum(results),
        "count": args.count,
        "pair_ms_p50": statistics.median(pair_ms) if pair_ms else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["seq", "burst"])
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--imap-port", type=int, required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--first-user", type=int, default=0)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args()
    run = sequential if args.mode == "seq" else burst
    print(json.dumps(uvloop.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
