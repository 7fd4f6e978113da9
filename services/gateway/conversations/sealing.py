"""Sealer: AES-256-GCM for what the database must not reveal, with key rotation.

A keyring is text: `"kid1:<base64 of 32 bytes>,kid2:<...>"`. The first key is the current one,
which seals; every listed key opens. To rotate, put a new key first and keep the old ones
listed until nothing sealed with them remains (conversations are purged when idle).

A sealed blob is binary:

    kid length (1 byte, 1..32) | kid (ASCII) | nonce (12 random bytes) | ciphertext + 16-byte tag

The associated data (AAD) is not stored: the caller gives it again to open, so it binds a blob
to its row (e.g. `conv_.../msg_...`) and a blob copied into another row does not open. Neither
does one with a flipped bit, nor one sealed under a key that is not in the ring: `SealError`.
"""

import base64
import binascii
import json
import os
import re
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# For development and tests only: anyone can read this key. Production sets its own keyring.
# The key is b"tokenbus-dev-key-not-for-prod!!!".
DEV_KEYRING = "dev:dG9rZW5idXMtZGV2LWtleS1ub3QtZm9yLXByb2QhISE="

NONCE_BYTES = 12
KEY_BYTES = 32
_TAG_BYTES = 16
_KID = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class SealError(Exception):
    """A blob that does not open: unknown key id, wrong AAD, truncated or tampered with."""


class Sealer:
    """Seals with the ring's current key; opens with whichever key a blob names."""

    __slots__ = ("_current", "_keys")

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        ring: dict[str, AESGCM] = {}
        for kid, key in keys:
            if not _KID.fullmatch(kid):
                raise ValueError(f"key id {kid!r}: use 1-32 of A-Z a-z 0-9 _ . -")
            if kid in ring:
                raise ValueError(f"key id {kid!r} is listed twice")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {kid!r} has {len(key)} bytes; AES-256 needs {KEY_BYTES}")
            ring[kid] = AESGCM(key)
        self._keys = ring
        self._current = keys[0][0]

    @classmethod
    def from_keyring(cls, text: str) -> "Sealer":
        """Parse `"kid1:<base64 key>,kid2:<base64 key>"`; ValueError names what is wrong (never
        the key material)."""
        keys: list[tuple[str, bytes]] = []
        for number, entry in enumerate(text.split(","), start=1):
            kid, colon, encoded = entry.strip().partition(":")
            if not colon or not kid or not encoded.strip():
                raise ValueError(
                    f"keyring entry {number} is not `kid:<base64 of 32 bytes>` "
                    "(entries are separated by commas)"
                )
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise ValueError(
                    f"keyring entry {number} ({kid!r}): the key is not base64"
                ) from None
            keys.append((kid.strip(), key))
        return cls(keys)

    @property
    def current_kid(self) -> str:
        """The id of the key that seals."""
        return self._current

    @property
    def kids(self) -> list[str]:
        """Every key id that opens, the current one first."""
        return list(self._keys)

    def __repr__(self) -> str:
        return f"Sealer(current={self._current!r}, kids={self.kids!r})"  # never the keys

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        kid = self._current.encode("ascii")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self._current].encrypt(nonce, plaintext, aad)
        return bytes([len(kid)]) + kid + nonce + sealed

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        if not sealed:
            raise SealError("empty blob")
        end = 1 + sealed[0]
        if len(sealed) < end + NONCE_BYTES + _TAG_BYTES:
            raise SealError("blob too short")
        kid = sealed[1:end].decode("ascii", errors="replace")
        key = self._keys.get(kid)
        if key is None:
            raise SealError(f"blob sealed with key {kid!r}, which is not in the keyring")
        nonce = sealed[end : end + NONCE_BYTES]
        try:
            return key.decrypt(nonce, sealed[end + NONCE_BYTES :], aad)
        except InvalidTag:
            raise SealError(
                f"blob does not open with key {kid!r}: tampered with, or not this row's"
            ) from None

    def seal_json(self, obj: Any, aad: bytes) -> bytes:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return self.seal(text.encode(), aad)

    def open_json(self, blob: bytes, aad: bytes) -> Any:
        return json.loads(self.open(blob, aad))
