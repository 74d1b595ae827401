"""One real mail server in its own process, for B4/B5: aiosmtpd (SMTP, STARTTLS) or pymap
(IMAP, implicit TLS), from tests/support/mailservers.py, on 127.0.0.1 and an ephemeral port.

    python bench/mailserver.py smtp --certdir DIR --users 3000 --password PW

Prints ``{"port": N}`` once listening. Then reads commands on stdin, one per line:
``count`` answers ``{"auth_attempts": N}``; ``quit`` (or end of input) stops it. It also stops
by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.mailservers import ImapMode, ImapServer, SmtpMode, SmtpServer


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
        server = ImapServer(ImapMode.TLS, users, ssl_context=ctx)
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
            elif command == "quit":
                break
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
