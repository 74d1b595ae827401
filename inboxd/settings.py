"""All configuration, read once from the environment (prefix ``INBOXD_``)."""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INBOXD_", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    # Unset: an embedded Postgres (pgserver) is started in ``data_dir``.
    database_url: str | None = None
    data_dir: Path = Path(".inboxd")
    # Comma-separated ``key_id:base64(32 bytes)``; the last one encrypts, all of them decrypt.
    # Unset with the embedded database: a key is generated into ``data_dir``.
    encryption_keys: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    graphiql: bool | None = None  # default: on in development, off in production
    # The web console at /console (inboxd/console.py); default: on in development, off in
    # production.
    console: bool | None = None
    # The legacy subscriptions-transport-ws protocol ("graphql-ws"), for old clients only.
    legacy_graphql_ws: bool = False
    # Browser origins allowed to call the API from another site, comma-separated
    # ("https://app.example.com,https://admin.example.com", or "*"). Empty: no CORS headers,
    # and websockets are accepted from any origin (see inboxd/cors.py for why that is safe).
    cors_origins: str = ""
    log_level: str = "INFO"
    log_json: bool = True

    # Abuse limits (GraphQL, HTTP, websockets, rates).
    introspection: bool | None = None  # default: on in development, off in production
    max_query_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2_000
    max_field_repeats: int = 20
    # Compiled plans for read-only queries (schema.fastpath); off: graphql-core runs them all.
    compiled_queries: bool = True
    # A cached compiled query skips Strawberry's per-operation machinery (schema.pipeline);
    # off, it runs through Strawberry's execute and the Pipeline extension (bench B1 compares).
    plan_shortcut: bool = True
    max_body_bytes: int = 256 * 1024
    ws_connection_init_timeout_seconds: float = 10.0
    ws_max_subscriptions_per_connection: int = 20
    ws_max_connections_per_key: int = 50
    ws_key_recheck_seconds: float = 30.0
    rate_limit_requests_per_minute: int = 600  # per API key, per process
    rate_limit_tests_per_inbox_per_minute: int = 3  # testConnection + sendTestEmail, global
    # Logins for the same username on the same host are at least this far apart, whichever
    # workspace asks: inboxd must not become a password-guessing machine.
    verification_spacing_seconds: float = 10.0

    db_pool_size: int = 10
    db_connect_timeout: float = 10.0
    db_statement_timeout_ms: int = 15_000
    max_page_size: int = 100
    api_key_touch_interval_seconds: float = 60.0

    # Mail probes (see mail/): every external call has a timeout.
    smtp_connect_timeout: float = 10.0
    smtp_timeout: float = 30.0
    imap_connect_timeout: float = 10.0
    imap_timeout: float = 30.0
    tls_ca_file: str | None = None
    allow_private_hosts: bool = False
    allowed_ports: list[int] | None = Field(default=None)

    # Domain DNS checks (MX, SPF, DKIM, DMARC) run beside every verification.
    dns_check_enabled: bool = True
    dns_nameservers: list[str] | None = None  # default: the system's resolvers
    dns_port: int = 53
    dns_timeout: float = 3.0
    dns_lifetime: float = 5.0
    # Round-trip test: how long to wait for the message to arrive over IMAP, and how often to look.
    round_trip_timeout: float = 60.0
    round_trip_poll_interval: float = 2.0

    worker_enabled: bool = True
    worker_concurrency: int = 8
    job_lease_seconds: float = 60.0
    job_max_attempts: int = 5
    job_retry_base_seconds: float = 5.0
    # Workers sleep until the next due job or a NOTIFY; this only caps the sleep.
    job_poll_interval_seconds: float = 15.0
    shutdown_grace_seconds: float = 10.0

    # Sending mail (sendEmail, inboxd/outbox_worker.py); the worker runs where worker_enabled.
    send_concurrency: int = 8
    send_lease_seconds: float = 120.0
    # Attempts for transient failures (4xx, timeouts, connections), with jittered backoff.
    send_max_attempts: int = 8
    send_retry_base_seconds: float = 30.0
    send_retry_cap_seconds: float = 3600.0
    send_max_recipients: int = 50  # to + cc + bcc
    # A logged-in SMTP session (and the IMAP session filing Sent copies) is kept this long
    # after a message for the same inbox's next one; 0: one session per message.
    send_session_linger_seconds: float = Field(default=5.0, ge=0)
    # Messages one kept session carries before it is closed (servers cap them per connection).
    send_session_max_messages: int = Field(default=50, ge=1)
    send_max_message_bytes: int = 10 * 1024 * 1024  # the composed message
    # sendEmail's own request body limit (its attachments travel base64, 4/3 of their size);
    # unset: send_max_message_bytes * 4/3 plus max_body_bytes for the rest of the request.
    send_max_request_bytes: int | None = None
    rate_limit_sends_per_inbox_per_minute: int = 60  # sendEmail, counted in Postgres; 0: none

    # Prometheus metrics at /metrics (docs/operations.md). On the API port a scrape must send
    # ``Authorization: Bearer <metrics_token>``; with ``metrics_port`` set they are served
    # there instead (bind ``metrics_host`` to a network only Prometheus reaches), which is
    # also how an ``inboxd worker`` process is scraped.
    metrics_enabled: bool = False
    metrics_token: SecretStr | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    # OpenTelemetry traces over OTLP/HTTP, e.g. http://collector:4318/v1/traces; unset: none.
    # Needs the optional extra: pip install 'inboxd[otel]'.
    traces_endpoint: str | None = None
    traces_service_name: str = "inboxd"
    traces_export_timeout_seconds: float = 10.0
    traces_export_interval_seconds: float = 5.0
    # Receiving mail (inboxd/receiver.py): every ACTIVE inbox with receiving on is watched
    # over IMAP by one process, under a lease renewed while it watches.
    receiving_enabled: bool = True
    receiving_lease_seconds: float = 60.0
    # IDLE is re-issued this often (servers drop it after 29 minutes), with a NOOP check.
    receiving_idle_interval_seconds: float = 600.0
    receiving_poll_interval_seconds: float = 30.0  # servers without IDLE
    # An IDLE watcher's second connection (mail.idle_check) closes after this long unused.
    receiving_idle_check_linger_seconds: float = 60.0
    receiving_max_inboxes_per_process: int = 1000
    # Refused logins in a row before the inbox is FAILED (AUTH_FAILED) and watching stops.
    receiving_auth_failure_limit: int = 3
    receiving_backoff_base_seconds: float = 2.0
    receiving_backoff_max_seconds: float = 300.0
    receiving_max_backfill_days: int = 30
    receiving_max_message_bytes: int = 25 * 1024 * 1024  # larger: only the header is stored
    receiving_fetch_batch: int = 20  # messages per UID FETCH
    # Larger attachments are described but their bytes not kept (no downloadUrl).
    receiving_max_attachment_bytes: int = 10 * 1024 * 1024
    # How long an attachment's signed downloadUrl works (inboxd/attachments_http.py).
    attachment_url_seconds: int = Field(default=300, gt=0)

    # OAuth inboxes (Gmail, Microsoft 365; README "Connecting Gmail and Microsoft 365 with
    # OAuth"). The endpoints are the providers' own: set these only for a sovereign cloud or
    # a test provider. Microsoft's may hold ``{tenant}`` (the app's tenant).
    oauth_google_authorize_url: str | None = None
    oauth_google_token_url: str | None = None
    oauth_google_userinfo_url: str | None = None
    oauth_microsoft_authorize_url: str | None = None
    oauth_microsoft_token_url: str | None = None
    oauth_microsoft_me_url: str | None = None
    # How long a startOAuthConnection URL can be completed.
    oauth_state_seconds: float = Field(default=600.0, gt=0)
    oauth_timeout_seconds: float = Field(default=10.0, gt=0)
    # An access token expiring within this is refreshed before it is used.
    oauth_refresh_margin_seconds: float = Field(default=300.0, ge=0)

    @cached_property
    def graphiql_enabled(self) -> bool:
        if self.graphiql is not None:
            return self.graphiql
        return self.environment is Environment.DEVELOPMENT

    @cached_property
    def console_enabled(self) -> bool:
        if self.console is not None:
            return self.console
        return self.environment is Environment.DEVELOPMENT

    @cached_property
    def introspection_enabled(self) -> bool:
        if self.introspection is not None:
            return self.introspection
        return self.environment is Environment.DEVELOPMENT

    @cached_property
    def cors_origin_list(self) -> list[str]:
        # Browsers send an origin as scheme://host[:port], lower-case, with no trailing slash.
        found = (o.strip().rstrip("/").lower() for o in self.cors_origins.split(","))
        return [origin for origin in found if origin]

    @cached_property
    def send_request_limit(self) -> int:
        if self.send_max_request_bytes is not None:
            return self.send_max_request_bytes
        return self.send_max_message_bytes * 4 // 3 + self.max_body_bytes

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION


def load_settings() -> Settings:
    return Settings()
