"""SMTP probe: connect as configured, verify TLS, EHLO, AUTH, QUIT — and explain failures.

aiosmtplib speaks the protocol; we open the TCP socket ourselves so the connection goes to
the address the network guard checked, while TLS verifies the user's hostname.
"""

from __future__ import annotations

import contextlib
import ssl

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPResponseException,
)

from mail.endpoint import Endpoint, Login, ProbeSettings
from mail.failures import ProbeFailure, find_cause
from mail.network import ResolvedTarget, open_socket
from mail.oauth_sasl import (
    ERROR_ACK,
    OAUTHBEARER,
    XOAUTH2,
    error_status,
    initial_response,
    no_oauth_mechanism,
    pick_mechanism,
    token_rejected,
)
from mail.presets import Security
from mail.probe_runner import (
    ProbeFacts,
    courtesy_budget,
    greeting_timeout_failure,
    run_probe,
    server_text,
    tls_handshake_failure,
)
from mail.results import ProbeCode, ProbeResult
from mail.tls import negotiate

# Preference order among what the server offers; all three are fine under TLS.
_MECHANISMS = ("plain", "login", "cram-md5")
_QUIT_TIMEOUT = 2.0


async def probe_smtp(
    endpoint: Endpoint, settings: ProbeSettings, provider: str | None = None
) -> ProbeResult:
    """Check that `endpoint` accepts these SMTP credentials. Never raises for peer behaviour."""
    return await run_probe("smtp", endpoint, settings, provider, _steps)


async def _steps(
    endpoint: Endpoint, settings: ProbeSettings, target: ResolvedTarget, facts: ProbeFacts
) -> None:
    smtp = await open_smtp_session(endpoint, settings, target, facts)
    await close_smtp_session(smtp, settings, facts)


async def open_smtp_session(
    endpoint: Endpoint, settings: ProbeSettings, target: ResolvedTarget, facts: ProbeFacts
) -> aiosmtplib.SMTP:
    """An SMTP client connected to the checked `target`, TLS verified (or pinned) as
    configured, EHLO done and logged in, exactly as the probe does it.

    Records what it learns in `facts` (TLS, capabilities...). Failures raise ProbeFailure
    or an exception `attempt`/`run_probe` classifies; the connection is closed then. Call
    inside `secrets_scope` so quoted server texts are scrubbed, and end the session with
    close_smtp_session.
    """

    async def open_with(context: ssl.SSLContext | None) -> aiosmtplib.SMTP:
        return await _open(endpoint, settings, target, facts, context)

    async def close(smtp: aiosmtplib.SMTP) -> None:
        smtp.close()

    if endpoint.security is Security.NONE:
        smtp = await open_with(None)
    else:
        smtp, facts.tls = await negotiate(
            open_with,
            _ssl_object,
            close,
            ca_file=settings.ca_file,
            pin=endpoint.tls_certificate_sha256,
        )
    try:
        await _ehlo(smtp, facts)
        await _authenticate(smtp, endpoint, facts)
    except BaseException:
        smtp.close()
        raise
    return smtp


async def close_smtp_session(
    smtp: aiosmtplib.SMTP, settings: ProbeSettings, facts: ProbeFacts
) -> None:
    """QUIT if `facts.deadline` leaves time for it, then close. Never raises."""
    try:
        # Some servers drop the connection right after AUTH; the login already succeeded.
        budget = courtesy_budget(facts, min(_QUIT_TIMEOUT, settings.connect_timeout))
        if budget > 0:
            with contextlib.suppress(Exception):
                await smtp.quit(timeout=budget)
    finally:
        smtp.close()


def _ssl_object(smtp: aiosmtplib.SMTP) -> ssl.SSLObject | None:
    if smtp.transport is None:
        return None
    obj = smtp.transport.get_extra_info("ssl_object")
    return obj if isinstance(obj, ssl.SSLObject) else None


async def _open(
    endpoint: Endpoint,
    settings: ProbeSettings,
    target: ResolvedTarget,
    facts: ProbeFacts,
    context: ssl.SSLContext | None,
) -> aiosmtplib.SMTP:
    """A connected client with TLS done as configured; closes everything when it raises."""
    implicit = endpoint.security is Security.TLS
    sock = await open_socket(target, settings.connect_timeout)
    smtp = aiosmtplib.SMTP(
        hostname=target.host,
        sock=sock,
        use_tls=implicit,
        start_tls=False,
        tls_context=context,
        timeout=settings.connect_timeout,
        local_hostname=settings.ehlo_hostname,
    )
    try:
        try:
            greeting = await smtp.connect()
        except SMTPConnectTimeoutError as exc:
            if implicit:
                raise tls_handshake_failure(exc, "smtp", endpoint) from None
            raise await greeting_timeout_failure(
                "smtp", endpoint, target, facts.deadline, settings.connect_timeout
            ) from None
        except SMTPConnectResponseError as exc:
            raise ProbeFailure(
                ProbeCode.PROTOCOL_ERROR,
                f"The server refused the session: {exc.code} {server_text(exc.message)}",
            ) from None
        except SMTPResponseException as exc:
            raise _not_smtp(exc) from None
        except SMTPException as exc:
            if find_cause(exc, ssl.SSLCertVerificationError) is not None:
                raise
            if implicit and find_cause(exc, ssl.SSLError) is not None:
                raise tls_handshake_failure(exc, "smtp", endpoint) from None
            if implicit and find_cause(exc, ConnectionError) is not None:
                raise tls_handshake_failure(exc, "smtp", endpoint) from None
            raise ProbeFailure(
                ProbeCode.PROTOCOL_ERROR, "The server closed the connection without a greeting."
            ) from None
        facts.greeting = server_text(f"{greeting.code} {greeting.message}")
        if endpoint.security is Security.STARTTLS:
            assert context is not None
            await _starttls(smtp, endpoint, target, facts, context)
    except BaseException:
        smtp.close()
        raise
    return smtp


def _not_smtp(exc: SMTPResponseException) -> ProbeFailure:
    return ProbeFailure(
        ProbeCode.PROTOCOL_ERROR,
        f"The server's reply is not valid SMTP ({server_text(exc.message)}).",
        hint="Check the host and port: this port may serve another protocol.",
        field="port",
    )


async def _starttls(
    smtp: aiosmtplib.SMTP,
    endpoint: Endpoint,
    target: ResolvedTarget,
    facts: ProbeFacts,
    context: ssl.SSLContext,
) -> None:
    await _ehlo(smtp, facts)
    if not smtp.supports_extension("starttls"):
        raise ProbeFailure(
            ProbeCode.STARTTLS_UNSUPPORTED,
            f"The server on port {endpoint.port} does not offer STARTTLS.",
            hint="Use port 465 with security TLS if the server supports implicit TLS; inboxd "
            "will not send the password unencrypted unless security is set to NONE.",
            field="security",
        )
    try:
        await smtp.starttls(tls_context=context, server_hostname=target.host)
    except SMTPResponseException as exc:
        raise ProbeFailure(
            ProbeCode.STARTTLS_UNSUPPORTED,
            f"The server refused STARTTLS: {exc.code} {server_text(exc.message)}",
            field="security",
        ) from None
    except Exception as exc:
        if find_cause(exc, ssl.SSLCertVerificationError) is not None:
            raise
        raise tls_handshake_failure(exc, "smtp", endpoint) from None


async def _ehlo(smtp: aiosmtplib.SMTP, facts: ProbeFacts) -> None:
    try:
        await smtp.ehlo()
    except SMTPResponseException as exc:
        if exc.code < 0:  # aiosmtplib's code for an unparseable reply
            raise _not_smtp(exc) from None
        raise ProbeFailure(
            ProbeCode.PROTOCOL_ERROR,
            f"The server rejected EHLO: {exc.code} {server_text(exc.message)}",
        ) from None
    facts.capabilities = sorted(key.upper() for key in smtp.esmtp_extensions)
    facts.auth_mechanisms = [m.upper() for m in smtp.server_auth_methods]
    size = smtp.esmtp_extensions.get("size", "").strip()
    facts.size_limit = int(size) if size.isdigit() and int(size) > 0 else None


async def _authenticate(smtp: aiosmtplib.SMTP, endpoint: Endpoint, facts: ProbeFacts) -> None:
    plaintext = endpoint.security is Security.NONE
    if not smtp.supports_extension("auth"):
        if plaintext:
            raise _plaintext_refused(smtp)
        raise ProbeFailure(
            ProbeCode.PROTOCOL_ERROR,
            f"The server on port {endpoint.port} does not offer authentication.",
            hint="This looks like a server-to-server port. Use the submission port: 587 with "
            "STARTTLS or 465 with TLS.",
            field="port",
        )
    if endpoint.login is Login.OAUTH2:
        await _oauth_login(smtp, endpoint, plaintext)
        return
    offered = [m.lower() for m in smtp.server_auth_methods]
    mechanism = next((m for m in _MECHANISMS if m in offered), None)
    if mechanism is None:
        raise ProbeFailure(
            ProbeCode.PROTOCOL_ERROR,
            "The server offers no password login method inboxd supports "
            f"(offered: {', '.join(facts.auth_mechanisms) or 'none'}).",
            hint="Servers that accept only OAuth (XOAUTH2) need an OAuth connection instead.",
        )
    password = endpoint.password.reveal()
    try:
        if mechanism == "plain":
            await smtp.auth_plain(endpoint.username, password)
        elif mechanism == "login":
            await smtp.auth_login(endpoint.username, password)
        else:
            await smtp.auth_crammd5(endpoint.username, password)
    except SMTPAuthenticationError as exc:
        if exc.code in (530, 538) and plaintext:
            raise _plaintext_refused(smtp) from None
        raise ProbeFailure(
            ProbeCode.AUTH_FAILED,
            f"The server rejected the username or password ({exc.code} "
            f"{server_text(exc.message)}).",
            hint="Check the username (often the full email address) and the password.",
            field="password",
        ) from None
    except SMTPResponseException as exc:
        raise ProbeFailure(
            ProbeCode.PROTOCOL_ERROR,
            f"Authentication failed with an unexpected reply: {exc.code} "
            f"{server_text(exc.message)}",
        ) from None


async def _oauth_login(smtp: aiosmtplib.SMTP, endpoint: Endpoint, plaintext: bool) -> None:
    """AUTH XOAUTH2 (aiosmtplib's) or OAUTHBEARER with the access token; never a password
    mechanism, whatever the server offers (``mail.oauth_sasl``)."""
    offered = [m.upper() for m in smtp.server_auth_methods]
    mechanism = pick_mechanism(offered)
    if mechanism is None:  # on plaintext, TLS may be what hides them
        hidden = plaintext and smtp.supports_extension("starttls")
        raise no_oauth_mechanism(offered, plaintext=hidden)
    token = endpoint.password.reveal()
    status: str | None = None
    try:
        if mechanism == XOAUTH2:
            # Answers the error challenge with the empty response itself.
            await smtp.auth_xoauth2(endpoint.username, token)
            return
        reply = await smtp.execute_command(
            b"AUTH", OAUTHBEARER.encode(), initial_response(mechanism, endpoint, token)
        )
        if reply.code == 334:  # the error challenge: acknowledge it, then read the refusal
            status = error_status(reply.message, token)
            reply = await smtp.execute_command(ERROR_ACK[mechanism])
        if reply.code != 235:
            raise SMTPAuthenticationError(reply.code, reply.message)
    except SMTPAuthenticationError as exc:
        if exc.code in (530, 538) and plaintext:
            raise _plaintext_refused(smtp) from None
        raise token_rejected(f"{exc.code} {server_text(exc.message)}", status) from None
    except SMTPResponseException as exc:
        raise ProbeFailure(
            ProbeCode.PROTOCOL_ERROR,
            f"OAuth login failed with an unexpected reply: {exc.code} {server_text(exc.message)}",
        ) from None


def _plaintext_refused(smtp: aiosmtplib.SMTP) -> ProbeFailure:
    hint = (
        "Set security to STARTTLS: the server offers it."
        if smtp.supports_extension("starttls")
        else "Use port 587 with STARTTLS or port 465 with TLS."
    )
    return ProbeFailure(
        ProbeCode.PLAINTEXT_AUTH_REFUSED,
        "The server does not accept a login over an unencrypted connection.",
        hint=hint,
        field="security",
    )
