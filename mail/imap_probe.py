"""IMAP probe: connect as configured, verify TLS, CAPABILITY, LOGIN, EXAMINE INBOX, LOGOUT."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl

from mail.endpoint import Endpoint, Login, ProbeSettings
from mail.failures import ProbeFailure, find_cause
from mail.imap_wire import (
    LINE_LIMIT,
    ImapProtocolError,
    ImapWire,
    Tagged,
    astring,
    parse_capabilities,
)
from mail.network import ResolvedTarget, open_socket
from mail.oauth_sasl import (
    ERROR_ACK,
    error_status,
    initial_response,
    no_oauth_mechanism,
    pick_mechanism,
    token_rejected,
)
from mail.presets import Security
from mail.probe_runner import (
    ProbeFacts,
    close_writer,
    courtesy_budget,
    greeting_timeout_failure,
    run_probe,
    server_text,
    tls_handshake_failure,
)
from mail.results import ProbeCode, ProbeResult
from mail.tls import negotiate

_EXISTS = re.compile(rb"^(\d+) EXISTS$", re.IGNORECASE)
_LOGOUT_TIMEOUT = 2.0


async def probe_imap(
    endpoint: Endpoint, settings: ProbeSettings, provider: str | None = None
) -> ProbeResult:
    """Check that `endpoint` accepts these IMAP credentials. Never raises for peer behaviour."""
    return await run_probe("imap", endpoint, settings, provider, _steps)


async def _steps(
    endpoint: Endpoint, settings: ProbeSettings, target: ResolvedTarget, facts: ProbeFacts
) -> None:
    try:
        await _session(endpoint, settings, target, facts)
    except ImapProtocolError as exc:
        raise ProbeFailure(
            ProbeCode.PROTOCOL_ERROR,
            str(exc),
            hint="Check the host and port: this port may serve another protocol.",
            field="port",
        ) from None


async def _session(
    endpoint: Endpoint, settings: ProbeSettings, target: ResolvedTarget, facts: ProbeFacts
) -> None:
    async def open_with(context: ssl.SSLContext | None) -> ImapWire:
        return await _open(endpoint, settings, target, facts, context)

    async def close(wire: ImapWire) -> None:
        await close_writer(wire.writer)

    if endpoint.security is Security.NONE:
        wire = await open_with(None)
    else:
        wire, facts.tls = await negotiate(
            open_with,
            lambda w: w.ssl_object(),
            close,
            ca_file=settings.ca_file,
            pin=endpoint.tls_certificate_sha256,
        )
    try:
        # Asked again after STARTTLS: capabilities from before TLS may have been forged.
        _record_capabilities(facts, await wire.capabilities())
        await _authenticate(wire, endpoint, facts)
        await _examine_inbox(wire, facts)
        budget = courtesy_budget(facts, _LOGOUT_TIMEOUT)
        if budget > 0:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(wire.command("LOGOUT"), budget)
    finally:
        await close_writer(wire.writer, within=courtesy_budget(facts, 1.0))


async def _open(
    endpoint: Endpoint,
    settings: ProbeSettings,
    target: ResolvedTarget,
    facts: ProbeFacts,
    context: ssl.SSLContext | None,
) -> ImapWire:
    """A greeted connection with TLS done as configured; closes everything when it raises."""
    implicit = endpoint.security is Security.TLS
    timeout = settings.connect_timeout
    sock = await open_socket(target, timeout)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                sock=sock,
                ssl=context if implicit else None,
                server_hostname=target.host if implicit else None,
                ssl_handshake_timeout=timeout if implicit else None,
                limit=LINE_LIMIT,
            ),
            timeout,
        )
    except Exception as exc:
        if not implicit or find_cause(exc, ssl.SSLCertVerificationError) is not None:
            raise
        raise tls_handshake_failure(exc, "imap", endpoint) from None

    wire = ImapWire(reader, writer, timeout)
    try:
        try:
            status, line = await wire.read_greeting()
        except TimeoutError:
            if implicit:
                raise ProbeFailure(
                    ProbeCode.TIMEOUT,
                    "The server completed TLS but sent no greeting in time.",
                    field="port",
                ) from None
            raise await greeting_timeout_failure(
                "imap", endpoint, target, facts.deadline, settings.connect_timeout
            ) from None
        except ImapProtocolError as exc:
            raise _not_imap(exc) from None
        facts.greeting = server_text(line)
        if status == "BYE":
            raise ProbeFailure(
                ProbeCode.PROTOCOL_ERROR, f"The server refused the session: {server_text(line)}"
            )
        if status == "PREAUTH":
            raise ProbeFailure(
                ProbeCode.PROTOCOL_ERROR,
                "The server logged the connection in without credentials (PREAUTH), so the "
                "username and password cannot be checked.",
            )
        if endpoint.security is Security.STARTTLS:
            assert context is not None
            await _starttls(wire, endpoint, target, facts, line, context, timeout)
    except BaseException:
        await close_writer(writer)
        raise
    return wire


def _not_imap(exc: ImapProtocolError) -> ProbeFailure:
    return ProbeFailure(
        ProbeCode.PROTOCOL_ERROR,
        str(exc),
        hint="Check the host and port: this port may serve another protocol.",
        field="port",
    )


async def _starttls(
    wire: ImapWire,
    endpoint: Endpoint,
    target: ResolvedTarget,
    facts: ProbeFacts,
    greeting: bytes,
    context: ssl.SSLContext,
    handshake_within: float,
) -> None:
    code = greeting[len(b"* OK ") :].lstrip()
    caps = parse_capabilities(code) or await wire.capabilities()
    _record_capabilities(facts, caps)
    if "STARTTLS" not in caps:
        raise ProbeFailure(
            ProbeCode.STARTTLS_UNSUPPORTED,
            f"The server on port {endpoint.port} does not offer STARTTLS.",
            hint="Use port 993 with security TLS if the server supports implicit TLS; inboxd "
            "will not send the password unencrypted unless security is set to NONE.",
            field="security",
        )
    try:
        reply = await wire.starttls(context, target.host, handshake_within)
    except ImapProtocolError:
        raise
    except Exception as exc:
        if find_cause(exc, ssl.SSLCertVerificationError) is not None:
            raise
        raise tls_handshake_failure(exc, "imap", endpoint) from None
    if reply.status != "OK":
        raise ProbeFailure(
            ProbeCode.STARTTLS_UNSUPPORTED,
            f"The server refused STARTTLS: {reply.status} {server_text(reply.text)}",
            field="security",
        )


def _record_capabilities(facts: ProbeFacts, caps: list[str]) -> None:
    if not caps:
        return
    facts.capabilities = [c for c in caps if not c.startswith("AUTH=")]
    mechanisms = [c[len("AUTH=") :] for c in caps if c.startswith("AUTH=")]
    # Servers stop listing AUTH= once logged in; keep what was offered before login.
    if mechanisms:
        facts.auth_mechanisms = mechanisms


def _plaintext_refused(endpoint: Endpoint, facts: ProbeFacts) -> ProbeFailure:
    if endpoint.security is not Security.NONE:
        return ProbeFailure(
            ProbeCode.PROTOCOL_ERROR,
            "The server disabled LOGIN even over TLS.",
            hint="This server may accept only OAuth (XOAUTH2) logins.",
        )
    hint = (
        "Set security to STARTTLS: the server offers it."
        if "STARTTLS" in facts.capabilities
        else "Use port 993 with TLS or port 143 with STARTTLS."
    )
    return ProbeFailure(
        ProbeCode.PLAINTEXT_AUTH_REFUSED,
        "The server does not accept a login over an unencrypted connection (LOGINDISABLED).",
        hint=hint,
        field="security",
    )


async def _authenticate(wire: ImapWire, endpoint: Endpoint, facts: ProbeFacts) -> None:
    """Log in as the endpoint says: LOGIN with the password, or SASL with the access token."""
    if endpoint.login is Login.OAUTH2:
        await _oauth_login(wire, endpoint, facts)
        return
    if "LOGINDISABLED" in facts.capabilities:
        raise _plaintext_refused(endpoint, facts)
    await _login(wire, endpoint, facts)


async def _login(wire: ImapWire, endpoint: Endpoint, facts: ProbeFacts) -> None:
    reply = await wire.command(
        "LOGIN", astring(endpoint.username), astring(endpoint.password.reveal())
    )
    if reply.status != "OK":
        raise ProbeFailure(
            ProbeCode.AUTH_FAILED,
            f"The server rejected the username or password ({reply.status} "
            f"{server_text(reply.text)}).",
            hint="Check the username (often the full email address) and the password.",
            field="password",
        )
    await _after_login(wire, reply, facts)


async def _oauth_login(wire: ImapWire, endpoint: Endpoint, facts: ProbeFacts) -> None:
    """AUTHENTICATE XOAUTH2 (or OAUTHBEARER) with the access token; never LOGIN."""
    mechanism = pick_mechanism(facts.auth_mechanisms)
    if mechanism is None:
        plaintext = endpoint.security is Security.NONE and "STARTTLS" in facts.capabilities
        raise no_oauth_mechanism(facts.auth_mechanisms, plaintext=plaintext)
    token = endpoint.password.reveal()
    reply, challenge = await wire.authenticate(
        mechanism,
        initial_response(mechanism, endpoint, token),
        ERROR_ACK[mechanism],
        sasl_ir="SASL-IR" in facts.capabilities,
    )
    if reply.status != "OK":
        status = error_status(challenge, token) if challenge is not None else None
        raise token_rejected(f"{reply.status} {server_text(reply.text)}", status)
    await _after_login(wire, reply, facts)


async def _after_login(wire: ImapWire, reply: Tagged, facts: ProbeFacts) -> None:
    # Capabilities change after login (IDLE, CONDSTORE...); servers often send them in the OK.
    code = reply.code
    caps = parse_capabilities(b"[" + code + b"]") if code else []
    _record_capabilities(facts, caps or await wire.capabilities())


async def _examine_inbox(wire: ImapWire, facts: ProbeFacts) -> None:
    # EXAMINE, not SELECT: same EXISTS count, but read-only, so \Recent flags survive.
    reply = await wire.command("EXAMINE", b"INBOX")
    if reply.status != "OK":
        return  # the login worked; a missing INBOX is not a credential problem
    for line in reply.untagged:
        match = _EXISTS.match(line)
        if match:
            facts.message_count = int(match.group(1))
