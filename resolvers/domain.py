"""Domain setup checks and mail settings discovery, for the fields that ask for them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mail.discovery import Discovery, discover_mail_settings
from mail.dns_checks import check_domain_setup as run_dns_check
from mail.dns_lookup import DnsSettings
from mail.presets import Provider, preset_for_domain
from resolvers.state import AppState
from resolvers.validation import FieldIssue, InputInvalid, parse_id
from storage import audit, inboxes
from storage.api_keys import Principal
from storage.rows import InboxRow


class DnsUnavailable(Exception):
    """The server runs with DNS checks off (INBOXD_DNS_CHECK_ENABLED=false)."""


def _dns(state: AppState) -> DnsSettings:
    if state.dns is None:
        raise DnsUnavailable("DNS checks are turned off on this server.")
    return state.dns


async def discover(state: AppState, email: str) -> Discovery:
    try:
        return await discover_mail_settings(email, _dns(state))
    except ValueError as exc:
        raise InputInvalid([FieldIssue("email", str(exc))]) from exc


async def dns_status_for(inbox: InboxRow, dns: DnsSettings) -> dict[str, Any]:
    """The DNS setup check of ``inbox``'s domain as stored JSON. Never raises for DNS trouble."""
    try:
        status = await run_dns_check(
            inbox.email.rpartition("@")[2],
            smtp_host=inbox.smtp_host,
            dkim_selectors=list(inbox.dkim_selectors or []),
            settings=dns,
        )
    except ValueError as exc:  # a domain or host DNS cannot even be asked about
        return {"error": str(exc)}
    return status.to_dict()


async def domain_status(state: AppState, inbox: InboxRow) -> dict[str, Any]:
    return await dns_status_for(inbox, _dns(state))


async def check_domain_setup(
    state: AppState, principal: Principal, raw_id: str, *, client_address: str | None = None
) -> InboxRow:
    inbox_id = parse_id(raw_id)
    async with state.db.connection() as connection:
        inbox = await inboxes.get_inbox(connection, principal.workspace_id, inbox_id)
    # DNS is asked outside any transaction: no row stays locked while a resolver is slow.
    status = await domain_status(state, inbox)
    async with state.db.connection() as connection, connection.transaction():
        inbox = await inboxes.set_setup_status(connection, principal.workspace_id, inbox_id, status)
        await audit.record(
            connection,
            workspace_id=principal.workspace_id,
            action="DOMAIN_CHECKED",
            inbox_id=inbox_id,
            api_key_prefix=principal.key_prefix,
            client_address=client_address,
        )
        return inbox


async def fill_from_discovery(state: AppState, data: Mapping[str, Any]) -> dict[str, Any]:
    """An input with no SMTP host: take the provider, or the settings, from discovery.

    A known provider's domain (gmail.com, ...) needs no DNS; other domains are looked up when
    DNS checks are on. Whatever is still missing afterwards is reported by validation.
    """
    filled = dict(data)
    smtp = dict(filled.get("smtp") or {})
    provider = filled.get("provider")
    if smtp.get("host") or (provider and provider != Provider.CUSTOM.value):
        return filled
    email = str(filled.get("email") or "")
    if state.dns is None:
        preset = preset_for_domain(email.rpartition("@")[2])
        if preset is not None:
            filled["provider"] = preset.provider.value
        return filled
    try:
        found = await discover_mail_settings(email, state.dns)
    except ValueError:
        return filled  # validation names the bad email
    if found.provider is not None:
        filled["provider"] = found.provider.value
        return filled
    if found.smtp is not None:
        smtp.setdefault("host", found.smtp.host)
        smtp.setdefault("port", found.smtp.port)
        smtp.setdefault("security", found.smtp.security.value)
        filled["smtp"] = smtp
    imap = filled.get("imap")
    if found.imap is not None and (imap is None or not imap.get("host")):
        side = dict(imap or {})
        side.update(host=found.imap.host, port=found.imap.port, security=found.imap.security.value)
        filled["imap"] = side
    return filled
