"""A private Dovecot for the receiving drills: IMAP over implicit TLS on a loopback port, mail
kept in Maildirs in the drill's temp dir, so it survives a restart of the server.

Dovecot runs in the foreground (``dovecot -F``) in a session of its own, so stopping it stops
every process it started (the master, its login and imap processes) by that session's process
group, never by name. Mail is owned by the system user ``mail``; Dovecot's internal users are
the Debian package's ``dovecot`` / ``dovenull``. Only ``bench/drills`` uses this; the test
suite's Dovecot support is its own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import trustme

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
MAIL_USER = "mail"

CONFIG = """
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{base}/cert.pem
ssl_key = <{base}/key.pem
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = {uid}
first_valid_gid = {gid}
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:{base}/mail/%u
mail_max_userip_connections = 500
mailbox_idle_check_interval = 5 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
  process_limit = 200
  client_limit = 1000
  service_count = 0
}}
service imap {{
  process_limit = 1000
}}
service auth {{
  client_limit = 2000
}}
service stats {{
  client_limit = 2000
}}
service anvil {{
  client_limit = 2000
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def available() -> str | None:
    """None when Dovecot can run here, else why not."""
    if not os.path.exists(DOVECOT):
        return "dovecot is not installed (Debian: apt-get install dovecot-imapd)"
    if os.geteuid() != 0:
        return "the drill's Dovecot runs mail as the system user 'mail' and needs root"
    return None


class Dovecot:
    """Dovecot with ``users`` (address -> password) on 127.0.0.1:``port`` (implicit TLS)."""

    def __init__(self, base: Path, users: dict[str, str]) -> None:
        self.base = base
        self.port = free_port()
        self.users = dict(users)
        entry = pwd.getpwnam(MAIL_USER)
        base.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "state", "mail"):
            (base / sub).mkdir(exist_ok=True)
        os.chown(base / "mail", entry.pw_uid, entry.pw_gid)
        # Dovecot's processes (users dovecot, dovenull, mail) must reach into the temp dir.
        for path in (base, *base.parents):
            if str(path).startswith(("/tmp/", "/var/tmp/")) or path == base:
                os.chmod(path, os.stat(path).st_mode | 0o755)
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        leaf.private_key_pem.write_to_path(str(base / "key.pem"))
        with (base / "cert.pem").open("wb") as cert:
            for pem in leaf.cert_chain_pems:
                cert.write(pem.bytes())
        self.ca_pem = ca.cert_pem.bytes()
        (base / "passwd").write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
        (base / "dovecot.conf").write_text(
            CONFIG.format(base=base, uid=entry.pw_uid, gid=entry.pw_gid, port=self.port)
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.base / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=(self.base / "dovecot.stderr").open("ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited {self.proc.returncode}: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen on {self.port}: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop Dovecot: SIGTERM to the master is its own shutdown (it ends its children);
        SIGKILL goes to the whole process group at once, a crash. Leftovers are killed."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Login and imap processes of the group that outlive the master.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        text = ""
        for name in ("dovecot.log", "dovecot.stderr"):
            path = self.base / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
