"""Results are JSON-safe, round-trip, and never carry the password — even when a server
echoes it back."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import pytest

from mail.probes import (
    Endpoint,
    ProbeCode,
    ProbeResult,
    ProbeSettings,
    Security,
    TlsInfo,
    normalize_fingerprint,
    probe_imap,
    probe_smtp,
)
from storage.secrets import Secret
from tests.mail.conftest import PASSWORD, USER, EndpointFactory
from tests.support.mailservers import (
    ImapServer,
    LineServer,
    MailCerts,
    SmtpServer,
    closed_port,
)

SECRET_FORMS = [
    PASSWORD,
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    PASSWORD.replace("\\", "\\\\").replace('"', '\\"'),  # as an IMAP quoted string
]


def assert_no_secret(result: ProbeResult) -> None:
    texts = [json.dumps(result.to_dict()), repr(result), str(result)]
    for text in texts:
        for form in SECRET_FORMS:
            assert form not in text


def smtp_echo(line: bytes) -> Sequence[bytes] | None:
    """An SMTP server that quotes back everything it is sent (a careless or hostile one)."""
    verb = line.split(b" ", 1)[0].strip().upper()
    if verb == b"EHLO":
        return [b"250-echo\r\n", b"250 AUTH PLAIN LOGIN\r\n"]
    if verb == b"QUIT":
        return None
    return [b"535 you sent " + line.strip() + b"\r\n"]


def imap_echo(line: bytes) -> Sequence[bytes] | None:
    tag, _, rest = line.strip().partition(b" ")
    if rest.upper().startswith(b"CAPABILITY"):
        return [b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n", tag + b" OK done\r\n"]
    if rest.upper().startswith(b"LOGOUT"):
        return None
    return [tag + b" NO you sent " + rest + b"\r\n"]


async def test_echoing_smtp_server_cannot_leak_the_password(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with LineServer(b"220 echo ESMTP\r\n", smtp_echo) as server:
        result = await probe_smtp(endpoint(server.port, Security.NONE), probe_settings)
        assert any(SECRET_FORMS[2].encode() in line for line in server.received)
    assert result.code is ProbeCode.AUTH_FAILED
    assert "***" in result.message  # the echoed credential was blanked, not dropped silently
    assert_no_secret(result)


async def test_echoing_imap_server_cannot_leak_the_password(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with LineServer(b"* OK echo\r\n", imap_echo) as server:
        result = await probe_imap(endpoint(server.port, Security.NONE), probe_settings)
    assert result.code is ProbeCode.AUTH_FAILED
    assert "***" in result.message
    assert_no_secret(result)


async def test_no_secret_in_any_outcome(
    certs: MailCerts,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    smtp_starttls: SmtpServer,
    imap_tls: ImapServer,
) -> None:
    outcomes = [
        await probe_smtp(endpoint(smtp_starttls.port, Security.STARTTLS), probe_settings),
        await probe_smtp(endpoint(smtp_starttls.port, Security.TLS), probe_settings),
        await probe_imap(endpoint(imap_tls.port, Security.TLS), probe_settings),
        await probe_imap(endpoint(imap_tls.port, Security.TLS, username="nobody"), probe_settings),
        await probe_imap(endpoint(closed_port(), Security.TLS), probe_settings),
        await probe_smtp(endpoint(closed_port(), Security.STARTTLS, host="a..b"), probe_settings),
    ]
    assert {r.code for r in outcomes} >= {ProbeCode.OK, ProbeCode.AUTH_FAILED}
    for result in outcomes:
        assert_no_secret(result)


def test_endpoint_repr_hides_the_password() -> None:
    endpoint = Endpoint("mail.example.com", 587, Security.STARTTLS, USER, Secret(PASSWORD))
    assert PASSWORD not in repr(endpoint)
    assert PASSWORD not in str(endpoint)
    assert PASSWORD not in repr(endpoint.password)


def test_result_round_trip_through_json() -> None:
    result = ProbeResult(
        protocol="imap",
        ok=False,
        code=ProbeCode.CERTIFICATE_UNTRUSTED,
        message="untrusted",
        hint="pin it",
        field="imap.tlsCertificateSha256",
        latency_ms=12,
        tls=TlsInfo(
            version="TLSv1.3",
            cipher="TLS_AES_256_GCM_SHA384",
            subject="CN=x",
            issuer="CN=y",
            not_before="2024-01-01T00:00:00+00:00",
            not_after="2030-01-01T00:00:00+00:00",
            sha256_fingerprint="AB:" * 31 + "AB",
            trusted=False,
            pinned=False,
        ),
        capabilities=["IMAP4REV1", "IDLE"],
        auth_mechanisms=["PLAIN"],
        greeting="* OK",
        size_limit=None,
        message_count=3,
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["code"] == "CERTIFICATE_UNTRUSTED"
    assert data["transient"] is False
    assert ProbeResult.from_dict(data) == result


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (ProbeCode.TIMEOUT, True),
        (ProbeCode.CONNECTION_REFUSED, True),
        (ProbeCode.HOST_NOT_FOUND, True),
        (ProbeCode.AUTH_FAILED, False),
        (ProbeCode.HOST_NOT_ALLOWED, False),
        (ProbeCode.OK, False),
    ],
)
def test_transient_codes(code: ProbeCode, transient: bool) -> None:
    assert ProbeResult("smtp", False, code, "m").transient is transient


def test_fingerprint_normalisation() -> None:
    colon = "AB:CD:" + "00:" * 29 + "EF"
    plain = "abcd" + "00" * 29 + "ef"
    assert normalize_fingerprint(colon) == plain
    assert normalize_fingerprint("sha256:" + plain.upper()) == plain
    with pytest.raises(ValueError):
        normalize_fingerprint("abc")
