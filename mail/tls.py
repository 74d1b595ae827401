"""TLS for probes: verified by default, with certificate pinning as the only escape hatch.

Python's ssl has no verify callback, so pinning takes two handshakes: a verifying one, and
only if it fails on the certificate, a second one that skips verification just to read the
leaf. The second connection is used only if the leaf's SHA-256 equals the pin; otherwise it
is closed before any credential is sent.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from cryptography import x509

from mail.failures import ProbeFailure, find_cause
from mail.results import ProbeCode, TlsInfo

C = TypeVar("C")

# OpenSSL reasons that mean the peer did not answer with TLS at all: a plaintext greeting
# ("220 ..." / "* OK ...") read as a TLS record header.
PLAINTEXT_PEER_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "UNEXPECTED_RECORD",
        "BAD_PACKET_LENGTH",
    }
)


def fingerprint_sha256(der: bytes) -> str:
    """Uppercase colon-separated SHA-256 of a DER certificate ("AB:CD:...")."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def normalize_fingerprint(value: str) -> str:
    """Lowercase hex without separators; accepts "AB:CD..", "ab cd..", "sha256/abcd.."."""
    text = value.strip().lower()
    for prefix in ("sha256:", "sha256/", "sha256="):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = "".join(ch for ch in text if ch not in ": -")
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise ValueError("not a SHA-256 fingerprint (64 hex digits)")
    return text


def fingerprints_match(pin: str | None, fingerprint: str | None) -> bool:
    if not pin or not fingerprint:
        return False
    try:
        a, b = normalize_fingerprint(pin), normalize_fingerprint(fingerprint)
    except ValueError:
        return False
    return hmac.compare_digest(a, b)


@functools.lru_cache(maxsize=16)
def verifying_context(ca_file: str | None) -> ssl.SSLContext:
    """System trust store plus `ca_file`, hostname checked, TLS 1.2 or newer.

    Cached because loading the system store reads many files; contexts are safe to share.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


@functools.lru_cache(maxsize=1)
def inspection_context() -> ssl.SSLContext:
    """No verification: only for reading a leaf to compare against a pin or to report it."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# Contexts already loaded, read without a thread: every probe needs one, and a hop through
# the thread pool per probe cost more than the probe's own Python work.
_LOADED: dict[str | None, ssl.SSLContext] = {}
# The first probes of a burst all miss at once: one thread loads, the others wait for it.
_LOADING = threading.Lock()


def _load_once(ca_file: str | None) -> ssl.SSLContext:
    with _LOADING:
        return verifying_context(ca_file)


async def load_verifying_context(ca_file: str | None) -> ssl.SSLContext:
    loaded = _LOADED.get(ca_file)
    if loaded is not None:
        return loaded
    try:
        # The first load reads the system store (many files): off the event loop.
        loaded = await asyncio.to_thread(_load_once, ca_file)
    except (OSError, ssl.SSLError):
        raise ProbeFailure(
            ProbeCode.UNEXPECTED,
            "The configured CA certificate file could not be loaded.",
            hint="Check the server's ca_file setting: it must be a readable PEM file.",
        ) from None
    _LOADED[ca_file] = loaded
    return loaded


def tls_info(ssl_object: ssl.SSLObject | None, *, trusted: bool, pin: str | None) -> TlsInfo:
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    cipher = ssl_object.cipher() if ssl_object is not None else None
    info = TlsInfo(
        version=ssl_object.version() if ssl_object is not None else None,
        cipher=cipher[0] if cipher else None,
        subject=None,
        issuer=None,
        not_before=None,
        not_after=None,
        sha256_fingerprint=None,
        trusted=trusted,
        pinned=False,
    )
    if der:
        info.sha256_fingerprint = fingerprint_sha256(der)
        info.pinned = fingerprints_match(pin, info.sha256_fingerprint)
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return info  # Unparseable leaf: the fingerprint is still meaningful.
        info.subject = cert.subject.rfc4514_string()
        info.issuer = cert.issuer.rfc4514_string()
        info.not_before = cert.not_valid_before_utc.isoformat()
        info.not_after = cert.not_valid_after_utc.isoformat()
    return info


def untrusted_failure(reason: str, info: TlsInfo | None, *, pin: str | None) -> ProbeFailure:
    fp = info.sha256_fingerprint if info else None
    if pin and fp:
        message = (
            f"The server's certificate is not trusted ({reason}) and its SHA-256 fingerprint "
            f"{fp} does not match the pinned fingerprint."
        )
        hint = (
            "The server presented a different certificate than the one pinned. If the server "
            "changed its certificate on purpose, pin the new fingerprint; otherwise someone "
            "may be intercepting the connection."
        )
    elif fp:
        message = f"The server's certificate is not trusted ({reason}). SHA-256 fingerprint: {fp}."
        hint = (
            "If this is your own server with a self-signed or private-CA certificate, verify "
            f"the fingerprint {fp} out of band and pin it by setting the TLS certificate "
            "SHA-256 fingerprint for this server."
        )
    else:
        message = f"The server's certificate is not trusted ({reason})."
        hint = "Install a certificate from a public CA on the server, or pin its fingerprint."
    return ProbeFailure(
        ProbeCode.CERTIFICATE_UNTRUSTED, message, hint=hint, field="tlsCertificateSha256", tls=info
    )


async def negotiate(
    open_with: Callable[[ssl.SSLContext], Awaitable[C]],
    ssl_object_of: Callable[[C], ssl.SSLObject | None],
    close: Callable[[C], Awaitable[None]],
    *,
    ca_file: str | None,
    pin: str | None,
) -> tuple[C, TlsInfo]:
    """Open a TLS connection with `open_with(context)`, verified or pinned.

    `open_with` must open a fresh connection each call, finish the TLS handshake (implicit
    or STARTTLS) and close everything itself when it raises.
    """
    context = await load_verifying_context(ca_file)
    try:
        conn = await open_with(context)
    except Exception as exc:
        verify_error = find_cause(exc, ssl.SSLCertVerificationError)
        if verify_error is None:
            raise
        reason = str(verify_error.verify_message or verify_error.reason or "verification failed")
    else:
        return conn, tls_info(ssl_object_of(conn), trusted=True, pin=pin)

    # Second handshake, only to read the leaf: report its fingerprint or honour the pin.
    try:
        conn = await open_with(inspection_context())
    except Exception:
        # The certificate is the problem the user must hear about, whatever broke here.
        raise untrusted_failure(reason, None, pin=pin) from None
    info = tls_info(ssl_object_of(conn), trusted=False, pin=pin)
    if info.pinned:
        return conn, info
    await close(conn)
    raise untrusted_failure(reason, info, pin=pin)


def plaintext_peer(exc: BaseException) -> bool:
    """True when a TLS handshake failed because the peer answered in plain text."""
    error = find_cause(exc, ssl.SSLError)
    if error is None or isinstance(error, ssl.SSLCertVerificationError):
        return False
    reason = (error.reason or "").upper()
    return reason in PLAINTEXT_PEER_REASONS or "WRONG VERSION NUMBER" in str(error).upper()
