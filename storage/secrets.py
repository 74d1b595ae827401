"""Secrets at rest: AES-256-GCM under a key ring, bound to the row and column they belong to.

Envelope layout (bytes): ``b"v1" | len(key_id) (1 byte) | key_id | nonce (12) | ciphertext+tag``.
The associated data names the table, column and row id, so a ciphertext copied into another
row or column fails authentication instead of decrypting to someone else's password.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"v1"
_NONCE_BYTES = 12


class Secret:
    """A string that does not show itself: ``repr``/``str`` are redacted; ``reveal()`` at use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __bool__(self) -> bool:
        return bool(self._value)


class DecryptionError(Exception):
    """The envelope is corrupt, bound to another row/column, or its key is not in the ring."""


class KeyRingError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Envelope:
    key_id: str
    nonce: bytes
    ciphertext: bytes


def associated_data(table: str, column: str, row_id: uuid.UUID) -> bytes:
    return f"inboxd:{table}:{column}:{row_id}".encode()


def _pack(env: Envelope) -> bytes:
    kid = env.key_id.encode()
    return _VERSION + bytes([len(kid)]) + kid + env.nonce + env.ciphertext


def _unpack(blob: bytes) -> Envelope:
    if len(blob) < 3 or blob[:2] != _VERSION:
        raise DecryptionError("unknown secret envelope version")
    kid_len = blob[2]
    kid_end = 3 + kid_len
    nonce_end = kid_end + _NONCE_BYTES
    if len(blob) < nonce_end + 16:
        raise DecryptionError("truncated secret envelope")
    return Envelope(blob[3:kid_end].decode(), blob[kid_end:nonce_end], blob[nonce_end:])


def key_id_of(blob: bytes) -> str:
    return _unpack(blob).key_id


class KeyRing:
    """Named AES-256 keys. The newest (last given) key encrypts; every key decrypts."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyRingError("the key ring needs at least one key")
        self._ciphers: dict[str, AESGCM] = {}
        self._keys: dict[str, bytes] = {}
        for key_id, key in keys:
            if not key_id or len(key_id.encode()) > 255 or ":" in key_id or "," in key_id:
                raise KeyRingError(f"invalid key id {key_id!r}")
            if len(key) != 32:
                raise KeyRingError(f"key {key_id!r} must be 32 bytes (AES-256), got {len(key)}")
            self._ciphers[key_id] = AESGCM(key)
            self._keys[key_id] = key
        self.primary_key_id = keys[-1][0]

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={list(self._ciphers)!r}, primary={self.primary_key_id!r})"

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """Parse ``kid:base64key[,kid:base64key...]`` (whitespace and newlines allowed)."""
        keys: list[tuple[str, bytes]] = []
        for raw in spec.replace("\n", ",").split(","):
            item = raw.strip()
            if not item:
                continue
            key_id, sep, encoded = item.partition(":")
            if not sep:
                raise KeyRingError("each key must be written as key_id:base64key")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except ValueError as exc:
                raise KeyRingError(f"key {key_id.strip()!r} is not valid base64") from exc
            keys.append((key_id.strip(), key))
        return cls(keys)

    @staticmethod
    def generate_spec(key_id: str | None = None) -> str:
        key_id = key_id or f"k{secrets.token_hex(4)}"
        return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"

    def encrypt(self, plaintext: str, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        ct = self._ciphers[self.primary_key_id].encrypt(nonce, plaintext.encode(), aad)
        return _pack(Envelope(self.primary_key_id, nonce, ct))

    def decrypt(self, blob: bytes, aad: bytes) -> Secret:
        env = _unpack(blob)
        cipher = self._ciphers.get(env.key_id)
        if cipher is None:
            raise DecryptionError(f"secret was encrypted under key {env.key_id!r}, not in the ring")
        try:
            return Secret(cipher.decrypt(env.nonce, env.ciphertext, aad).decode())
        except InvalidTag as exc:
            raise DecryptionError(
                "secret does not belong to this row/column or was altered"
            ) from exc

    def derive(self, purpose: str) -> list[bytes]:
        """A 32-byte key per ring key for ``purpose`` (HKDF-SHA256), the primary's first: a
        separate key for each use, never an encryption key itself."""
        ordered = [self.primary_key_id, *(k for k in self._keys if k != self.primary_key_id)]
        return [
            HKDF(hashes.SHA256(), 32, salt=None, info=f"inboxd:{purpose}".encode()).derive(
                self._keys[key_id]
            )
            for key_id in ordered
        ]

    def needs_rotation(self, blob: bytes) -> bool:
        return _unpack(blob).key_id != self.primary_key_id
