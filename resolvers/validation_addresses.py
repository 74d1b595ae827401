"""Rules for where an inbox connects and who it is: email addresses, host names, ports,
security, pinned certificates and passwords, and the inference of what was omitted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from email_validator import EmailNotValidError, validate_email

from mail.presets import Security, default_port, infer_security
from resolvers.validation_issues import NUL_MESSAGE, Problems, camel
from storage.secrets import Secret

MAX_PASSWORD = 1024
MAX_USERNAME = 320

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def normalize_email(
    value: Any, field_name: str, problems: Problems, *, allow_private: bool = False
) -> str | None:
    """The address, normalised. Addresses on internal domains (``.test``, ``.local``,
    ``.internal``, ``.lan``, ``home.arpa``) only with ``allow_private``, which is
    INBOXD_ALLOW_PRIVATE_HOSTS: on-premises setups use them."""
    if value is None or not str(value).strip():
        problems.error(field_name, "is required")
        return None
    raw = str(value).strip()
    if "\x00" in raw:
        problems.error(field_name, NUL_MESSAGE)
        return None
    if len(raw) > 254:
        problems.error(field_name, "must be at most 254 characters")
        return None
    local, _, domain = raw.rpartition("@")
    suffix = _internal_suffix(domain)
    if suffix and not allow_private:
        problems.error(
            field_name,
            f"is on an internal domain (.{suffix}): such addresses are accepted only when the "
            "server allows private hosts (INBOXD_ALLOW_PRIVATE_HOSTS=true)",
        )
        return None
    # email_validator refuses special-use names outright, except ".test" in its test mode:
    # an internal suffix is checked as ".test" and put back afterwards.
    checked = f"{local}@{domain[: -len(suffix)]}test" if suffix else raw
    try:
        result = validate_email(checked, check_deliverability=False, test_environment=bool(suffix))
    except EmailNotValidError as exc:
        problems.error(field_name, f"is not a valid email address: {exc}")
        return None
    normalized = str(result.normalized).lower()
    return f"{normalized[: -len('test')]}{suffix}" if suffix else normalized


# Names of a private network's own hosts: special-use (RFC 6761 .test, RFC 6762 .local,
# RFC 8375 home.arpa), ICANN's private-use .internal, and the customary .lan. None is ever
# delegated publicly; the other special-use names (.invalid, .localhost, .onion) name no
# mail server at all and stay refused.
_INTERNAL_SUFFIXES = ("test", "local", "internal", "lan", "home.arpa")


def _internal_suffix(domain: str) -> str | None:
    lowered = domain.lower()
    for suffix in _INTERNAL_SUFFIXES:
        if lowered.endswith("." + suffix):
            return suffix
    return None


def optional_email(
    data: Mapping[str, Any], key: str, problems: Problems, *, allow_private: bool = False
) -> str | None:
    if data.get(key) in (None, ""):
        return None
    return normalize_email(data[key], camel(key), problems, allow_private=allow_private)


def normalize_host(value: Any, field_name: str, problems: Problems) -> str | None:
    host = str(value or "").strip().rstrip(".").lower()
    if not host:
        problems.error(field_name, "must not be empty")
        return None
    if len(host) > 253:
        problems.error(field_name, "must be at most 253 characters")
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:  # an IPv6 literal
        if not re.fullmatch(r"[0-9a-f:.]+", host):
            problems.error(field_name, "is not a valid host name or IP address")
            return None
        return host
    if not all(_HOST_LABEL.match(label) for label in host.split(".")):
        problems.error(
            field_name, "is not a valid host name (letters, digits, dots and hyphens only)"
        )
        return None
    return host


def normalize_fingerprint(value: Any, field_name: str, problems: Problems) -> str | None:
    if value in (None, ""):
        return None
    digest = str(value).strip().lower().replace(":", "").replace(" ", "")
    if not _FINGERPRINT.match(digest):
        problems.error(field_name, "must be a SHA-256 fingerprint: 64 hex digits, colons allowed")
        return None
    return digest


def normalize_port(value: Any, field_name: str, problems: Problems) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or not 1 <= value <= 65535:
        problems.error(field_name, f"must be between 1 and 65535 (got {value})")
        return None
    return value


def parse_security(value: Any) -> Security | None:
    return None if value is None else Security(value)


def normalize_password(value: Secret | None, field_name: str, problems: Problems) -> Secret | None:
    """The password, still sealed; None when blank or omitted."""
    if not value:
        return None
    plain = value.reveal()
    if len(plain) > MAX_PASSWORD:
        problems.error(field_name, f"must be at most {MAX_PASSWORD} characters")
        return None
    if "\x00" in plain:  # SMTP AUTH PLAIN separates its fields with NUL
        problems.error(field_name, NUL_MESSAGE)
        return None
    return value


def derive_imap_host(smtp_host: str) -> str | None:
    """``smtp.example.com`` -> ``imap.example.com``; None when there is no ``smtp.`` to swap."""
    for prefix in ("smtp.", "smtp-mail.", "mail.", "outgoing."):
        if smtp_host.startswith(prefix) and smtp_host.count(".") >= 2:
            return "imap." + smtp_host[len(prefix) :]
    return None


def server_endpoint(
    protocol: str,
    data: Mapping[str, Any],
    preset_host: str | None,
    preset_port: int | None,
    preset_security: Security | None,
    problems: Problems,
    *,
    report_missing_host: bool = True,
) -> dict[str, Any]:
    """Host, port and security for one side, with omissions inferred in a fixed order."""
    host_value = data.get("host")
    host: str | None
    if host_value is not None:
        host = normalize_host(host_value, f"{protocol}.host", problems)
    elif preset_host is not None:
        host = preset_host
    else:
        host = None
        if report_missing_host:
            problems.error(f"{protocol}.host", "is required")
    port = normalize_port(data.get("port"), f"{protocol}.port", problems)
    security = parse_security(data.get("security"))
    if port is None and security is None and host == preset_host:
        port, security = preset_port, preset_security
    if security is None and port is not None:
        security = infer_security(protocol, port)
    if security is None:
        security = Security.STARTTLS if protocol == "smtp" else Security.TLS
    if port is None:
        port = default_port(protocol, security)
    return {
        f"{protocol}_host": host,
        f"{protocol}_port": port,
        f"{protocol}_security": security.value,
    }
