"""Floor for B12 and B13: aiosmtplib sending the same message directly, nothing else.

Per message: the message built with the standard library's header registry (EmailMessage,
policy.SMTP: From with a display name, To, Subject, Date, a Message-ID, a text part with the
signature appended, as inboxd sends it), then one SMTP session of its own, as inboxd's worker
opens one per message: connect, EHLO, STARTTLS (the test CA), EHLO, AUTH, MAIL, RCPT, DATA,
QUIT. No database, no queue, no lease, no Sent-folder copy.

    python bench/floors/smtp_send.py burst --port P --ca-file CA --password PW \
        --users u1@x,u2@x --count 1000 --concurrency 8

prints one JSON line: {"seconds", "sent", "failed", "message_ids"}. B12 imports ``send_one``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
import uuid
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP

import aiosmtplib

HOST = "127.0.0.1"
TEXT = "Hello,\n\nthe numbers for this quarter are attached below.\n\n" + "Line of text. " * 20
SIGNATURE = "Bench Sender, Sales"


def build(sender: str, to: str, subject: str) -> tuple[str, bytes]:
    """(Message-ID, the message's bytes, CRLF line endings)."""
    message = EmailMessage(policy=SMTP)
    local, _, domain = sender.partition("@")
    message["From"] = Address("Bench Inbox", local, domain)
    message["To"] = Address("Rita Receiver", *to.split("@"))
    message["Subject"] = subject
    message["Date"] = datetime.now(UTC)
    message_id = f"<{uuid.uuid4().hex}@{domain}>"
    message["Message-ID"] = message_id
    message.set_content(f"{TEXT}\n\n-- \n{SIGNATURE}\n")
    return message_id, message.as_bytes()


async def send_one(
    port: int, context: ssl.SSLContext, user: str, password: str, to: str, subject: str
) -> str:
    """One message in one session; its Message-ID (raises if the server refused it)."""
    message_id, data = build(user, to, subject)
    client = aiosmtplib.SMTP(
        hostname=HOST, port=port, start_tls=True, tls_context=context, timeout=30
    )
    await client.connect()
    try:
        await client.login(user, password)
        errors, _ = await client.sendmail(user, [to], data)
        if errors:
            raise RuntimeError(f"refused: {errors}")
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()
    return message_id


async def burst(args: argparse.Namespace) -> dict:
    context = ssl.create_default_context(cafile=args.ca_file)
    users = args.users.split(",")
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.count):
        queue.put_nowait(i)
    ids: list[str] = []
    failed: list[str] = []

    async def sender() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            try:
                ids.append(
                    await send_one(
                        args.port, context, users[i % len(users)], args.password,
                        "rita@receiver.example.com", f"B13 floor {i}",
                    )
                )  # fmt: skip
            except Exception as exc:  # counted, not retried: the floor has no outbox
                failed.append(repr(exc)[:200])

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(args.concurrency)))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "sent": len(ids), "failed": failed[:5], "message_ids": ids}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["burst"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--users", required=True, help="comma-separated logins")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    import uvloop

    print(json.dumps(uvloop.run(burst(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
