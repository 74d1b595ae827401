"""Floors for B8 and B9: IMAP IDLE with nothing else, on the loop inboxd runs (uvloop).

    python bench/floors/imap_idle.py hold  --count 1000 --first-user 0 ...  # B9: N sessions
    python bench/floors/imap_idle.py watch --user u00007@... ...            # B8: one watcher

``hold`` opens ``count`` implicit-TLS sessions (one user each), LOGIN, EXAMINE INBOX, IDLE,
on bare asyncio streams; prints ``READY {...}`` once all are idling, then holds them until
``quit`` (or end of input) on stdin. ``watch`` is a raw aioimaplib client in IDLE on one
mailbox: on EXISTS it ends IDLE, UID FETCHes the new messages (BODY.PEEK[]) and prints
``GOT {"uid": N, "at": <time.monotonic()>}`` per message, then IDLEs again. CLOCK_MONOTONIC is
one clock for every process on the machine, so the driver compares it with its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import rss_bytes
from bench.mailserver import user

# aioimaplib hands untagged responses over without their "* ".
_EXISTS = re.compile(rb"^(\* )?\d+ EXISTS", re.IGNORECASE)
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]", re.IGNORECASE)
_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)


def context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


# --- hold: N sessions in IDLE, bare streams ---------------------------------------------------


async def hold_one(args: argparse.Namespace, ctx: ssl.SSLContext, index: int) -> tuple:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", args.port, ssl=ctx, server_hostname="localhost"
    )
    await reader.readline()  # greeting
    for tag, command in (
        (b"a1", f'LOGIN "{user(index)}" "{args.password}"'.encode()),
        (b"a2", b'EXAMINE "INBOX"'),
    ):
        writer.write(tag + b" " + command + b"\r\n")
        while not (line := await reader.readline()).startswith(tag + b" "):
            if not line:
                raise ConnectionError("closed")
        if not line.startswith(tag + b" OK"):
            raise RuntimeError(line.decode(errors="replace"))
    writer.write(b"a3 IDLE\r\n")
    while not (line := await reader.readline()).startswith(b"+"):
        if not line:
            raise ConnectionError("closed")
    return reader, writer


async def hold(args: argparse.Namespace) -> int:
    ctx = context(args.ca_file)
    gate = asyncio.Semaphore(args.concurrency)
    failures: dict[str, int] = {}

    async def opened(index: int) -> tuple | None:
        async with gate:
            try:
                return await hold_one(args, ctx, index)
            except Exception as exc:
                name = type(exc).__name__
                failures[name] = failures.get(name, 0) + 1
                return None

    before = rss_bytes(os.getpid())
    started = time.monotonic()
    opening = [opened(args.first_user + i) for i in range(args.count)]
    sessions = [s for s in await asyncio.gather(*opening) if s is not None]
    seconds = time.monotonic() - started
    await asyncio.sleep(1)
    ready = {
        "connected": len(sessions),
        "failures": failures,
        "seconds": seconds,
        "rss_before": before,
        "rss_after": rss_bytes(os.getpid()),
    }
    print("READY " + json.dumps(ready), flush=True)
    await until_quit()
    for _, writer in sessions:
        writer.close()
    return 0


async def until_quit() -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            return


# --- watch: one aioimaplib client in IDLE -----------------------------------------------------


async def watch(args: argparse.Namespace) -> int:
    import aioimaplib

    client = aioimaplib.IMAP4_SSL(
        "127.0.0.1", args.port, ssl_context=context(args.ca_file), timeout=30
    )
    await client.wait_hello_from_server()
    assert (await client.login(args.user, args.password)).result == "OK"
    response = await client.examine("INBOX")
    client.protocol.state = aioimaplib.SELECTED  # aioimaplib only says so after SELECT
    match = _UIDNEXT.search(b" ".join(bytes(x) for x in response.lines))
    assert match is not None, response
    uidnext = int(match.group(1))
    quitting = asyncio.ensure_future(until_quit())
    print("READY {}", flush=True)
    while not quitting.done():
        idle = await client.idle_start(timeout=600)
        arrived = False
        while not arrived and not quitting.done():
            push = asyncio.ensure_future(client.wait_server_push(600))
            await asyncio.wait({push, quitting}, return_when=asyncio.FIRST_COMPLETED)
            if not push.done():
                push.cancel()
                break
            lines = push.result()
            if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                break
            arrived = any(_EXISTS.match(bytes(x)) for x in lines)
        client.idle_done()
        await asyncio.wait_for(idle, 30)
        if not arrived:
            continue
        if args.steps == "inboxd":
            response = await inboxd_fetch(client, uidnext)
        else:
            response = await client.uid("fetch", f"{uidnext}:*", "(UID BODY.PEEK[])")
        for line in response.lines:
            if isinstance(line, bytearray) and args.steps == "inboxd":
                parse(bytes(line))
            uid = _UID.search(bytes(line)) if not isinstance(line, bytearray) else None
            if uid and int(uid.group(1)) >= uidnext:
                uidnext = int(uid.group(1)) + 1
                print("GOT " + json.dumps({"uid": uidnext - 1, "at": time.monotonic()}), flush=True)
    await client.logout()
    return 0


async def inboxd_fetch(client: Any, uidnext: int) -> Any:
    """The IMAP command inboxd's receiver sends after an IDLE push (``Receiver._read_announced``):
    one UID FETCH of the next batch of UIDs, with size, flags and the first 64 KiB (the whole
    of a short message); the watcher then parses. For B8's breakdown."""
    return await client.uid(
        "fetch", f"{uidnext}:{uidnext + 19}", "(UID RFC822.SIZE FLAGS BODY.PEEK[]<0.65536>)"
    )


def parse(raw: bytes) -> None:
    from email import message_from_bytes, policy

    message = message_from_bytes(raw, policy=policy.default)
    for kind in ("plain", "html"):
        body = message.get_body(preferencelist=(kind,))
        if body is not None:
            body.get_content()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["hold", "watch"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--first-user", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--user", default="")
    parser.add_argument(
        "--steps",
        choices=["floor", "inboxd"],
        default="floor",
        help="watch: inboxd's IMAP commands and parse too (B8's breakdown)",
    )
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    run = hold if args.mode == "hold" else watch
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(run(args))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
