"""Public face of the connection probes: import from here, not from the modules behind it."""

from mail.endpoint import Endpoint, Login, ProbeSettings, SecretLike
from mail.imap_probe import probe_imap
from mail.network import NetworkPolicy
from mail.presets import Security
from mail.results import ProbeCode, ProbeResult, TlsInfo
from mail.smtp_probe import probe_smtp
from mail.tls import fingerprint_sha256, normalize_fingerprint

__all__ = [
    "Endpoint",
    "Login",
    "NetworkPolicy",
    "ProbeCode",
    "ProbeResult",
    "ProbeSettings",
    "SecretLike",
    "Security",
    "TlsInfo",
    "fingerprint_sha256",
    "normalize_fingerprint",
    "probe_imap",
    "probe_smtp",
]
