"""check_domain_setup against a real DNS server on 127.0.0.1 (tests/support/dnsserver.py)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mail.dns_checks import (
    CheckState,
    DnsSettings,
    DomainSetupStatus,
    RecordCheck,
    check_domain_setup,
)
from tests.support.dnsserver import BlackHoleServer, DnsTestServer, RecordsDict

# --- keys ------------------------------------------------------------------------------------


def _spki_b64(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _is_probable_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(40):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if candidate % 65537 != 1 and _is_probable_prime(candidate):
            return candidate


def rsa_512_public_key() -> rsa.RSAPublicKey:
    """A real 512-bit RSA key. cryptography refuses to *generate* keys under 1024 bits, so the
    primes are made here and cryptography builds and serialises the key from them."""
    n = _prime(256) * _prime(256)
    assert n.bit_length() == 512
    return rsa.RSAPublicNumbers(65537, n).public_key()


RSA_2048 = _spki_b64(rsa.generate_private_key(65537, 2048).public_key())
RSA_1024 = _spki_b64(rsa.generate_private_key(65537, 1024).public_key())
RSA_512 = _spki_b64(rsa_512_public_key())
ED25519_RAW = base64.b64encode(
    ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).decode()

# --- zones -----------------------------------------------------------------------------------

GOOD_ZONE = f"""
$ORIGIN good.test.
$TTL 300
@            IN MX  10 mx1.good.test.
@            IN MX  20 mx2.good.test.
mx1          IN A    192.0.2.10
mx1          IN AAAA 2001:db8::10
mx2          IN A    192.0.2.11
@            IN TXT "v=spf1 ip4:192.0.2.0/28 include:_spf.mailer.test -all"
@            IN TXT "google-site-verification=abc123"
google._domainkey IN TXT "v=DKIM1; k=rsa; p={RSA_2048[:200]}" "{RSA_2048[200:]}"
_dmarc       IN TXT "v=DMARC1; p=reject; pct=100; rua=mailto:dmarc@good.test"
"""

# The outgoing mail service most tests send through.
MAILER: RecordsDict = {
    "smtp.mailer.test": {"A": "198.51.100.25", "AAAA": "2001:db8:25::1"},
    "_spf.mailer.test": {"TXT": "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:25::/48 ~all"},
    # Served locally only: lets the test check the provider-specific SPF advice.
    "smtp.gmail.com": {"A": "203.0.113.5"},
}


def _domain(
    name: str,
    *,
    spf: str | list[str] | None = "v=spf1 include:_spf.mailer.test -all",
    dmarc: str | None = "v=DMARC1; p=quarantine; rua=mailto:dmarc@{d}",
    dkim: dict[str, str] | None = None,
    mx: list[str] | None = None,
) -> dict[str, dict[str, str | list[str]]]:
    """Records for a mostly-good domain; override the part a test is about."""
    mx = [f"10 mx.{name}."] if mx is None else mx
    records: dict[str, dict[str, str | list[str]]] = {name: {}}
    if mx:
        records[name]["MX"] = mx
        records[f"mx.{name}"] = {"A": "192.0.2.20"}
    if spf is not None:
        records[name]["TXT"] = spf
    if dmarc is not None:
        records[f"_dmarc.{name}"] = {"TXT": dmarc.format(d=name)}
    for selector, txt in (dkim if dkim is not None else {"s1": f"p={RSA_2048}"}).items():
        records[f"{selector}._domainkey.{name}"] = {"TXT": txt}
    return records


DEEP_SPF: RecordsDict = {
    # 2 (top) + 4 (l1a) + 3 (l2a) + 0 (l2b) + 3 (l1b) = 12 lookups
    "l1a.spf.test": {"TXT": "v=spf1 include:l2a.spf.test include:l2b.spf.test a mx ~all"},
    "l2a.spf.test": {"TXT": "v=spf1 a mx exists:h1.spf.test ~all"},
    "l2b.spf.test": {"TXT": "v=spf1 ip4:203.0.113.0/24 ~all"},
    "l1b.spf.test": {"TXT": "v=spf1 a:h1.spf.test mx:h1.spf.test include:l2b.spf.test ~all"},
    "l2c.spf.test": {"TXT": "v=spf1 a ~all"},
    "h1.spf.test": {"A": "203.0.113.1"},
    "h2.spf.test": {"A": "203.0.113.2"},
    "h3.spf.test": {"A": "203.0.113.3"},
}

ZONES: list[str | RecordsDict] = [
    GOOD_ZONE,
    MAILER,
    DEEP_SPF,
    _domain("nomx.test", mx=[]),
    """
$ORIGIN nullmx.test.
@ 300 IN MX 0 .
@ 300 IN TXT "v=spf1 -all"
_dmarc 300 IN TXT "v=DMARC1; p=reject"
""",
    _domain(
        "twospf.test", spf=["v=spf1 ip4:192.0.2.1 -all", "v=spf1 include:_spf.mailer.test ~all"]
    ),
    _domain("deepspf.test", spf="v=spf1 include:l1a.spf.test include:l1b.spf.test -all"),
    # exactly 10: a, mx, a:h1, a:h2, a:h3, mx:h1, exists:h1, include:l2b (+0), include:l2c (+1)
    _domain(
        "tenspf.test",
        spf="v=spf1 a mx a:h1.spf.test a:h2.spf.test a:h3.spf.test mx:h1.spf.test "
        "exists:h1.spf.test include:l2b.spf.test include:l2c.spf.test -all",
    ),
    _domain("unauth.test", spf="v=spf1 ip4:192.0.2.0/24 -all"),
    _domain("softunauth.test", spf="v=spf1 mx ~all"),
    _domain("plusall.test", spf="v=spf1 include:_spf.mailer.test +all"),
    _domain("missinginclude.test", spf="v=spf1 include:nothing.spf.test ~all"),
    _domain("weakdkim.test", dkim={"s512": f"v=DKIM1; k=rsa; p={RSA_512}"}),
    _domain("oldkey.test", dkim={"s1": f"v=DKIM1; k=rsa; p={RSA_1024}"}),
    _domain("revoked.test", dkim={"old": "v=DKIM1; k=rsa; p="}),
    _domain("eddkim.test", dkim={"ed": f"v=DKIM1; k=ed25519; p={ED25519_RAW}"}),
    _domain("dmarcnone.test", dmarc="v=DMARC1; p=none"),
    _domain("nodmarc.test", dmarc=None),
    _domain("servfail.test"),
]


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsTestServer]:
    with DnsTestServer(*ZONES, servfail=["_dmarc.servfail.test", "servfail.test"]) as server:
        yield server


def settings_for(server: DnsTestServer | BlackHoleServer, **kw: float) -> DnsSettings:
    return DnsSettings(
        nameservers=server.nameservers,
        port=server.port,
        timeout=kw.get("timeout", 1.0),
        lifetime=kw.get("lifetime", 2.0),
    )


async def check(
    server: DnsTestServer,
    domain: str,
    *,
    smtp_host: str | None = "smtp.mailer.test",
    selectors: tuple[str, ...] = (),
) -> DomainSetupStatus:
    return await check_domain_setup(
        domain, smtp_host=smtp_host, dkim_selectors=selectors, settings=settings_for(server)
    )


# --- complete setup --------------------------------------------------------------------------


async def test_complete_good_setup_passes_everything(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "Good.Test.")  # default DKIM selectors; finds "google"

    assert status.domain == "good.test"
    for name, rc in [("mx", status.mx), ("spf", status.spf), ("dkim", status.dkim)]:
        assert rc.state is CheckState.PASS, (name, rc.message)
    assert status.dmarc.state is CheckState.PASS, status.dmarc.message
    assert status.overall is CheckState.PASS
    assert status.mx.records == ["10 mx1.good.test.", "20 mx2.good.test."]
    assert "mx1.good.test, mx2.good.test" in status.mx.message
    assert status.spf.records == ["v=spf1 ip4:192.0.2.0/28 include:_spf.mailer.test -all"]
    assert status.spf.details["authorised"] is True
    assert status.spf.details["lookups"] == 1
    assert "authorises smtp.mailer.test" in status.spf.message
    assert status.dkim.details["usable"] == ["google"]
    dkim_entry = next(e for e in status.dkim.details["selectors"] if e["selector"] == "google")
    assert dkim_entry["bits"] == 2048
    assert status.dmarc.details["p"] == "reject"
    assert status.dmarc.details["rua"] == ["mailto:dmarc@good.test"]


async def test_status_round_trips_through_json(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "good.test", selectors=("google",))
    data = json.loads(json.dumps(status.to_dict()))
    assert data["mx"]["state"] == "PASS"
    again = DomainSetupStatus.from_dict(data)
    assert again == status
    assert RecordCheck.from_dict(status.spf.to_dict()) == status.spf


@pytest.mark.parametrize(
    "domain", ["unauth.test", "deepspf.test", "nullmx.test", "weakdkim.test", "servfail.test"]
)
async def test_any_status_round_trips_through_json(dns_server: DnsTestServer, domain: str) -> None:
    status = await check(dns_server, domain, selectors=("s1", "s512"))
    assert DomainSetupStatus.from_dict(json.loads(json.dumps(status.to_dict()))) == status


async def test_a_single_selector_string_is_one_selector(dns_server: DnsTestServer) -> None:
    status = await check_domain_setup(
        "good.test", smtp_host=None, dkim_selectors="google", settings=settings_for(dns_server)
    )
    assert status.dkim.state is CheckState.PASS
    assert [e["selector"] for e in status.dkim.details["selectors"]] == ["google"]


async def test_large_answers_fall_back_to_tcp() -> None:
    with DnsTestServer(GOOD_ZONE, MAILER, udp_payload_limit=200) as server:
        status = await check(server, "good.test", selectors=("google",))
        assert status.dkim.state is CheckState.PASS, status.dkim.message
        assert any(
            q.transport == "tcp" and q.name == "google._domainkey.good.test."
            for q in server.queries
        )


# --- MX --------------------------------------------------------------------------------------


async def test_no_mx_is_missing_with_what_to_add(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "nomx.test")
    assert status.mx.state is CheckState.MISSING
    assert "no MX records" in status.mx.message
    assert "Add an MX record" in status.mx.message
    assert "IN MX 10 mail.nomx.test." in status.mx.message


async def test_nonexistent_domain_is_missing_not_error(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "nowhere.test", smtp_host=None)
    assert status.mx.state is CheckState.MISSING
    assert "NXDOMAIN" in status.mx.message
    assert status.spf.state is CheckState.MISSING
    assert status.dkim.state is CheckState.MISSING
    assert status.dmarc.state is CheckState.MISSING


async def test_null_mx_fails_saying_domain_accepts_no_mail(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "nullmx.test", smtp_host=None)
    assert status.mx.state is CheckState.FAIL
    assert status.mx.records == ["0 ."]
    assert "accepts no mail" in status.mx.message
    assert "delete the null MX" in status.mx.message
    assert status.mx.details["null_mx"] is True


# --- SPF -------------------------------------------------------------------------------------


async def test_two_spf_records_fail_and_say_merge(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "twospf.test")
    assert status.spf.state is CheckState.FAIL
    assert len(status.spf.records) == 2
    assert "Merge them into one" in status.spf.message
    assert '"v=spf1 ip4:192.0.2.1 include:_spf.mailer.test -all"' in status.spf.message


async def test_spf_over_ten_lookups_fails_naming_the_count(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "deepspf.test", smtp_host=None)
    assert status.spf.state is CheckState.FAIL
    assert status.spf.details["lookups"] == 12
    assert "needs 12 DNS lookups" in status.spf.message
    assert "at most 10" in status.spf.message
    assert "ip4:/ip6:" in status.spf.message  # what to do instead
    domains = {row["domain"] for row in status.spf.details["lookup_breakdown"]}
    assert domains == {
        "deepspf.test",
        "l1a.spf.test",
        "l1b.spf.test",
        "l2a.spf.test",
        "l2b.spf.test",
    }


async def test_spf_with_exactly_ten_lookups_passes(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "tenspf.test", smtp_host=None)
    assert status.spf.details["lookups"] == 10
    assert status.spf.state is CheckState.PASS, status.spf.message
    assert "10/10" in status.spf.message


async def test_spf_not_authorising_smtp_host_fails_with_mechanism(
    dns_server: DnsTestServer,
) -> None:
    status = await check(dns_server, "unauth.test")
    assert status.spf.state is CheckState.FAIL
    assert status.spf.details["authorised"] is False
    message = status.spf.message
    assert "does not authorise the SMTP host smtp.mailer.test" in message
    assert "Add ip4:198.51.100.25 ip6:2001:db8:25::1" in message
    assert '"v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.25 ip6:2001:db8:25::1 -all"' in message
    assert status.spf.details["results"]["198.51.100.25"]["result"] == "fail"


async def test_spf_softfail_for_provider_host_suggests_its_include(
    dns_server: DnsTestServer,
) -> None:
    status = await check(dns_server, "softunauth.test", smtp_host="smtp.gmail.com")
    assert status.spf.state is CheckState.WARN
    assert "Add include:_spf.google.com or ip4:203.0.113.5" in status.spf.message
    assert '"v=spf1 mx include:_spf.google.com ~all"' in status.spf.message


async def test_spf_plus_all_fails(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "plusall.test")
    assert status.spf.state is CheckState.FAIL
    assert "change it to ~all or -all" in status.spf.message


async def test_spf_include_without_record_fails(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "missinginclude.test", smtp_host=None)
    assert status.spf.state is CheckState.FAIL
    assert "remove include:nothing.spf.test" in status.spf.message


# --- DKIM ------------------------------------------------------------------------------------


async def test_dkim_512_bit_key_fails_and_says_rotate(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "weakdkim.test", selectors=("s512",))
    assert status.dkim.state is CheckState.FAIL
    assert "only 512 bits" in status.dkim.message
    assert "Generate a new 2048-bit key" in status.dkim.message
    assert status.dkim.details["selectors"][0]["bits"] == 512


async def test_dkim_1024_bit_key_passes_with_advice(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "oldkey.test", selectors=("s1",))
    assert status.dkim.state is CheckState.PASS
    assert "rotate to a 2048-bit key" in status.dkim.message


async def test_dkim_ed25519_key_parses(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "eddkim.test", selectors=("ed",))
    assert status.dkim.state is CheckState.PASS, status.dkim.message
    assert status.dkim.details["selectors"][0]["key_type"] == "ed25519"


async def test_dkim_only_revoked_key_fails(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "revoked.test", selectors=("old", "new"))
    assert status.dkim.state is CheckState.FAIL
    assert "revoked" in status.dkim.message
    assert "publish a current key" in status.dkim.message


async def test_dkim_not_found_names_the_selectors_tried(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "good.test", selectors=("nope", "alsonope"))
    assert status.dkim.state is CheckState.MISSING
    assert "nope, alsonope" in status.dkim.message
    assert "publish the TXT record" in status.dkim.message


# --- DMARC -----------------------------------------------------------------------------------


async def test_dmarc_p_none_warns_to_move_on(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "dmarcnone.test")
    assert status.dmarc.state is CheckState.WARN
    assert "move to p=quarantine and then p=reject" in status.dmarc.message
    assert "Add rua=mailto:dmarc-reports@dmarcnone.test" in status.dmarc.message


async def test_dmarc_missing_gives_an_example(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "nodmarc.test")
    assert status.dmarc.state is CheckState.MISSING
    assert "_dmarc.nodmarc.test" in status.dmarc.message
    assert '"v=DMARC1; p=none; rua=mailto:dmarc-reports@nodmarc.test"' in status.dmarc.message


# --- DNS trouble -----------------------------------------------------------------------------


async def test_servfail_is_error_with_resolver_message(dns_server: DnsTestServer) -> None:
    status = await check(dns_server, "servfail.test")
    for rc in (status.mx, status.spf, status.dmarc):
        assert rc.state is CheckState.ERROR
        assert "SERVFAIL" in rc.message
        assert "try again" in rc.message


async def test_resolver_that_never_answers_gives_an_error() -> None:
    with BlackHoleServer() as hole:
        settings = settings_for(hole, timeout=0.2, lifetime=0.4)
        status = await check_domain_setup(
            "good.test", smtp_host="smtp.mailer.test", dkim_selectors=(), settings=settings
        )
        assert hole.received > 0
    for rc in (status.mx, status.spf, status.dkim, status.dmarc):
        assert rc.state is CheckState.ERROR, rc
        assert "The resolution lifetime expired" in rc.message
        assert "try again" in rc.message.lower()
    assert status.overall is CheckState.ERROR


@pytest.mark.parametrize("bad", ["", "no spaces.com x", "localhost", "1.2.3.4", "-bad-.com"])
async def test_invalid_domain_raises_value_error(bad: str) -> None:
    settings = DnsSettings(nameservers=["127.0.0.1"], port=9)
    with pytest.raises(ValueError, match="domain"):
        await check_domain_setup(bad, smtp_host=None, dkim_selectors=(), settings=settings)


async def test_invalid_smtp_host_and_selector_raise_value_error() -> None:
    settings = DnsSettings(nameservers=["127.0.0.1"], port=9)
    with pytest.raises(ValueError, match="invalid SMTP host"):
        await check_domain_setup(
            "good.test", smtp_host="smtp host", dkim_selectors=(), settings=settings
        )
    with pytest.raises(ValueError, match="not a valid DKIM selector"):
        await check_domain_setup(
            "good.test", smtp_host=None, dkim_selectors=["bad selector"], settings=settings
        )
