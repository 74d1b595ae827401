"""Fixtures for the mail probe tests: certificates, users and real servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mail.probes import Endpoint, Login, NetworkPolicy, ProbeSettings, Security
from storage.secrets import Secret
from tests.support.mailservers import (
    ImapMode,
    ImapServer,
    MailCerts,
    SmtpMode,
    SmtpServer,
    make_certs,
)
from tests.support.oauth_provider import OAuthProvider

USER = "alice@example.test"
# Distinctive, with characters that need IMAP quoting, so leaks and escaping bugs both show.
PASSWORD = 'Zq9-leak\\canary"7Hx'
USERS = {USER: PASSWORD, "bob@example.test": "bob-pass-123"}

# Small but not tight: loopback answers in milliseconds, and CI machines have two cores.
CONNECT_TIMEOUT = 1.0
OVERALL_TIMEOUT = 3.0


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> MailCerts:
    return make_certs(tmp_path_factory.mktemp("mail-certs"))


@pytest.fixture
def probe_settings(certs: MailCerts) -> ProbeSettings:
    return ProbeSettings(
        connect_timeout=CONNECT_TIMEOUT,
        overall_timeout=OVERALL_TIMEOUT,
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=certs.ca_file,
    )


EndpointFactory = Callable[..., Endpoint]


@pytest.fixture
def endpoint() -> EndpointFactory:
    def make(
        port: int,
        security: Security,
        *,
        password: str = PASSWORD,
        username: str = USER,
        host: str = "127.0.0.1",
        pin: str | None = None,
    ) -> Endpoint:
        return Endpoint(host, port, security, username, Secret(password), pin)

    return make


@pytest.fixture
def smtp_starttls(certs: MailCerts) -> Iterator[SmtpServer]:
    with SmtpServer(SmtpMode.STARTTLS, USERS, ssl_context=certs.server_context) as server:
        yield server


@pytest.fixture
def smtp_tls(certs: MailCerts) -> Iterator[SmtpServer]:
    with SmtpServer(SmtpMode.TLS, USERS, ssl_context=certs.server_context) as server:
        yield server


@pytest.fixture
def imap_tls(certs: MailCerts) -> Iterator[ImapServer]:
    with ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context) as server:
        yield server


@pytest.fixture
def imap_starttls(certs: MailCerts) -> Iterator[ImapServer]:
    with ImapServer(ImapMode.STARTTLS, USERS, ssl_context=certs.server_context) as server:
        yield server


# --- OAuth (XOAUTH2 / OAUTHBEARER) ---------------------------------------------------------

OAUTH_USER = "olga@example.test"


@pytest.fixture(scope="session")
def provider() -> Iterator[OAuthProvider]:
    """The OAuth provider the OAuth mail servers ask about tokens (tests.support.oauth_mail)."""
    with OAuthProvider() as running:
        running.add_user(OAUTH_USER)
        yield running


OAuthEndpointFactory = Callable[..., Endpoint]


@pytest.fixture
def oauth_endpoint() -> OAuthEndpointFactory:
    def make(port: int, security: Security, token: str, *, username: str = OAUTH_USER) -> Endpoint:
        return Endpoint("127.0.0.1", port, security, username, Secret(token), login=Login.OAUTH2)

    return make
