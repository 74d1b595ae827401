"""Shared frame of the SMTP and IMAP probes: deadline, address guard, and turning every
outcome, expected or not, into a ProbeResult whose texts hold no secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from mail.endpoint import Endpoint, Login, ProbeSettings
from mail.failures import ProbeFailure, find_cause
from mail.network import ResolvedTarget, TargetError, open_socket, resolve_target
from mail.oauth_sasl import token_forms
from mail.presets import IMPLICIT_TLS_PORTS, Security, app_password_hint, default_port
from mail.results import ProbeCode, ProbeResult, Protocol, TlsInfo
from mail.tls import inspection_context, plaintext_peer

MAX_TEXT = 300  # server texts are quoted in messages; keep them short


@dataclass(slots=True)
class ProbeFacts:
    """What a probe learned so far; kept on failure too (e.g. the untrusted cert's facts)."""

    tls: TlsInfo | None = None
    capabilities: list[str] = field(default_factory=list)
    auth_mechanisms: list[str] = field(default_factory=list)
    greeting: str | None = None
    size_limit: int | None = None
    message_count: int | None = None
    # Loop time at which the overall timeout fires, for steps that budget extra checks.
    deadline: float = 0.0


def courtesy_budget(facts: ProbeFacts, cap: float) -> float:
    """Seconds for a goodbye (QUIT/LOGOUT) that must not let the overall deadline turn a
    finished login into a TIMEOUT; 0 means skip it."""
    left = facts.deadline - asyncio.get_running_loop().time() - 0.05
    return max(0.0, min(cap, left))


Steps = Callable[[Endpoint, ProbeSettings, ResolvedTarget, ProbeFacts], Awaitable[None]]


# The current probe's password forms: server texts are scrubbed as they are quoted, since a
# server may echo what it was sent.
_SECRETS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "probe_secrets", default=()
)
# Server texts lose any secret of 3+ characters. The final pass over our own wording only
# removes secrets of this length up: a four-letter password must not turn every "port" in a
# hint into "***", and our wording never contains the password anyway.
_SERVER_TEXT_MIN_LEN = 3
_FINAL_PASS_MIN_LEN = 8


def server_text(raw: str | bytes) -> str:
    """A server reply made printable, short enough to quote, and free of the password."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    text = scrub(text, _SECRETS.get(), min_len=_SERVER_TEXT_MIN_LEN) or ""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def scrub(text: str | None, secrets: Sequence[str], *, min_len: int = 1) -> str | None:
    """Remove secrets and their base64 forms (SASL) from a text a server might have echoed."""
    if text is None:
        return None
    for secret in secrets:
        if len(secret) >= min_len and secret in text:
            text = text.replace(secret, "***")
    return text


def secret_forms(endpoint: Endpoint) -> tuple[str, ...]:
    try:
        password = endpoint.password.reveal()
    except Exception:
        return ()
    if not password:
        return ()
    raw = password.encode("utf-8", "surrogateescape")
    user = endpoint.username.encode("utf-8", "surrogateescape")
    forms = [
        password,
        base64.b64encode(raw).decode(),
        base64.b64encode(b"\0" + user + b"\0" + raw).decode(),  # SASL PLAIN
        password.replace("\\", "\\\\").replace('"', '\\"'),  # IMAP quoted string
    ]
    if endpoint.login is Login.OAUTH2:  # the access token inside XOAUTH2 / OAUTHBEARER
        forms.extend(token_forms(endpoint, password))
    # Longest first so a form containing another is replaced whole.
    return tuple(sorted(set(forms), key=len, reverse=True))


def port_hint_plaintext_peer(protocol: Protocol, port: int) -> str:
    """Implicit TLS was configured but the port answered in plain text."""
    tls_port = default_port(protocol, Security.TLS)
    starttls_ports = {587, 25} if protocol == "smtp" else {143}
    if port in starttls_ports:
        return (
            f"Port {port} speaks STARTTLS; set security to STARTTLS or use port {tls_port} "
            "for implicit TLS."
        )
    return (
        f"Port {port} answered in plain text, not TLS; set security to STARTTLS, or use port "
        f"{tls_port} for implicit TLS."
    )


def port_hint_tls_peer(protocol: Protocol, port: int) -> str:
    """STARTTLS or no security was configured but the port expects TLS from the first byte."""
    starttls_port = default_port(protocol, Security.STARTTLS)
    return (
        f"Port {port} speaks implicit TLS; set security to TLS, or use port {starttls_port} "
        "for STARTTLS."
    )


def tls_handshake_failure(
    exc: BaseException, protocol: Protocol, endpoint: Endpoint
) -> ProbeFailure:
    """A non-certificate TLS handshake error, explained."""
    if plaintext_peer(exc) and endpoint.security is Security.TLS:
        return ProbeFailure(
            ProbeCode.PROTOCOL_ERROR,
            f"The server on port {endpoint.port} did not answer with TLS.",
            hint=port_hint_plaintext_peer(protocol, endpoint.port),
            field="security",
        )
    if find_cause(exc, TimeoutError) is not None:
        return ProbeFailure(
            ProbeCode.TIMEOUT,
            "The TLS handshake did not finish in time.",
            hint="The server accepted the connection but did not complete TLS.",
            field="port",
        )
    error = find_cause(exc, ssl.SSLError)
    detail = f" ({server_text(error.reason or str(error))})" if error is not None else ""
    return ProbeFailure(
        ProbeCode.TLS_HANDSHAKE_FAILED,
        f"The TLS handshake with the server failed{detail}.",
        hint="The server closed or broke the TLS handshake. Check the security setting and port; "
        "very old servers may not support TLS 1.2.",
        field="security",
    )


async def speaks_implicit_tls(target: ResolvedTarget, within: float) -> bool:
    """Whether the port completes a TLS handshake from the first byte. Sends no credential."""
    if within <= 0:
        return False
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within):
            sock = await open_socket(target, within)
            _, writer = await asyncio.open_connection(
                sock=sock, ssl=inspection_context(), server_hostname=target.host
            )
        return True
    except (OSError, TimeoutError, ssl.SSLError, EOFError):
        return False
    finally:
        if writer is not None:
            await close_writer(writer)


async def greeting_timeout_failure(
    protocol: Protocol, endpoint: Endpoint, target: ResolvedTarget, deadline: float, step: float
) -> ProbeFailure:
    """No greeting on a plaintext connection: tell an implicit-TLS port from a dead server.

    The extra TLS handshake gets one step's budget (`step`), capped by the overall deadline.
    """
    loop = asyncio.get_running_loop()
    budget = min(step, deadline - loop.time() - 0.05)
    if endpoint.security is not Security.TLS and (
        endpoint.port in IMPLICIT_TLS_PORTS or await speaks_implicit_tls(target, budget)
    ):
        return ProbeFailure(
            ProbeCode.PROTOCOL_ERROR,
            f"The server on port {endpoint.port} expects TLS right away and sent no greeting.",
            hint=port_hint_tls_peer(protocol, endpoint.port),
            field="security",
        )
    return ProbeFailure(
        ProbeCode.TIMEOUT,
        "The server accepted the connection but sent no greeting in time.",
        hint="Check the port and security settings; the server may be overloaded.",
        field="port",
    )


async def close_writer(writer: asyncio.StreamWriter, within: float = 1.0) -> None:
    """Close a stream without hanging on a peer that never answers the TLS close_notify."""
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), within)
    if not writer.transport.is_closing():
        writer.transport.abort()


def _classify(exc: BaseException) -> ProbeFailure:
    """The fallback for exceptions a step did not translate itself."""
    if find_cause(exc, ConnectionRefusedError) is not None:
        return ProbeFailure(
            ProbeCode.CONNECTION_REFUSED,
            "The server refused the connection: nothing listens on that port.",
            hint="Check the port number and that the mail server is running.",
            field="port",
        )
    if find_cause(exc, TimeoutError) is not None:
        return ProbeFailure(ProbeCode.TIMEOUT, "The server did not answer in time.", field="host")
    if find_cause(exc, ssl.SSLError) is not None:
        return ProbeFailure(
            ProbeCode.TLS_HANDSHAKE_FAILED, "The TLS connection failed.", field="security"
        )
    if find_cause(exc, ConnectionError) is not None or find_cause(exc, EOFError) is not None:
        return ProbeFailure(
            ProbeCode.PROTOCOL_ERROR, "The server closed the connection unexpectedly."
        )
    if isinstance(exc, OSError):
        return ProbeFailure(
            ProbeCode.CONNECTION_REFUSED,
            f"The connection failed: {server_text(exc.strerror or type(exc).__name__)}.",
            field="host",
        )
    return ProbeFailure(ProbeCode.UNEXPECTED, f"Unexpected error: {type(exc).__name__}.")


@contextlib.contextmanager
def secrets_scope(*endpoints: Endpoint) -> Iterator[tuple[str, ...]]:
    """Within the block, server_text() scrubs every password form of `endpoints`.

    Yields those forms (longest first) for the final pass over result texts (final_scrub).
    """
    forms = {form for endpoint in endpoints for form in secret_forms(endpoint)}
    secrets = tuple(sorted(forms, key=len, reverse=True))
    token = _SECRETS.set(secrets)
    try:
        yield secrets
    finally:
        _SECRETS.reset(token)


def final_scrub(text: str | None, secrets: Sequence[str]) -> str | None:
    """The last pass over a result's own wording before it leaves the mail layer."""
    return scrub(text, secrets, min_len=_FINAL_PASS_MIN_LEN)


HOST_NOT_FOUND_HINT = (
    "Check the spelling of the host name, and that its domain has DNS records for it "
    "(an A or AAAA record); your provider's setup page names the server."
)


async def resolve_checked(endpoint: Endpoint, settings: ProbeSettings) -> ResolvedTarget:
    """The endpoint's address through the network guard; refusals raise ProbeFailure."""
    try:
        return await resolve_target(endpoint.host, endpoint.port, settings.network)
    except TargetError as exc:
        hint = HOST_NOT_FOUND_HINT if exc.code is ProbeCode.HOST_NOT_FOUND else None
        raise ProbeFailure(exc.code, exc.message, hint=hint, field=exc.field) from None


async def attempt(
    body: Callable[[], Awaitable[None]], within: float, step_timeout: float | None = None
) -> ProbeFailure | None:
    """Run `body` within `within` seconds; None on success, else the failure to report.

    Every exception is translated (ProbeFailure as is, others by _classify), so a caller
    never raises for a peer's behaviour. A timeout names the limit that fired: the whole
    probe's (`within`) or one step's (`step_timeout`, the per-reply wait inside `body`).
    """
    limit = asyncio.timeout(within)
    try:
        async with limit:
            await body()
    except ProbeFailure as exc:
        return exc
    except TimeoutError:
        if limit.expired() or step_timeout is None:
            message = f"The server did not finish within {within:g} s."
        else:
            message = f"The server stopped answering: no reply within {step_timeout:g} s."
        return ProbeFailure(ProbeCode.TIMEOUT, message, field="host")
    except Exception as exc:  # a probe reports; it never raises for a peer's behaviour
        return _classify(exc)
    return None


def failure_result(protocol: Protocol, failure: ProbeFailure, provider: str | None) -> ProbeResult:
    """A failed ProbeResult: the provider's app-password hint on AUTH_FAILED, field prefixed."""
    hint = failure.hint
    if failure.code is ProbeCode.AUTH_FAILED:
        hint = app_password_hint(provider) or hint
    return ProbeResult(
        protocol=protocol,
        ok=False,
        code=failure.code,
        message=failure.message,
        hint=hint,
        field=f"{protocol}.{failure.field}" if failure.field else None,
    )


async def run_probe(
    protocol: Protocol,
    endpoint: Endpoint,
    settings: ProbeSettings,
    provider: str | None,
    steps: Steps,
) -> ProbeResult:
    started = time.monotonic()
    with secrets_scope(endpoint) as secrets:
        return await _run(protocol, endpoint, settings, provider, steps, started, secrets)


async def _run(
    protocol: Protocol,
    endpoint: Endpoint,
    settings: ProbeSettings,
    provider: str | None,
    steps: Steps,
    started: float,
    secrets: tuple[str, ...],
) -> ProbeResult:
    facts = ProbeFacts(deadline=asyncio.get_running_loop().time() + settings.overall_timeout)

    async def body() -> None:
        target = await resolve_checked(endpoint, settings)
        await steps(endpoint, settings, target, facts)

    failure = await attempt(body, settings.overall_timeout, settings.connect_timeout)

    latency_ms = int((time.monotonic() - started) * 1000)
    if failure is None:
        result = ProbeResult(
            protocol=protocol,
            ok=True,
            code=ProbeCode.OK,
            message=f"Logged in to {endpoint.host}:{endpoint.port} as {endpoint.username}.",
        )
    else:
        result = failure_result(protocol, failure, provider)
        facts.tls = failure.tls or facts.tls
    result.latency_ms = latency_ms
    result.tls = facts.tls
    result.capabilities = facts.capabilities
    result.auth_mechanisms = facts.auth_mechanisms
    result.greeting = facts.greeting
    result.size_limit = facts.size_limit
    result.message_count = facts.message_count

    result.message = final_scrub(result.message, secrets) or ""
    result.hint = final_scrub(result.hint, secrets)
    result.greeting = final_scrub(result.greeting, secrets)
    return result
