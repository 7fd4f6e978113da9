"""Settings of the tenant store: the database, the key pepper, and how strict the edge is."""

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from services.common.settings import DatabaseSettings

# Development defaults; a node that authenticates by key refuses them outside development.
PLACEHOLDER_PEPPER = "insecure-development-pepper"
PLACEHOLDER_ID_SECRET = "insecure-development-id-secret"


class TenantStoreSettings(DatabaseSettings):
    """Where keys and limits live and how keys are hashed (gateway, analytics and CLI)."""

    auth_mode: Literal["keys", "open"] = Field(
        default="keys",
        description="keys: every call needs `Authorization: Bearer <key>` (keys from "
        "`tokenbus keys create`); open: no keys, everyone is tenant 'dev', no limits (tests)",
        examples=["keys", "open"],
    )
    key_pepper: SecretStr = Field(
        default=SecretStr(PLACEHOLDER_PEPPER),
        description="Server secret of the key hashes (HMAC-SHA256); the same on every node "
        "and for `tokenbus keys`",
        examples=["<32+ random bytes, e.g. `openssl rand -base64 32`>"],
    )
    environment: Literal["development", "production"] = Field(
        default="production",
        description="development accepts the placeholder secrets (`tokenbus dev` sets it)",
        examples=["production", "development"],
    )

    @field_validator("key_pepper", mode="before")
    @classmethod
    def _empty_pepper_is_unset(cls, value: object) -> object:
        # compose passes `${VAR:-}`: empty means "not set", never "the secret ''".
        return PLACEHOLDER_PEPPER if value == "" else value

    def insecure_secrets(self) -> list[str]:
        """Names of secrets still at their placeholder (empty list: fine)."""
        return ["key_pepper"] if self.key_pepper.get_secret_value() == PLACEHOLDER_PEPPER else []
