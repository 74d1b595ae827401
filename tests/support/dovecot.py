"""A private Dovecot (Debian's packages, version 2.3) for tests, entirely in a temp folder.

`Dovecot(users, certs)` writes its own configuration and runs ``dovecot -F -c <file>`` as a
child process: base_dir, state_dir, log, a passwd-file of virtual users, maildirs, and TLS
from the suite's trustme CA, all in a folder of its own. Everything listens on 127.0.0.1, on
ports picked free at construction and kept across restarts:

- ``imap_port``: IMAP, plaintext with STARTTLS; ``imaps_port``: implicit TLS;
- ``lmtp_port``: LMTP, the delivery hop ``deliver()`` uses (as an MTA would);
- ``submission_port``: submission with STARTTLS, relaying to ``relay``, an aiosmtpd on
  loopback that hands what it gets to LMTP for the recipients who are users here (Dovecot's
  submission closes the connection after a good AUTH when its relay is unreachable).

Every user has a ``Sent`` folder marked ``\\Sent`` (RFC 6154 special-use), as distributions
configure it.

Use it as a context manager; ``stop()``/``start()``/``restart()`` stop and start the server
itself, keeping the maildirs (mail survives, UIDVALIDITY stays). Use ``require_dovecot()``
first: it skips the test, naming the packages, where Dovecot is not installed.

Dovecot gives each user at most 10 sessions per IP and falls back to slow polling past ~128
sessions of one system user (inotify), so tests spread their load over many virtual users.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import smtplib
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil
import pytest

from tests.support.mailservers import HOST, MailCerts, ReceivedMessage, SmtpMode, SmtpServer
from tests.support.waiting import wait_until_sync

PACKAGES = "dovecot-imapd (and dovecot-lmtpd, dovecot-submissiond)"
SKIP_REASON = f"needs Debian package {PACKAGES}"
LIBEXEC_DIRS = ("/usr/lib/dovecot", "/usr/libexec/dovecot")
INSTANCE_PREFIX = "inboxd-"

# Every instance this test run started: (instance name, config file), for the session's
# final check that none is left running (`dovecot_left_running`).
STARTED: list[tuple[str, str]] = []


def dovecot_binary() -> str | None:
    """The ``dovecot`` master binary, with its imap, lmtp and submission services."""
    found = shutil.which("dovecot", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    services = ("imap", "lmtp", "submission")
    if found and any(all((Path(d) / s).exists() for s in services) for d in LIBEXEC_DIRS):
        return found
    return None


def require_dovecot() -> str:
    """The binary, or skip the test naming the Debian packages it needs."""
    binary = dovecot_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not version.startswith("2.3."):  # the configuration below is 2.3's syntax
        pytest.skip(f"{SKIP_REASON}: Dovecot 2.3 (Debian bookworm's), found {version!r}")
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _accounts() -> tuple[str, str, str, int, int]:
    """(internal user and group, login user, mail uid and gid). As root: the package's own
    users and ``nobody`` for mail; otherwise everything runs as whoever runs the tests."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return "dovecot", "dovecot", "dovenull", nobody.pw_uid, nobody.pw_gid
    me = pwd.getpwuid(os.getuid())
    return me.pw_name, grp.getgrgid(me.pw_gid).gr_name, me.pw_name, me.pw_uid, me.pw_gid


class Dovecot:
    def __init__(
        self,
        users: Mapping[str, str],
        certs: MailCerts,
        *,
        oauth2_introspection_url: str | None = None,
        oauth2_mechanisms: tuple[str, ...] = ("xoauth2", "oauthbearer"),
    ) -> None:
        for name, password in users.items():
            if any(c in f"{name}{password}" for c in ":\r\n"):
                raise ValueError(f"user {name!r}: no ':' or line break in a passwd-file entry")
        self.binary = require_dovecot()
        self.users = dict(users)
        # Set: IMAP and submission also take XOAUTH2 and OAUTHBEARER, whose tokens the
        # ``oauth2`` passdb checks at this RFC 7662 endpoint (tests.support.oauth_provider).
        self.oauth2_introspection_url = oauth2_introspection_url
        self.oauth2_mechanisms = " ".join(oauth2_mechanisms)
        self.ca_file = certs.ca_file  # what clients trust (the suite's test CA)
        self.instance = f"{INSTANCE_PREFIX}{secrets.token_hex(4)}"
        self.imap_port = _free_port()
        self.imaps_port = _free_port()
        self.lmtp_port = _free_port()
        self.submission_port = _free_port()
        self.relay = SmtpServer(SmtpMode.PLAIN_NO_AUTH, {}, on_message=self._relay_to_lmtp)
        # Outside pytest's basetemp, whose parents are private to root: Dovecot's own users
        # (dovecot, dovenull, the mail uid) must reach their files here.
        self.folder = Path(tempfile.mkdtemp(prefix="inboxd-dovecot-"))
        self.folder.chmod(0o755)
        self.config_file = self.folder / "dovecot.conf"
        self.log_file = self.folder / "dovecot.log"
        self._certs = certs
        self._process: subprocess.Popen[bytes] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.relay.start()
            self._write_config()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.relay.stop()
            shutil.rmtree(self.folder, ignore_errors=True)

    def start(self) -> None:
        """Start the server; returns once it listens on every port."""
        if self._process is not None:
            return
        if (self.instance, str(self.config_file)) not in STARTED:
            STARTED.append((self.instance, str(self.config_file)))
        with open(self.folder / "dovecot.stderr", "ab") as output:
            self._process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest is for pytest; stop() ends this
            )
        ports = {self.imap_port, self.imaps_port, self.lmtp_port, self.submission_port}
        master = psutil.Process(self._process.pid)

        def ready() -> bool:
            # Asked of the kernel, not by connecting: a connection would start a login
            # process, and one started as the server stops holds its stop up for seconds.
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"dovecot exited ({self._process.returncode}): {self.log()}")
            listening = {
                c.laddr.port for c in master.net_connections("tcp") if c.status == "LISTEN"
            }
            return ports <= listening

        try:
            wait_until_sync(ready, f"Dovecot {self.instance} listening on {sorted(ports)}")
        except BaseException:
            self.stop()
            raise

    def stop(self, *, crash: bool = False) -> None:
        """Stop the server and every process of it (open sessions are cut, as in a real
        restart); the maildirs stay. ``crash``: SIGKILL to every process at once instead, as
        when the server dies (the failure drills in bench/drills use both)."""
        process, self._process = self._process, None
        if process is None:
            return
        if crash:
            process.kill()
            for child in processes_of(self.instance, str(self.config_file)):
                with contextlib.suppress(psutil.Error):
                    child.kill()
            process.wait(10)
        if process.poll() is None:
            # What `doveadm stop` sends the master; its sessions get it at once too (the
            # master would wait ~10 s for an imap process in IDLE to give up).
            process.terminate()
            for child in processes_of(self.instance, str(self.config_file)):
                if child.pid != process.pid and not child.info["cmdline"][0].endswith("/log"):
                    with contextlib.suppress(psutil.Error):
                        child.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        left = processes_of(self.instance, str(self.config_file))
        _, alive = psutil.wait_procs(left, timeout=10)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """Dovecot's log and whatever the master printed, for failure messages."""
        parts = [p.read_text(errors="replace") for p in (self.log_file,) if p.exists()]
        stderr = self.folder / "dovecot.stderr"
        if stderr.exists():
            parts.append(stderr.read_text(errors="replace"))
        return "\n".join(parts)[-4000:]

    # --- mail -----------------------------------------------------------------------------

    def deliver(self, user: str, raw: bytes, sender: str = "sender@sender.test") -> None:
        """Deliver ``raw`` to ``user``'s INBOX over LMTP, as an MTA would. Blocking, and
        done when Dovecot has saved it."""
        with smtplib.LMTP(HOST, self.lmtp_port, local_hostname="localhost", timeout=30) as lmtp:
            refused = lmtp.sendmail(sender, [user], raw)
        assert not refused, refused

    def _relay_to_lmtp(self, message: ReceivedMessage) -> None:
        """What submission relays reaches the recipients who are users here, over LMTP."""
        for rcpt in message.rcpt_tos:
            if rcpt in self.users:
                self.deliver(rcpt, message.data, message.mail_from or "")

    # --- configuration --------------------------------------------------------------------

    def _write_config(self) -> None:
        internal, group, login, mail_uid, mail_gid = _accounts()
        root_user = os.geteuid() == 0
        root = self.folder
        for sub in ("run", "state", "mail", "tls"):
            (root / sub).mkdir(exist_ok=True)
        (root / "mail").chmod(0o755)
        if root_user:
            os.chown(root / "mail", mail_uid, mail_gid)
        leaf = self._certs.ca.issue_cert("localhost", HOST)
        leaf.private_key_pem.write_to_path(str(root / "tls" / "key.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(root / "tls" / "cert.pem"))
        (root / "tls" / "key.pem").chmod(0o600)
        passwd = "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items())
        (root / "passwd").write_text(passwd)
        (root / "passwd").chmod(0o644)  # read by the auth process, which runs as `internal`
        oauth2 = ""
        if self.oauth2_introspection_url is not None:
            (root / "oauth2.conf").write_text(
                OAUTH2_BACKEND.format(url=self.oauth2_introspection_url)
            )
            (root / "oauth2.conf").chmod(0o644)
            oauth2 = OAUTH2_PASSDB.format(root=root, mechanisms=self.oauth2_mechanisms)
        self.config_file.write_text(
            CONFIG.format(
                oauth2=oauth2,
                mechanisms=f"plain login {self.oauth2_mechanisms}" if oauth2 else "plain login",
                instance=self.instance,
                root=root,
                log=self.log_file,
                internal=internal,
                group=group,
                login=login,
                uid=mail_uid,
                gid=mail_gid,
                imap=self.imap_port,
                imaps=self.imaps_port,
                lmtp=self.lmtp_port,
                submission=self.submission_port,
                relay=self.relay.port,
                # Dovecot's defaults, which only root can do.
                anvil_chroot="empty" if root_user else "",
                login_chroot="login" if root_user else "",
            )
        )


# Dovecot 2.3 syntax (2.4 changed it). A block's braces each end their line.
CONFIG = """\
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {log}
protocols = imap lmtp submission
listen = 127.0.0.1
hostname = localhost
postmaster_address = postmaster@example.test
default_internal_user = {internal}
default_internal_group = {group}
default_login_user = {login}
first_valid_uid = {uid}
last_valid_uid = {uid}

ssl = yes
ssl_cert = <{root}/tls/cert.pem
ssl_key = <{root}/tls/key.pem

auth_mechanisms = {mechanisms}
{oauth2}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
mail_location = maildir:~/Maildir
# A Sent folder marked \\Sent (RFC 6154), made at a user's first login, as distributions ship.
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
mail_fsync = never
stats_writer_socket_path =

service anvil {{
  chroot = {anvil_chroot}
}}
service imap-login {{
  chroot = {login_chroot}
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {lmtp}
  }}
}}
service submission-login {{
  chroot = {login_chroot}
  inet_listener submission {{
    port = {submission}
  }}
}}
submission_relay_host = 127.0.0.1
submission_relay_port = {relay}
"""


# With an OAuth provider: its tokens for XOAUTH2 and OAUTHBEARER, checked by introspection.
# First, and for those mechanisms only: user lookups (LMTP) and passwords skip it.
OAUTH2_PASSDB = """\
# A refused token is what these tests are about: answer it at once (the default waits 2 s).
auth_failure_delay = 0
passdb {{
  driver = oauth2
  mechanisms = {mechanisms}
  args = {root}/oauth2.conf
}}
"""
# Dovecot 2.3's oauth2 passdb (RFC 7662): POST token=..., the user is the answer's ``email``,
# which must be the login name, and ``active`` must be true.
OAUTH2_BACKEND = """\
introspection_mode = post
introspection_url = {url}
force_introspection = yes
username_attribute = email
active_attribute = active
active_value = true
"""


def processes_of(instance: str, config_file: str) -> list[psutil.Process]:
    """The running processes of one instance: its master (by config file) and the children
    it names ``dovecot-<instance>/<service>``."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] == psutil.STATUS_ZOMBIE or not cmdline:
            continue
        if cmdline[0].startswith(f"dovecot-{instance}/") or config_file in cmdline:
            found.append(process)
    return found


def dovecot_left_running() -> list[str]:
    """Stop whatever the run's instances left running; returns what that was."""
    left = [p for instance, config in STARTED for p in processes_of(instance, config)]
    _, alive = psutil.wait_procs(left, timeout=10)  # a stopping instance takes a moment
    described = []
    for process in alive:
        with contextlib.suppress(psutil.Error):
            described.append(" ".join(process.cmdline()))
            process.kill()
    return described
