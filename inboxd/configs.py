"""What each part of inboxd runs with, read from ``Settings``: the probes, the receiver, the
outbox, the send limits, the OAuth providers, and the state the API and workers share."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from inboxd.outbox_rules import OutboxConfig
from inboxd.receiver import ReceiverConfig
from inboxd.runtime import Resolved, open_database
from inboxd.settings import Settings
from mail.dns_lookup import DnsSettings
from mail.imap_session import SessionSettings
from mail.network import NetworkPolicy
from mail.probes import ProbeSettings
from mail.session_pool import PoolLimits
from resolvers.oauth_client import OAuthConfig, with_overrides
from resolvers.state import AppState, SendLimits
from resolvers.verification import VerificationConfig
from storage.listener import EventHub


def verification_config(settings: Settings) -> VerificationConfig:
    network = NetworkPolicy(
        allow_private_hosts=settings.allow_private_hosts,
        allowed_ports=frozenset(settings.allowed_ports) if settings.allowed_ports else None,
        dns_timeout=settings.dns_lifetime,
    )
    dns = None
    if settings.dns_check_enabled:
        dns = DnsSettings(
            port=settings.dns_port, timeout=settings.dns_timeout, lifetime=settings.dns_lifetime
        )
        if settings.dns_nameservers:
            dns = dataclasses.replace(dns, nameservers=list(settings.dns_nameservers))
    return VerificationConfig(
        smtp=ProbeSettings(
            connect_timeout=settings.smtp_connect_timeout,
            overall_timeout=settings.smtp_timeout,
            network=network,
            ca_file=settings.tls_ca_file,
        ),
        imap=ProbeSettings(
            connect_timeout=settings.imap_connect_timeout,
            overall_timeout=settings.imap_timeout,
            network=network,
            ca_file=settings.tls_ca_file,
        ),
        dns=dns,
        max_attempts=settings.job_max_attempts,
        retry_base=timedelta(seconds=settings.job_retry_base_seconds),
        round_trip_timeout=settings.round_trip_timeout,
        round_trip_poll_interval=settings.round_trip_poll_interval,
    )


def receiver_config(settings: Settings) -> ReceiverConfig:
    imap = verification_config(settings).imap
    return ReceiverConfig(
        session=SessionSettings(
            connect_timeout=settings.imap_connect_timeout,
            command_timeout=settings.imap_timeout,
            network=imap.network,
            ca_file=imap.ca_file,
            fetch_batch=settings.receiving_fetch_batch,
            max_message_bytes=settings.receiving_max_message_bytes,
        ),
        lease_seconds=settings.receiving_lease_seconds,
        idle_interval=settings.receiving_idle_interval_seconds,
        poll_interval=settings.receiving_poll_interval_seconds,
        max_inboxes=settings.receiving_max_inboxes_per_process,
        auth_failure_limit=settings.receiving_auth_failure_limit,
        backoff_base=settings.receiving_backoff_base_seconds,
        backoff_max=settings.receiving_backoff_max_seconds,
        max_backfill_days=settings.receiving_max_backfill_days,
        checker_linger=settings.receiving_idle_check_linger_seconds,
        max_attachment_bytes=settings.receiving_max_attachment_bytes,
    )


def outbox_config(settings: Settings) -> OutboxConfig:
    return OutboxConfig(
        smtp=verification_config(settings).smtp,
        imap=receiver_config(settings).session,
        max_attempts=settings.send_max_attempts,
        retry_base=timedelta(seconds=settings.send_retry_base_seconds),
        retry_cap=timedelta(seconds=settings.send_retry_cap_seconds),
        max_message_bytes=settings.send_max_message_bytes,
        sessions=PoolLimits(
            linger=settings.send_session_linger_seconds,
            max_uses=settings.send_session_max_messages,
        ),
    )


def send_limits(settings: Settings) -> SendLimits:
    return SendLimits(
        max_recipients=settings.send_max_recipients,
        max_message_bytes=settings.send_max_message_bytes,
        per_inbox_per_minute=settings.rate_limit_sends_per_inbox_per_minute,
    )


def oauth_config(settings: Settings) -> OAuthConfig:
    base = OAuthConfig()
    return OAuthConfig(
        google=with_overrides(
            base.google,
            settings.oauth_google_authorize_url,
            settings.oauth_google_token_url,
            settings.oauth_google_userinfo_url,
        ),
        microsoft=with_overrides(
            base.microsoft,
            settings.oauth_microsoft_authorize_url,
            settings.oauth_microsoft_token_url,
            settings.oauth_microsoft_me_url,
        ),
        state_ttl=timedelta(seconds=settings.oauth_state_seconds),
        timeout=settings.oauth_timeout_seconds,
        refresh_margin=timedelta(seconds=settings.oauth_refresh_margin_seconds),
        ca_file=settings.tls_ca_file,
    )


def build_state(settings: Settings, resolved: Resolved) -> AppState:
    return AppState(
        db=open_database(settings, resolved.database_url),
        keyring=resolved.keyring,
        max_page_size=settings.max_page_size,
        api_key_touch_interval=timedelta(seconds=settings.api_key_touch_interval_seconds),
        hub=EventHub(resolved.database_url, connect_timeout=settings.db_connect_timeout),
        dns=verification_config(settings).dns,
        allow_private_hosts=settings.allow_private_hosts,
        verification_spacing=timedelta(seconds=settings.verification_spacing_seconds),
        tests_per_inbox_per_minute=settings.rate_limit_tests_per_inbox_per_minute,
        sending=send_limits(settings),
        oauth=oauth_config(settings),
    )
