"""API keys: random tokens shown once, stored as HMAC-SHA256(pepper, key)."""

import hashlib
import hmac
import re
import secrets

KEY_PREFIX = "tb-"
_KEY = re.compile(r"tb-[A-Za-z0-9_-]{32}")


def new_key() -> str:
    """`tb-` and 32 URL-safe characters: 192 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def new_key_id() -> str:
    """The key's public name, for listing and revoking (it reveals nothing of the key)."""
    return "key_" + secrets.token_hex(6)


def looks_like_key(key: str) -> bool:
    """Cheap shape check, so garbage never costs a database lookup."""
    return _KEY.fullmatch(key) is not None


def key_hash(key: str, pepper: bytes) -> str:
    """What the database stores and looks keys up by.

    A fast keyed hash is enough: the keys are 192-bit random tokens, so there is nothing to
    brute-force, unlike a password (bcrypt/argon2 would only make every request slower). The
    pepper, a server secret outside the database, makes a stolen table useless on its own.
    """
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()
