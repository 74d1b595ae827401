"""Input rules for email inboxes: normalise what the user sent, or name every field at fault.

Input arrives as plain dicts holding only the keys the caller sent (snake_case, ``smtp`` and
``imap`` nested), so "omitted" and "set to null" stay distinguishable for partial updates.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nh3
from email_validator import EmailNotValidError, validate_email

from mail.message import has_control_characters
from mail.presets import (
    Provider,
    Security,
    default_port,
    infer_security,
    preset_for,
)
from storage.models import DeleteMessagePolicy, EmailInbox

MAX_LENGTHS = {
    "name": 200,
    "display_name": 200,
    "description": 2000,
    "sender_info": 500,
    "department": 100,
    "signature": 20_000,
    "last_message_id": 998,
}
# Texts that go into (or are offered for) a mail header: no control character in any
# reading of them, RFC 2047 encoded words decoded (issue 11, header injection).
HEADER_FIELDS = frozenset({"name", "display_name", "sender_info"})
MAX_PASSWORD = 1024
MAX_USERNAME = 320
MAX_TAGS = 20
MAX_TAG_LENGTH = 50
MAX_DKIM_SELECTORS = 10
DAILY_SEND_LIMIT_RANGE = (1, 50)
DEFAULT_DAILY_SEND_LIMIT = 15

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_SELECTOR = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def parse_id(raw: str, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError as exc:
        raise InputInvalid([FieldIssue(field, "is not a valid id")]) from exc


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True, slots=True)
class FieldIssue:
    field: str
    message: str


class InputInvalid(Exception):
    def __init__(self, issues: list[FieldIssue]) -> None:
        super().__init__("; ".join(f"{i.field}: {i.message}" for i in issues))
        self.issues = issues


@dataclass(slots=True)
class Problems:
    errors: list[FieldIssue] = field(default_factory=list)
    warnings: list[FieldIssue] = field(default_factory=list)

    def error(self, field_name: str, message: str) -> None:
        self.errors.append(FieldIssue(field_name, message))

    def warn(self, field_name: str, message: str) -> None:
        self.warnings.append(FieldIssue(field_name, message))

    def raise_if_any(self) -> None:
        if self.errors:
            raise InputInvalid(self.errors)


NUL_MESSAGE = "must not contain NUL characters"


def nul_issues(value: Any, path: str) -> list[FieldIssue]:
    """Every string in ``value`` (input dicts and lists, walked) holding a NUL, by its input
    path: Postgres text cannot store one, so it is the caller's mistake, not an outage."""
    if isinstance(value, str):
        return [FieldIssue(path, NUL_MESSAGE)] if "\x00" in value else []
    if isinstance(value, Mapping):
        prefix = f"{path}." if path else ""
        return [i for k, v in value.items() for i in nul_issues(v, prefix + camel(str(k)))]
    if isinstance(value, list | tuple):
        return [i for n, v in enumerate(value) for i in nul_issues(v, f"{path}[{n}]")]
    return []


def refuse_nul(value: Any, path: str = "") -> None:
    issues = nul_issues(value, path)
    if issues:
        raise InputInvalid(issues)


@dataclass(slots=True)
class NormalizedInbox:
    values: dict[str, Any]
    passwords: dict[str, str]
    warnings: list[FieldIssue]


def _text(
    data: Mapping[str, Any], key: str, problems: Problems, *, required: bool = False
) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            problems.error(camel(key), "is required")
        return None
    value = str(value).strip()
    if required and not value:
        problems.error(camel(key), "must not be blank")
        return None
    limit = MAX_LENGTHS.get(key)
    if limit is not None and len(value) > limit:
        problems.error(camel(key), f"must be at most {limit} characters (got {len(value)})")
        return None
    if key in HEADER_FIELDS and has_control_characters(value):
        problems.error(
            camel(key),
            "must not contain line breaks, tabs or other control characters "
            "(also not inside =?...?= encoded words)",
        )
        return None
    return value or None


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


def _optional_email(
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


def _port(value: Any, field_name: str, problems: Problems) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or not 1 <= value <= 65535:
        problems.error(field_name, f"must be between 1 and 65535 (got {value})")
        return None
    return value


def _security(value: Any) -> Security | None:
    return None if value is None else Security(value)


def _password(value: Any, field_name: str, problems: Problems) -> str | None:
    if value is None or value == "":
        return None
    if len(str(value)) > MAX_PASSWORD:
        problems.error(field_name, f"must be at most {MAX_PASSWORD} characters")
        return None
    return str(value)


def clamp_daily_send_limit(value: Any, problems: Problems) -> int:
    if value is None:
        return DEFAULT_DAILY_SEND_LIMIT
    low, high = DAILY_SEND_LIMIT_RANGE
    clamped = min(max(int(value), low), high)
    if clamped != value:
        problems.warn("dailySendLimit", f"{value} is outside {low}..{high}; stored as {clamped}")
    return clamped


def sanitize_signature(value: str | None) -> str | None:
    if value is None:
        return None
    # nh3 (ammonia) keeps formatting markup and drops scripts, event handlers and javascript: URLs.
    return nh3.clean(value, link_rel="noopener noreferrer") or None


def normalize_tags(value: Any, problems: Problems) -> list[str]:
    if value is None:
        return []
    tags: list[str] = []
    for index, raw in enumerate(value):
        tag = str(raw).strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            problems.error(f"tags[{index}]", f"must be at most {MAX_TAG_LENGTH} characters")
            continue
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        problems.error("tags", f"at most {MAX_TAGS} tags (got {len(tags)})")
    return tags


def normalize_selectors(value: Any, problems: Problems) -> list[str]:
    if value is None:
        return []
    selectors = []
    for index, raw in enumerate(value):
        selector = str(raw).strip().lower()
        if not _SELECTOR.match(selector):
            problems.error(f"dkimSelectors[{index}]", "must be a DNS label like 'selector1'")
            continue
        if selector not in selectors:
            selectors.append(selector)
    if len(selectors) > MAX_DKIM_SELECTORS:
        problems.error("dkimSelectors", f"at most {MAX_DKIM_SELECTORS} selectors")
    return selectors


def derive_imap_host(smtp_host: str) -> str | None:
    """``smtp.example.com`` -> ``imap.example.com``; None when there is no ``smtp.`` to swap."""
    for prefix in ("smtp.", "smtp-mail.", "mail.", "outgoing."):
        if smtp_host.startswith(prefix) and smtp_host.count(".") >= 2:
            return "imap." + smtp_host[len(prefix) :]
    return None


def _server_endpoint(
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
    port = _port(data.get("port"), f"{protocol}.port", problems)
    security = _security(data.get("security"))
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


def normalize_create(
    data: Mapping[str, Any], *, allow_private_hosts: bool = False
) -> NormalizedInbox:
    refuse_nul(data)
    problems = Problems()
    private = allow_private_hosts
    email = normalize_email(data.get("email"), "email", problems, allow_private=private)
    provider = Provider(data.get("provider") or Provider.CUSTOM.value)
    preset = preset_for(provider)
    shared_password = _password(data.get("password"), "password", problems)
    smtp_in: Mapping[str, Any] = data.get("smtp") or {}
    if not smtp_in and preset is None and shared_password is None:
        problems.error("smtp", "is required unless a provider preset is chosen")

    smtp = _server_endpoint(
        "smtp",
        smtp_in,
        preset.smtp.host if preset else None,
        preset.smtp.port if preset else None,
        preset.smtp.security if preset else None,
        problems,
    )
    smtp_username = str(smtp_in.get("username") or email or "").strip()
    smtp_password = _password(smtp_in.get("password"), "smtp.password", problems) or shared_password
    if smtp_password is None:
        problems.error("smtp.password", "is required")

    imap_in: Mapping[str, Any] | None = data.get("imap")
    if imap_in is None:
        # IMAP omitted: same account, host from the preset or derived from the SMTP host.
        imap_in = {}
        imap_username = smtp_username
        imap_password = smtp_password
    else:
        imap_username = str(imap_in.get("username") or smtp_username).strip()
        imap_password = (
            _password(imap_in.get("password"), "imap.password", problems) or smtp_password
        )
    derived = derive_imap_host(smtp["smtp_host"]) if smtp["smtp_host"] else None
    preset_imap_host = preset.imap.host if preset else derived
    if imap_in.get("host") is None and preset_imap_host is None and smtp["smtp_host"]:
        problems.error(
            "imap.host",
            f"is required: it cannot be derived from the SMTP host {smtp['smtp_host']!r}",
        )
    imap = _server_endpoint(
        "imap",
        imap_in,
        preset_imap_host,
        preset.imap.port if preset else 993,
        preset.imap.security if preset else Security.TLS,
        problems,
        report_missing_host=False,  # reported above, with the reason
    )
    for key, username in (("smtp.username", smtp_username), ("imap.username", imap_username)):
        if not username:
            problems.error(key, "is required")
        elif len(username) > MAX_USERNAME:
            problems.error(key, f"must be at most {MAX_USERNAME} characters")

    name = _text(data, "name", problems) or email or ""
    display_name = _text(data, "display_name", problems) or (email.split("@")[0] if email else "")
    values: dict[str, Any] = {
        "name": name,
        "email": email,
        "display_name": display_name,
        "description": _text(data, "description", problems),
        "sender_info": _text(data, "sender_info", problems),
        "department": _text(data, "department", problems),
        "active": bool(data.get("active", True)),
        "provider": provider.value,
        **smtp,
        "smtp_username": smtp_username,
        "smtp_tls_certificate_sha256": normalize_fingerprint(
            smtp_in.get("tls_certificate_sha256"), "smtp.tlsCertificateSha256", problems
        ),
        **imap,
        "imap_username": imap_username,
        "imap_tls_certificate_sha256": normalize_fingerprint(
            imap_in.get("tls_certificate_sha256"), "imap.tlsCertificateSha256", problems
        ),
        "daily_send_limit": clamp_daily_send_limit(data.get("daily_send_limit"), problems),
        "sending_enabled": bool(data.get("sending_enabled", True)),
        "signature": sanitize_signature(_text(data, "signature", problems)),
        "tags": normalize_tags(data.get("tags"), problems),
        "reply_to": _optional_email(data, "reply_to", problems, allow_private=private),
        "delete_message_policy": DeleteMessagePolicy(
            data.get("delete_message_policy") or DeleteMessagePolicy.DONT_DELETE
        ).value,
        "notify_on_new_messages": bool(data.get("notify_on_new_messages", False)),
        "notification_email": _optional_email(
            data, "notification_email", problems, allow_private=private
        ),
        "dkim_selectors": normalize_selectors(data.get("dkim_selectors"), problems),
    }
    if values["notify_on_new_messages"] and not values["notification_email"]:
        problems.error("notificationEmail", "is required when notifyOnNewMessages is true")
    problems.raise_if_any()
    return NormalizedInbox(
        values=values,
        passwords={"smtp_password": smtp_password or "", "imap_password": imap_password or ""},
        warnings=problems.warnings,
    )


_PLAIN_FIELDS = ("description", "sender_info", "department")


def normalize_update(
    inbox: EmailInbox, data: Mapping[str, Any], *, allow_private_hosts: bool = False
) -> NormalizedInbox:
    """Changes to apply to ``inbox``: only what the caller sent, checked like a create."""
    refuse_nul(data)
    problems = Problems()
    private = allow_private_hosts
    values: dict[str, Any] = {}
    if "email" in data:
        values["email"] = normalize_email(data["email"], "email", problems, allow_private=private)
    for key in ("name", "display_name"):
        if key in data:
            values[key] = _text(data, key, problems, required=True)
    for key in _PLAIN_FIELDS:
        if key in data:
            values[key] = _text(data, key, problems)
    for key in ("active", "sending_enabled", "notify_on_new_messages"):
        if key in data:
            if data[key] is None:
                problems.error(camel(key), "must be true or false, not null")
            else:
                values[key] = bool(data[key])
    if "provider" in data:
        values["provider"] = Provider(data["provider"] or Provider.CUSTOM.value).value
    if "daily_send_limit" in data:
        values["daily_send_limit"] = clamp_daily_send_limit(data["daily_send_limit"], problems)
    if "signature" in data:
        values["signature"] = sanitize_signature(_text(data, "signature", problems))
    if "tags" in data:
        values["tags"] = normalize_tags(data["tags"], problems)
    if "dkim_selectors" in data:
        values["dkim_selectors"] = normalize_selectors(data["dkim_selectors"], problems)
    for key in ("reply_to", "notification_email"):
        if key in data:
            values[key] = _optional_email(data, key, problems, allow_private=private)
    if "delete_message_policy" in data:
        values["delete_message_policy"] = DeleteMessagePolicy(
            data["delete_message_policy"] or DeleteMessagePolicy.DONT_DELETE
        ).value

    passwords: dict[str, str] = {}
    for protocol in ("smtp", "imap"):
        side: Mapping[str, Any] | None = data.get(protocol)
        if not side:
            continue
        if "host" in side:
            host = normalize_host(side["host"], f"{protocol}.host", problems)
            if host is not None and host != getattr(inbox, f"{protocol}_host"):
                values[f"{protocol}_host"] = host
                if not side.get("password"):
                    problems.error(
                        f"{protocol}.password",
                        "give the password again when changing the host: a stored password "
                        "is never sent to a new server",
                    )
        port = _port(side.get("port"), f"{protocol}.port", problems)
        security = _security(side.get("security"))
        if port is not None:
            values[f"{protocol}_port"] = port
            if security is None:
                security = infer_security(protocol, port)
        if security is not None:
            values[f"{protocol}_security"] = security.value
            if port is None:
                values[f"{protocol}_port"] = default_port(protocol, security)
        if side.get("username"):
            username = str(side["username"]).strip()
            if len(username) > MAX_USERNAME:
                problems.error(f"{protocol}.username", f"must be at most {MAX_USERNAME} characters")
            values[f"{protocol}_username"] = username
        if "tls_certificate_sha256" in side:
            values[f"{protocol}_tls_certificate_sha256"] = normalize_fingerprint(
                side["tls_certificate_sha256"], f"{protocol}.tlsCertificateSha256", problems
            )
        # A blank or omitted password keeps the stored one.
        password = _password(side.get("password"), f"{protocol}.password", problems)
        if password is not None:
            passwords[f"{protocol}_password"] = password

    notify = values.get("notify_on_new_messages", inbox.notify_on_new_messages)
    notification_email = values.get("notification_email", inbox.notification_email)
    if notify and not notification_email:
        problems.error("notificationEmail", "is required when notifyOnNewMessages is true")
    problems.raise_if_any()
    return NormalizedInbox(values=values, passwords=passwords, warnings=problems.warnings)
