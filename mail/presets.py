"""Known mail providers: their server settings, how to recognise them, and what to tell a user.

The table is data, not logic: discovery, input defaults and probe hints all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Provider(StrEnum):
    CUSTOM = "CUSTOM"
    GMAIL = "GMAIL"
    OFFICE365 = "OFFICE365"
    OUTLOOK = "OUTLOOK"
    YAHOO = "YAHOO"
    ICLOUD = "ICLOUD"
    ZOHO = "ZOHO"
    FASTMAIL = "FASTMAIL"
    AOL = "AOL"


class Security(StrEnum):
    TLS = "TLS"
    STARTTLS = "STARTTLS"
    NONE = "NONE"


@dataclass(frozen=True, slots=True)
class ServerPreset:
    host: str
    port: int
    security: Security


@dataclass(frozen=True, slots=True)
class ProviderPreset:
    provider: Provider
    label: str
    smtp: ServerPreset
    imap: ServerPreset
    domains: tuple[str, ...]
    mx_suffixes: tuple[str, ...]
    app_password_url: str | None
    app_password_hint: str | None


def _hint(label: str, url: str) -> str:
    return (
        f"{label} refuses your normal password for SMTP/IMAP when two-step verification is on. "
        f"Create an app password at {url} and use it as the password here."
    )


PRESETS: dict[Provider, ProviderPreset] = {
    p.provider: p
    for p in (
        ProviderPreset(
            Provider.GMAIL,
            "Gmail",
            ServerPreset("smtp.gmail.com", 465, Security.TLS),
            ServerPreset("imap.gmail.com", 993, Security.TLS),
            ("gmail.com", "googlemail.com"),
            ("google.com", "googlemail.com"),
            "https://myaccount.google.com/apppasswords",
            _hint("Google", "https://myaccount.google.com/apppasswords"),
        ),
        ProviderPreset(
            Provider.OFFICE365,
            "Microsoft 365",
            ServerPreset("smtp.office365.com", 587, Security.STARTTLS),
            ServerPreset("outlook.office365.com", 993, Security.TLS),
            (),
            ("mail.protection.outlook.com",),
            "https://account.activedirectory.windowsazure.com/AppPasswords.aspx",
            _hint(
                "Microsoft 365",
                "https://account.activedirectory.windowsazure.com/AppPasswords.aspx",
            )
            + " Your administrator must also enable SMTP AUTH for the mailbox.",
        ),
        ProviderPreset(
            Provider.OUTLOOK,
            "Outlook.com",
            ServerPreset("smtp-mail.outlook.com", 587, Security.STARTTLS),
            ServerPreset("outlook.office365.com", 993, Security.TLS),
            ("outlook.com", "hotmail.com", "live.com", "msn.com"),
            ("olc.protection.outlook.com",),
            "https://account.live.com/proofs/AppPassword",
            _hint("Microsoft", "https://account.live.com/proofs/AppPassword"),
        ),
        ProviderPreset(
            Provider.YAHOO,
            "Yahoo Mail",
            ServerPreset("smtp.mail.yahoo.com", 465, Security.TLS),
            ServerPreset("imap.mail.yahoo.com", 993, Security.TLS),
            ("yahoo.com", "ymail.com", "rocketmail.com"),
            ("yahoodns.net",),
            "https://login.yahoo.com/account/security",
            _hint("Yahoo", "https://login.yahoo.com/account/security"),
        ),
        ProviderPreset(
            Provider.ICLOUD,
            "iCloud Mail",
            ServerPreset("smtp.mail.me.com", 587, Security.STARTTLS),
            ServerPreset("imap.mail.me.com", 993, Security.TLS),
            ("icloud.com", "me.com", "mac.com"),
            ("icloud.com", "mail.icloud.com"),
            "https://appleid.apple.com/account/manage",
            _hint("Apple", "https://appleid.apple.com/account/manage"),
        ),
        ProviderPreset(
            Provider.ZOHO,
            "Zoho Mail",
            ServerPreset("smtp.zoho.com", 465, Security.TLS),
            ServerPreset("imap.zoho.com", 993, Security.TLS),
            ("zoho.com", "zohomail.com"),
            ("zoho.com", "zohomail.com"),
            "https://accounts.zoho.com/home#security/app_password",
            _hint("Zoho", "https://accounts.zoho.com/home#security/app_password"),
        ),
        ProviderPreset(
            Provider.FASTMAIL,
            "Fastmail",
            ServerPreset("smtp.fastmail.com", 465, Security.TLS),
            ServerPreset("imap.fastmail.com", 993, Security.TLS),
            ("fastmail.com", "fastmail.fm"),
            ("messagingengine.com",),
            "https://app.fastmail.com/settings/security/devicekeys",
            "Fastmail requires an app password for SMTP and IMAP. Create one at "
            "https://app.fastmail.com/settings/security/devicekeys and use it here.",
        ),
        ProviderPreset(
            Provider.AOL,
            "AOL Mail",
            ServerPreset("smtp.aol.com", 465, Security.TLS),
            ServerPreset("imap.aol.com", 993, Security.TLS),
            ("aol.com", "aim.com"),
            ("yahoodns.net",),
            "https://login.aol.com/account/security",
            _hint("AOL", "https://login.aol.com/account/security"),
        ),
    )
}


def preset_for(provider: Provider | str | None) -> ProviderPreset | None:
    """The preset for a provider, or None for CUSTOM and unknown values."""
    if provider is None:
        return None
    try:
        return PRESETS.get(Provider(provider))
    except ValueError:
        return None


def preset_for_domain(domain: str) -> ProviderPreset | None:
    domain = domain.lower().rstrip(".")
    for preset in PRESETS.values():
        if domain in preset.domains:
            return preset
    return None


def preset_for_mx_host(mx_host: str) -> ProviderPreset | None:
    mx_host = mx_host.lower().rstrip(".")
    for preset in PRESETS.values():
        if any(mx_host == s or mx_host.endswith("." + s) for s in preset.mx_suffixes):
            return preset
    return None


def app_password_hint(provider: Provider | str | None) -> str | None:
    preset = preset_for(provider)
    return preset.app_password_hint if preset else None


DEFAULT_PORTS: dict[tuple[str, Security], int] = {
    ("smtp", Security.TLS): 465,
    ("smtp", Security.STARTTLS): 587,
    ("smtp", Security.NONE): 25,
    ("imap", Security.TLS): 993,
    ("imap", Security.STARTTLS): 143,
    ("imap", Security.NONE): 143,
}

IMPLICIT_TLS_PORTS = frozenset({465, 993})


def default_port(protocol: str, security: Security) -> int:
    return DEFAULT_PORTS[(protocol, security)]


def infer_security(protocol: str, port: int) -> Security:
    """Security a port conventionally means: 465/993 are implicit TLS, the rest STARTTLS.

    Port 25 and 143 default to STARTTLS, not NONE: offering a plaintext login by default would
    send the password in the clear whenever the server supports TLS.
    """
    if port in IMPLICIT_TLS_PORTS:
        return Security.TLS
    return Security.STARTTLS
