"""One real mail server in its own process, for B4/B5: aiosmtpd (SMTP, STARTTLS) or pymap
(IMAP, implicit TLS), from tests/support/mailservers.py, on 127.0.0.1 and an ephemeral port.

    python bench/mailserver.py smtp --certdir DIR --users 3000 --password PW

Prints ``{"port": N}`` once listening. Then reads commands on stdin, one per line:
``count`` answers ``{"auth_attempts": N}``; ``connections`` answers ``{"open": N, "peak": N}``
(IMAP connections open now and at most, as the server counts them); ``fill USER N EVERY KIB``
puts N messages into USER's INBOX, every EVERY-th with a KIB KiB attachment (B10), and
answers ``{"filled": N}``; ``quit`` (or end of input) stops it. It also stops by itself after
--max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.mailservers import ImapMode, ImapServer, SmtpMode, SmtpServer

PAD = ("The quick brown fox jumps over the lazy dog. " * 2 + "\r\n") * 20


class CountingImapServer(ImapServer):
    """pymap, counting the connections it holds (B9 asks how many sessions inboxd keeps)."""

    open_connections = 0
    peak_connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        try:
            await super().handle(reader, writer)
        finally:
            self.open_connections -= 1

    async def _fill(self, name: str, count: int, every: int, kib: int) -> int:
        for i in range(count):
            await self._append(name, backlog_message(name, i, every, kib))
            if i % 200 == 199:
                await asyncio.sleep(0)  # let sessions breathe
        return count

    def fill(self, name: str, count: int, every: int, kib: int) -> int:
        return self.call(self._fill(name, count, every, kib), within=600)


def backlog_message(to: str, i: int, every: int, kib: int) -> bytes:
    """Message ``i`` of a B10 backlog: text and HTML, and every ``every``-th an attachment."""
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = f"Sender {i % 50} <sender{i % 50}@sender.example.com>"
    message["To"] = to
    message["Subject"] = f"Backlog message {i}"
    message["Message-ID"] = f"<backlog-{i}-{to}>"
    message["Date"] = "Sun, 06 Dec 2026 12:00:00 +0000"
    message.set_content(f"Hello {i}.\r\n{PAD}")
    message.add_alternative(f"<p>Hello <b>{i}</b>.</p><p>{PAD}</p>", subtype="html")
    if every and i % every == 0:
        blob = bytes((i + n) % 251 for n in range(kib * 1024))
        message.add_attachment(
            blob, maintype="application", subtype="octet-stream", filename=f"file-{i}.bin"
        )
    return message.as_bytes()


def user(i: int) -> str:
    return f"u{i:05d}@bench.example.com"


def server_context(certdir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certdir / "server.pem", certdir / "server.key")
    return ctx


def make_certs(certdir: Path) -> Path:
    """A test CA and a leaf for localhost and 127.0.0.1; returns the CA file clients trust."""
    import trustme

    certdir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(certdir / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(certdir / "server.key"))
    with open(certdir / "server.pem", "wb") as handle:
        for blob in leaf.cert_chain_pems:
            handle.write(blob.bytes())
    return certdir / "ca.pem"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("protocol", choices=["smtp", "imap"])
    parser.add_argument("--certdir", type=Path, required=True)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--password", required=True)
    parser.add_argument("--max-seconds", type=float, default=3600)
    args = parser.parse_args()
    users = {user(i): args.password for i in range(args.users)}
    ctx = server_context(args.certdir)
    server: SmtpServer | ImapServer
    if args.protocol == "smtp":
        server = SmtpServer(SmtpMode.STARTTLS, users, ssl_context=ctx)
    else:
        server = CountingImapServer(ImapMode.TLS, users, ssl_context=ctx)
    server.start()
    # Bounded lifetime, whatever the parent does.
    timer = threading.Timer(args.max_seconds, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    print(json.dumps({"port": server.port}), flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "count":
                print(json.dumps({"auth_attempts": server.auth_attempts}), flush=True)
            elif command == "connections" and isinstance(server, CountingImapServer):
                answer = {"open": server.open_connections, "peak": server.peak_connections}
                print(json.dumps(answer), flush=True)
            elif command.startswith("fill ") and isinstance(server, CountingImapServer):
                _, name, count, every, kib = command.split()
                filled = server.fill(name, int(count), int(every), int(kib))
                print(json.dumps({"filled": filled}), flush=True)
            elif command == "quit":
                break
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
