"""Floor for B10: read a whole mailbox with nothing else, on uvloop like inboxd.

    python bench/floors/imap_backlog.py --port N --ca-file CA --user U --password PW

aioimaplib over implicit TLS: LOGIN, EXAMINE INBOX, UID SEARCH ALL, then UID FETCH
(UID RFC822.SIZE BODY.PEEK[]) in batches of --batch (inboxd's INBOXD_RECEIVING_FETCH_BATCH;
aioimaplib overflows the stack on one large FETCH), and each message parsed with the standard
library as inboxd does (``email`` with ``policy.default``: headers, the text and HTML bodies,
each attachment's bytes). Nothing is kept. Prints one JSON line: messages, seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import ssl
import sys
import time
from email import message_from_bytes, policy

import uvloop

_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)


def parse(raw: bytes) -> int:
    message = message_from_bytes(raw, policy=policy.default)
    for name in ("from", "to", "cc", "reply-to", "subject", "date", "message-id"):
        message.get(name)
    for kind in ("plain", "html"):
        body = message.get_body(preferencelist=(kind,))
        if body is not None:
            body.get_content()
    size = 0
    for part in message.iter_attachments():
        size += len(part.get_payload(decode=True) or b"")
    return size


async def backlog(args: argparse.Namespace) -> dict:
    import aioimaplib

    started = time.monotonic()
    client = aioimaplib.IMAP4_SSL(
        "127.0.0.1",
        args.port,
        ssl_context=ssl.create_default_context(cafile=args.ca_file),
        timeout=60,
    )
    await client.wait_hello_from_server()
    assert (await client.login(args.user, args.password)).result == "OK"
    assert (await client.examine("INBOX")).result == "OK"
    client.protocol.state = aioimaplib.SELECTED  # aioimaplib only says so after SELECT
    response = await client.uid_search("ALL", charset=None)
    uids = [int(w) for line in response.lines[:-1] for w in bytes(line).split() if w.isdigit()]
    count = 0
    for first in range(0, len(uids), args.batch):
        chunk = ",".join(map(str, uids[first : first + args.batch]))
        response = await client.uid("fetch", chunk, "(UID RFC822.SIZE BODY.PEEK[])")
        for line in response.lines:
            if isinstance(line, bytearray):
                parse(bytes(line))
                count += 1
    await client.logout()
    return {
        "messages": count,
        "seconds": time.monotonic() - started,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(backlog(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
