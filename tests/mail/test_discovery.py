"""discover_mail_settings against a real DNS server on 127.0.0.1 (tests/support/dnsserver.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from mail.discovery import (
    Discovery,
    DiscoverySource,
    DnsSettings,
    ServerSuggestion,
    discover_mail_settings,
)
from mail.presets import Provider, Security
from tests.support.dnsserver import BlackHoleServer, DnsTestServer, RecordsDict

ZONES: list[str | RecordsDict] = [
    # Google Workspace on a custom domain: recognised by its MX host.
    """
$ORIGIN workspace.test.
@ 300 IN MX 1 aspmx.l.google.com.
@ 300 IN MX 5 alt1.aspmx.l.google.com.
""",
    # Microsoft 365: MX under mail.protection.outlook.com, second in preference order.
    {"m365.test": {"MX": ["0 m365-test.mail.protection.outlook.com.", "10 backup.m365.test."]}},
    # RFC 6186/8314 SRV records. Implicit TLS preferred over STARTTLS; _imaps says "not offered".
    """
$ORIGIN srv.test.
@                 300 IN MX  10 mx.srv.test.
mx                300 IN A   192.0.2.30
_submission._tcp  300 IN SRV 0 1 587 mail.srv.test.
_submissions._tcp 300 IN SRV 0 1 465 mail.srv.test.
_imaps._tcp       300 IN SRV 0 0 0 .
_imap._tcp        300 IN SRV 10 1 143 imap.srv.test.
_imap._tcp        300 IN SRV 20 1 1143 imap2.srv.test.
mail              300 IN A   192.0.2.31
imap              300 IN A   192.0.2.32
imap2             300 IN A   192.0.2.33
smtp              300 IN A   192.0.2.34
""",
    # SMTP submission explicitly not offered: no guessing smtp.<domain>, IMAP from conventions.
    """
$ORIGIN nosubmit.test.
_submissions._tcp 300 IN SRV 0 0 0 .
_submission._tcp  300 IN SRV 0 0 0 .
smtp              300 IN A   192.0.2.40
imap              300 IN A   192.0.2.41
""",
    # Only conventional names.
    {
        "conv.test": {"MX": "10 mx.conv.test."},
        "mx.conv.test": {"A": "192.0.2.50"},
        "smtp.conv.test": {"A": "192.0.2.51"},
        "imap.conv.test": {"AAAA": "2001:db8::52"},
    },
    # Only mail.<domain>: a weaker guess for both.
    {"mailonly.test": {"TXT": "hello"}, "mail.mailonly.test": {"A": "192.0.2.60"}},
    # SRV pointing at a provider's host names.
    {
        "_submissions._tcp.hosted.test": {"SRV": "0 1 465 smtp.fastmail.com."},
        "_imaps._tcp.hosted.test": {"SRV": "0 1 993 imap.fastmail.com."},
        "smtp.fastmail.com": {"A": "198.51.100.70"},
        "imap.fastmail.com": {"A": "198.51.100.71"},
    },
    # The _imaps lookup fails (SERVFAIL); discovery goes on and reports it.
    {"imap.flaky.test": {"A": "192.0.2.80"}},
    # A domain that exists but publishes nothing useful for mail.
    {"bare.test": {"TXT": "v=spf1 -all"}},
]


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsTestServer]:
    with DnsTestServer(*ZONES, servfail=["_imaps._tcp.flaky.test"]) as server:
        yield server


def settings_for(server: DnsTestServer | BlackHoleServer, **kw: float) -> DnsSettings:
    return DnsSettings(
        nameservers=server.nameservers,
        port=server.port,
        timeout=kw.get("timeout", 1.0),
        lifetime=kw.get("lifetime", 2.0),
    )


async def test_preset_by_domain_needs_no_dns() -> None:
    with BlackHoleServer() as hole:  # any query would time out
        found = await discover_mail_settings(
            " Someone@GMail.com ", settings_for(hole, timeout=2.0, lifetime=2.0)
        )
        assert hole.received == 0
    assert found.provider is Provider.GMAIL
    assert found.domain == "gmail.com"
    assert found.email == "Someone@GMail.com"
    assert found.smtp == ServerSuggestion(
        "smtp.gmail.com", 465, Security.TLS, DiscoverySource.PRESET_DOMAIN, 0.95
    )
    assert found.imap is not None
    assert (found.imap.host, found.imap.port, found.imap.security) == (
        "imap.gmail.com",
        993,
        Security.TLS,
    )
    assert found.imap.source is DiscoverySource.PRESET_DOMAIN


async def test_preset_by_mx_host(dns_server: DnsTestServer) -> None:
    found = await discover_mail_settings("ceo@workspace.test", settings_for(dns_server))
    assert found.provider is Provider.GMAIL
    assert found.smtp is not None and found.imap is not None
    assert found.smtp.source is DiscoverySource.PRESET_MX
    assert (found.smtp.host, found.smtp.port, found.smtp.security) == (
        "smtp.gmail.com",
        465,
        Security.TLS,
    )
    assert found.imap.host == "imap.gmail.com"
    assert 0 < found.smtp.confidence < 1
    assert not dns_server.queried("_submissions._tcp.workspace.test")  # stopped at the preset


async def test_preset_by_mx_host_office365(dns_server: DnsTestServer) -> None:
    found = await discover_mail_settings("x@m365.test", settings_for(dns_server))
    assert found.provider is Provider.OFFICE365
    assert found.smtp is not None
    assert (found.smtp.host, found.smtp.port, found.smtp.security) == (
        "smtp.office365.com",
        587,
        Security.STARTTLS,
    )


async def test_srv_records(dns_server: DnsTestServer) -> None:
    found = await discover_mail_settings("user@srv.test", settings_for(dns_server))
    assert found.provider is None
    assert found.smtp == ServerSuggestion(
        "mail.srv.test", 465, Security.TLS, DiscoverySource.SRV, 0.8
    )
    # _imaps._tcp says "." (not offered), so _imap._tcp's best-priority target wins.
    assert found.imap == ServerSuggestion(
        "imap.srv.test", 143, Security.STARTTLS, DiscoverySource.SRV, 0.8
    )
    assert found.errors == ()


async def test_srv_not_offered_is_respected(dns_server: DnsTestServer) -> None:
    found = await discover_mail_settings("user@nosubmit.test", settings_for(dns_server))
    assert found.smtp is None  # smtp.nosubmit.test exists, but SRV says no submission service
    assert found.imap is not None
    assert found.imap.source is DiscoverySource.CONVENTIONAL
    assert found.imap.host == "imap.nosubmit.test"


async def test_srv_target_at_provider_identifies_it(dns_server: DnsTestServer) -> None:
    found = await discover_mail_settings("me@hosted.test", settings_for(dns_server))
    assert found.provider is Provider.FASTMAIL
    assert found.smtp is not None and found.smtp.source is DiscoverySource.SRV
    assert found.smtp.host == "smtp.fastmail.com"
    assert found.smtp.confidence < 0.8  # target outside the domain


async def test_conventional_names(dns_server: DnsTestServer) -> None:
    found = await discover_mail_settings("user@conv.test", settings_for(dns_server))
    assert found.provider is None
    assert found.smtp == ServerSuggestion(
        "smtp.conv.test", 587, Security.STARTTLS, DiscoverySource.CONVENTIONAL, 0.5
    )
    assert found.imap == ServerSuggestion(
        "imap.conv.test", 993, Security.TLS, DiscoverySource.CONVENTIONAL, 0.5
    )


async def test_conventional_mail_host_is_a_weaker_guess(dns_server: DnsTestServer) -> None:
    found = await discover_mail_settings("user@mailonly.test", settings_for(dns_server))
    assert found.smtp is not None and found.imap is not None
    assert found.smtp.host == found.imap.host == "mail.mailonly.test"
    assert found.smtp.confidence < 0.5


@pytest.mark.parametrize("email", ["nobody@unknown-domain.test", "nobody@bare.test"])
async def test_unknown_domain_gives_empty_well_formed_answer(
    dns_server: DnsTestServer, email: str
) -> None:
    found = await discover_mail_settings(email, settings_for(dns_server))
    assert found == Discovery(email, email.split("@")[1], None, None, None, ())
    assert not found.found
    assert json.loads(json.dumps(found.to_dict())) == {
        "email": email,
        "domain": email.split("@")[1],
        "provider": None,
        "smtp": None,
        "imap": None,
        "errors": [],
    }


async def test_servfail_is_reported_and_discovery_goes_on(dns_server: DnsTestServer) -> None:
    found = await discover_mail_settings("user@flaky.test", settings_for(dns_server))
    assert found.imap is not None
    assert found.imap.host == "imap.flaky.test"
    assert found.imap.source is DiscoverySource.CONVENTIONAL
    assert any("_imaps._tcp.flaky.test" in e and "SERVFAIL" in e for e in found.errors)


async def test_dns_errors_are_reported_not_raised() -> None:
    with BlackHoleServer() as hole:
        found = await discover_mail_settings(
            "user@example.test", settings_for(hole, timeout=0.2, lifetime=0.3)
        )
    assert found.smtp is None and found.imap is None
    assert found.errors
    assert all("The resolution lifetime expired" in e for e in found.errors)


@pytest.mark.parametrize(
    ("email", "fragment"),
    [
        ("", "empty"),
        ("no-at-sign.example.com", "expected name@domain"),
        ("@example.com", "expected name@domain"),
        ("user@", "expected name@domain"),
        ("us er@example.com", "whitespace"),
        ("user@localhost", "needs a dot"),
        ("user@[192.0.2.1]", "address literal"),
        ("user@exa_mple.com", "letters, digits, hyphens"),
    ],
)
async def test_invalid_email_raises_value_error(email: str, fragment: str) -> None:
    settings = DnsSettings(nameservers=["127.0.0.1"], port=9)
    with pytest.raises(ValueError, match=fragment):
        await discover_mail_settings(email, settings)
