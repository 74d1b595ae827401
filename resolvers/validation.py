"""Input rules for email inboxes: normalise what the user sent, or name every field at fault.

Input arrives as plain dicts holding only the keys the caller sent (snake_case, ``smtp`` and
``imap`` nested), so "omitted" and "set to null" stay distinguishable for partial updates.

This module puts a whole create or update input together; the rules it applies live beside
it: validation_issues (how problems are reported), validation_addresses (addresses, hosts,
credentials) and validation_text (free-text fields). Their public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mail.presets import (
    Provider,
    Security,
    default_port,
    infer_security,
    preset_for,
)
from resolvers.validation_addresses import (
    MAX_PASSWORD,
    MAX_USERNAME,
    derive_imap_host,
    normalize_email,
    normalize_fingerprint,
    normalize_host,
    normalize_password,
    normalize_port,
    optional_email,
    parse_security,
    server_endpoint,
)
from resolvers.validation_inbox_sending import normalize_inbox_sending
from resolvers.validation_issues import (
    NUL_MESSAGE,
    FieldIssue,
    InputInvalid,
    Problems,
    camel,
    nul_issues,
    parse_id,
    refuse_nul,
)
from resolvers.validation_oauth import normalize_external_token, oauth_provider_of
from resolvers.validation_receiving import normalize_receiving
from resolvers.validation_text import (
    DAILY_SEND_LIMIT_RANGE,
    DEFAULT_DAILY_SEND_LIMIT,
    HEADER_FIELDS,
    MAX_DKIM_SELECTORS,
    MAX_LENGTHS,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    clamp_daily_send_limit,
    normalize_selectors,
    normalize_tags,
    sanitize_signature,
    text_field,
)
from storage.models import AuthMethod, DeleteMessagePolicy, utcnow
from storage.rows import InboxRow
from storage.secrets import Secret

__all__ = [
    "DAILY_SEND_LIMIT_RANGE",
    "DEFAULT_DAILY_SEND_LIMIT",
    "HEADER_FIELDS",
    "MAX_DKIM_SELECTORS",
    "MAX_LENGTHS",
    "MAX_PASSWORD",
    "MAX_TAGS",
    "MAX_TAG_LENGTH",
    "MAX_USERNAME",
    "NUL_MESSAGE",
    "FieldIssue",
    "InputInvalid",
    "NormalizedInbox",
    "Problems",
    "camel",
    "clamp_daily_send_limit",
    "derive_imap_host",
    "normalize_create",
    "normalize_email",
    "normalize_fingerprint",
    "normalize_host",
    "normalize_selectors",
    "normalize_tags",
    "normalize_update",
    "nul_issues",
    "parse_id",
    "refuse_nul",
    "sanitize_signature",
]


@dataclass(slots=True)
class NormalizedInbox:
    values: dict[str, Any]
    # Every secret column to write (the passwords; an OAuth inbox's tokens): column -> secret.
    passwords: dict[str, Secret]
    warnings: list[FieldIssue]


def _external_token(
    data: Mapping[str, Any], problems: Problems, provider: str
) -> tuple[dict[str, Any], dict[str, Secret]]:
    """The columns and secrets of ``oauth2 { accessToken expiresAt }``: a token refreshed
    elsewhere, used as it is until it expires."""
    token = normalize_external_token(data.get("oauth2"), problems, now=utcnow())
    values: dict[str, Any] = {
        "auth_method": AuthMethod.OAUTH2.value,
        "oauth_provider": oauth_provider_of(provider),
        "oauth_managed": False,
        "oauth_refresh_token": None,
        "oauth_access_token_expires_at": token.expires_at if token else None,
        "oauth_reauth_required_at": None,
    }
    return values, ({"oauth_access_token": token.access_token} if token else {})


def normalize_create(
    data: Mapping[str, Any], *, allow_private_hosts: bool = False, managed_oauth: bool = False
) -> NormalizedInbox:
    """A new inbox's columns and secrets. ``managed_oauth``: an inbox the OAuth callback
    creates, whose tokens the caller adds (no password, no ``oauth2`` input)."""
    refuse_nul(data)
    problems = Problems()
    private = allow_private_hosts
    email = normalize_email(data.get("email"), "email", problems, allow_private=private)
    provider = Provider(data.get("provider") or Provider.CUSTOM.value)
    preset = preset_for(provider)
    shared_password = normalize_password(data.get("password"), "password", problems)
    oauth2 = "oauth2" in data or managed_oauth
    smtp_in: Mapping[str, Any] = data.get("smtp") or {}
    if not smtp_in and preset is None and shared_password is None and not oauth2:
        problems.error("smtp", "is required unless a provider preset is chosen")

    smtp = server_endpoint(
        "smtp",
        smtp_in,
        preset.smtp.host if preset else None,
        preset.smtp.port if preset else None,
        preset.smtp.security if preset else None,
        problems,
    )
    smtp_username = str(smtp_in.get("username") or email or "").strip()
    smtp_password = (
        normalize_password(smtp_in.get("password"), "smtp.password", problems) or shared_password
    )
    if oauth2 and (smtp_password or (data.get("imap") or {}).get("password")):
        problems.error("oauth2", "give either passwords or oauth2, not both")
    elif smtp_password is None and not oauth2:
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
            normalize_password(imap_in.get("password"), "imap.password", problems) or smtp_password
        )
    derived = derive_imap_host(smtp["smtp_host"]) if smtp["smtp_host"] else None
    preset_imap_host = preset.imap.host if preset else derived
    if imap_in.get("host") is None and preset_imap_host is None and smtp["smtp_host"]:
        problems.error(
            "imap.host",
            f"is required: it cannot be derived from the SMTP host {smtp['smtp_host']!r}",
        )
    imap = server_endpoint(
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

    name = text_field(data, "name", problems) or email or ""
    display_name = text_field(data, "display_name", problems) or (
        email.split("@")[0] if email else ""
    )
    values: dict[str, Any] = {
        "name": name,
        "email": email,
        "display_name": display_name,
        "description": text_field(data, "description", problems),
        "sender_info": text_field(data, "sender_info", problems),
        "department": text_field(data, "department", problems),
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
        "signature": sanitize_signature(text_field(data, "signature", problems)),
        "tags": normalize_tags(data.get("tags"), problems),
        "reply_to": optional_email(data, "reply_to", problems, allow_private=private),
        "delete_message_policy": DeleteMessagePolicy(
            data.get("delete_message_policy") or DeleteMessagePolicy.DONT_DELETE
        ).value,
        "notify_on_new_messages": bool(data.get("notify_on_new_messages", False)),
        "notification_email": optional_email(
            data, "notification_email", problems, allow_private=private
        ),
        "dkim_selectors": normalize_selectors(data.get("dkim_selectors"), problems),
        **normalize_receiving(data.get("receiving"), problems, create=True),
        **normalize_inbox_sending(data, problems, create=True),
    }
    if values["notify_on_new_messages"] and not values["notification_email"]:
        problems.error("notificationEmail", "is required when notifyOnNewMessages is true")
    secrets: dict[str, Secret] = {}
    if managed_oauth:
        pass
    elif oauth2:
        oauth_values, secrets = _external_token(data, problems, provider.value)
        values.update(oauth_values)
    else:
        secrets = {
            "smtp_password": smtp_password or Secret(""),
            "imap_password": imap_password or Secret(""),
        }
    problems.raise_if_any()
    return NormalizedInbox(values=values, passwords=secrets, warnings=problems.warnings)


_PLAIN_FIELDS = ("description", "sender_info", "department")


def normalize_update(
    inbox: InboxRow, data: Mapping[str, Any], *, allow_private_hosts: bool = False
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
            values[key] = text_field(data, key, problems, required=True)
    for key in _PLAIN_FIELDS:
        if key in data:
            values[key] = text_field(data, key, problems)
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
        values["signature"] = sanitize_signature(text_field(data, "signature", problems))
    if "tags" in data:
        values["tags"] = normalize_tags(data["tags"], problems)
    if "dkim_selectors" in data:
        values["dkim_selectors"] = normalize_selectors(data["dkim_selectors"], problems)
    for key in ("reply_to", "notification_email"):
        if key in data:
            values[key] = optional_email(data, key, problems, allow_private=private)
    if "delete_message_policy" in data:
        values["delete_message_policy"] = DeleteMessagePolicy(
            data["delete_message_policy"] or DeleteMessagePolicy.DONT_DELETE
        ).value
    if data.get("receiving") is not None:
        values.update(normalize_receiving(data["receiving"], problems, create=False))
    values.update(normalize_inbox_sending(data, problems, create=False))

    passwords: dict[str, Secret] = {}
    for protocol in ("smtp", "imap"):
        side: Mapping[str, Any] | None = data.get(protocol)
        if not side:
            continue
        if "host" in side:
            host = normalize_host(side["host"], f"{protocol}.host", problems)
            if host is not None and host != getattr(inbox, f"{protocol}_host"):
                values[f"{protocol}_host"] = host
                if inbox.auth_method == AuthMethod.OAUTH2 and "oauth2" not in data:
                    problems.error(
                        f"{protocol}.host",
                        "give oauth2 again (or connect again with startOAuthConnection) when "
                        "changing the host: a stored token is never sent to a new server",
                    )
                elif not side.get("password") and "oauth2" not in data:
                    problems.error(
                        f"{protocol}.password",
                        "give the password again when changing the host: a stored password "
                        "is never sent to a new server",
                    )
        port = normalize_port(side.get("port"), f"{protocol}.port", problems)
        security = parse_security(side.get("security"))
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
        password = normalize_password(side.get("password"), f"{protocol}.password", problems)
        if password is not None:
            passwords[f"{protocol}_password"] = password

    if "oauth2" in data:
        if passwords:
            problems.error("oauth2", "give either passwords or oauth2, not both")
        oauth_values, tokens = _external_token(
            data, problems, values.get("provider", inbox.provider)
        )
        values.update(oauth_values)
        passwords.update(tokens)
    elif passwords and inbox.auth_method == AuthMethod.OAUTH2:
        # Back from OAuth to passwords: both sides need one, none is stored yet.
        values.update(auth_method=AuthMethod.PASSWORD.value, oauth_reauth_required_at=None)
        for column in ("smtp_password", "imap_password"):
            if column not in passwords and not getattr(inbox, column):
                problems.error(column.replace("_", "."), "is required to log in with a password")

    notify = values.get("notify_on_new_messages", inbox.notify_on_new_messages)
    notification_email = values.get("notification_email", inbox.notification_email)
    if notify and not notification_email:
        problems.error("notificationEmail", "is required when notifyOnNewMessages is true")
    problems.raise_if_any()
    return NormalizedInbox(values=values, passwords=passwords, warnings=problems.warnings)
