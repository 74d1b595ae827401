"""Domain setup checks, settings discovery and provider presets, through GraphQL, with DNS
answered by a real DNS server on loopback."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.schema.fragments import CREATE
from tests.support.ws import WSClient

DISCOVER = """query($email: String!) { discoverMailSettings(email: $email) {
  email domain provider errors
  smtp { host port security source confidence }
  imap { host port security source confidence } } }"""
CHECK = """mutation($id: ID!) { checkDomainSetup(id: $id) { __typename
  ... on CheckDomainSetupSuccess { inbox { version setupStatus { domain overall checkedAt
    mx { state records message } spf { state records message }
    dkim { state records message details } dmarc { state records message } } } }
  ... on UserError { code message } } }"""


def dkim_key(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def good_zone(domain: str) -> str:
    key = dkim_key()
    return f"""
$ORIGIN {domain}.
@        300 IN MX  10 mx.{domain}.
mx       300 IN A   203.0.113.10
smtp     300 IN A   203.0.113.25
@        300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
s1._domainkey 300 IN TXT "v=DKIM1; k=rsa; p={key[:200]}" "{key[200:]}"
_dmarc   300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{domain}"
"""


async def test_discover_by_preset_domain_needs_no_dns(tenant, dns_server):
    before = len(dns_server.queries)
    found = (await tenant.client(DISCOVER, {"email": "someone@gmail.com"})).data[
        "discoverMailSettings"
    ]
    assert found["provider"] == "GMAIL"
    assert found["smtp"] == {
        "host": "smtp.gmail.com",
        "port": 465,
        "security": "TLS",
        "source": "PRESET_DOMAIN",
        "confidence": found["smtp"]["confidence"],
    }
    assert found["imap"]["host"] == "imap.gmail.com" and found["imap"]["port"] == 993
    assert len(dns_server.queries) == before


async def test_discover_by_mx_host(tenant, dns_server):
    dns_server.add_zone("""
$ORIGIN googlehosted-corp.com.
@ 300 IN MX 1 aspmx.l.google.com.
""")
    found = (await tenant.client(DISCOVER, {"email": "ceo@googlehosted-corp.com"})).data[
        "discoverMailSettings"
    ]
    assert found["provider"] == "GMAIL"
    assert found["smtp"]["source"] == "PRESET_MX"
    assert found["smtp"]["host"] == "smtp.gmail.com"


async def test_discover_by_srv_records(tenant, dns_server):
    dns_server.add_zone("""
$ORIGIN srv-corp.com.
_submissions._tcp 300 IN SRV 0 1 465 mail.srv-corp.com.
_imaps._tcp       300 IN SRV 0 1 993 imap.srv-corp.com.
mail              300 IN A   203.0.113.40
imap              300 IN A   203.0.113.41
""")
    found = (await tenant.client(DISCOVER, {"email": "a@srv-corp.com"})).data[
        "discoverMailSettings"
    ]
    assert found["provider"] is None
    assert found["smtp"]["host"] == "mail.srv-corp.com" and found["smtp"]["port"] == 465
    assert found["smtp"]["security"] == "TLS" and found["smtp"]["source"] == "SRV"
    assert found["imap"]["host"] == "imap.srv-corp.com" and found["imap"]["source"] == "SRV"


async def test_discover_unknown_domain_is_empty_and_well_formed(tenant):
    found = (await tenant.client(DISCOVER, {"email": "x@nothing-here-at-all.com"})).data[
        "discoverMailSettings"
    ]
    assert found["smtp"] is None and found["imap"] is None and found["provider"] is None
    assert found["domain"] == "nothing-here-at-all.com"


async def test_discover_rejects_a_bad_address(tenant):
    response = await tenant.client(DISCOVER, {"email": "not an address"})
    assert response.error_codes() == ["BAD_USER_INPUT"]
    assert response.errors[0]["extensions"]["fields"][0]["field"] == "email"


async def test_provider_and_password_alone_fill_every_server_field(tenant):
    created = (
        await tenant.client(
            CREATE,
            {
                "input": {
                    "email": "me@gmail.com",
                    "provider": "GMAIL",
                    "password": "app-password-xyz",
                }
            },
        )
    ).data["createEmailInbox"]
    assert created["__typename"] == "CreateEmailInboxSuccess", created
    inbox = created["inbox"]
    assert inbox["smtp"] == {
        "host": "smtp.gmail.com",
        "port": 465,
        "security": "TLS",
        "username": "me@gmail.com",
        "hasPassword": True,
        "tlsCertificateSha256": None,
    }
    assert inbox["imap"] == {
        "host": "imap.gmail.com",
        "port": 993,
        "security": "TLS",
        "username": "me@gmail.com",
        "hasPassword": True,
        "tlsCertificateSha256": None,
    }


async def test_email_and_password_alone_use_discovery(tenant, dns_server):
    gmail = (
        await tenant.client(CREATE, {"input": {"email": "other@gmail.com", "password": "pw"}})
    ).data["createEmailInbox"]
    assert gmail["inbox"]["provider"] == "GMAIL"
    assert gmail["inbox"]["smtp"]["host"] == "smtp.gmail.com"

    dns_server.add_zone("""
$ORIGIN srv-only.com.
_submission._tcp  300 IN SRV 0 1 587 out.srv-only.com.
_imaps._tcp       300 IN SRV 0 1 993 in.srv-only.com.
out               300 IN A   203.0.113.60
in                300 IN A   203.0.113.61
""")
    discovered = (
        await tenant.client(CREATE, {"input": {"email": "me@srv-only.com", "password": "pw"}})
    ).data["createEmailInbox"]
    assert discovered["__typename"] == "CreateEmailInboxSuccess", discovered
    assert discovered["inbox"]["smtp"]["host"] == "out.srv-only.com"
    assert discovered["inbox"]["smtp"]["port"] == 587
    assert discovered["inbox"]["smtp"]["security"] == "STARTTLS"
    assert discovered["inbox"]["imap"]["host"] == "in.srv-only.com"

    unknown = (
        await tenant.client(
            CREATE, {"input": {"email": "me@undiscoverable-domain.com", "password": "pw"}}
        )
    ).data["createEmailInbox"]
    assert unknown["__typename"] == "ValidationError"
    assert "smtp.host" in [f["field"] for f in unknown["fields"]]


async def test_check_domain_setup_reports_and_notifies(tenant, dns_server):
    dns_server.add_zone(good_zone("well-configured.com"))
    created = (
        await tenant.client(
            CREATE,
            {
                "input": {
                    "email": "ops@well-configured.com",
                    "dkimSelectors": ["s1"],
                    "smtp": {"host": "smtp.well-configured.com", "password": "pw"},
                }
            },
        )
    ).data["createEmailInbox"]["inbox"]
    assert created["setupStatus"] is None
    ws = await WSClient.connect(tenant.client.base_url, tenant.key)
    try:
        sub = await ws.subscribe(
            "subscription($id: ID!) { emailInboxStatus(id: $id) { version "
            "setupStatus { overall } } }",
            {"id": created["id"]},
        )
        first = await ws.next_payload(sub)
        assert first["payload"]["data"]["emailInboxStatus"]["setupStatus"] is None
        checked = (await tenant.client(CHECK, {"id": created["id"]})).data["checkDomainSetup"]
        status = checked["inbox"]["setupStatus"]
        assert status["domain"] == "well-configured.com"
        for family in ("mx", "spf", "dkim", "dmarc"):
            assert status[family]["state"] == "PASS", (family, status[family])
        assert status["overall"] == "PASS"
        assert status["dkim"]["details"]
        update = await ws.next_payload(sub)
        pushed = update["payload"]["data"]["emailInboxStatus"]
        assert pushed["setupStatus"]["overall"] == "PASS"
        assert pushed["version"] == checked["inbox"]["version"]
    finally:
        await ws.close()


async def test_check_domain_setup_says_what_to_fix(tenant, dns_server):
    dns_server.add_zone("""
$ORIGIN half-configured.com.
@        300 IN MX  0 .
@        300 IN TXT "v=spf1 ip4:198.51.100.1 -all"
@        300 IN TXT "v=spf1 include:_spf.other.com ~all"
_dmarc   300 IN TXT "v=DMARC1; p=none"
""")
    created = (
        await tenant.client(
            CREATE,
            {
                "input": {
                    "email": "ops@half-configured.com",
                    "smtp": {"host": "smtp.half-configured.com", "password": "pw"},
                }
            },
        )
    ).data["createEmailInbox"]["inbox"]
    status = (await tenant.client(CHECK, {"id": created["id"]})).data["checkDomainSetup"]["inbox"][
        "setupStatus"
    ]
    assert status["mx"]["state"] == "FAIL" and "null MX" in status["mx"]["message"]
    assert status["spf"]["state"] == "FAIL" and "merge" in status["spf"]["message"].lower()
    assert status["dkim"]["state"] == "MISSING"
    assert status["dmarc"]["state"] == "WARN" and "quarantine" in status["dmarc"]["message"]
    missing = (await tenant.client(CHECK, {"id": "00000000-0000-0000-0000-000000000000"})).data[
        "checkDomainSetup"
    ]
    assert missing["__typename"] == "NotFound"
