"""GatewaySettings: listener, reply partitions, auth and rate limits, stream limits."""

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from services.common.settings import (
    HttpSettings,
    KafkaSettings,
    LogSettings,
    ModelsSettings,
    TelemetrySettings,
)
from services.gateway.conversations.sealing import DEV_KEYRING, Sealer
from services.gateway.limits import InputLimits
from services.tenants.settings import PLACEHOLDER_ID_SECRET, TenantStoreSettings


class GatewaySettings(
    KafkaSettings,
    HttpSettings,
    LogSettings,
    TelemetrySettings,
    ModelsSettings,
    TenantStoreSettings,
):
    """One gateway node; each node owns the reply partitions it names."""

    limits: InputLimits = Field(
        default_factory=InputLimits,
        description="Input limits (env: TOKENBUS_LIMITS__MAX_MESSAGES=100, ...)",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (the web chat is same-origin)",
        examples=[["https://chat.example.com"]],
    )
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port", examples=[8080])
    reply_partitions: list[int] = Field(
        default=[0],
        min_length=1,
        description="Partitions of llm.tokens this node reads (disjoint across nodes)",
        examples=[[0], [1, 3]],
    )
    id_secret: SecretStr = Field(
        default=SecretStr(PLACEHOLDER_ID_SECRET),
        description="Secret of the tenant tag in request ids; the same on every gateway node",
        examples=["<32+ random bytes, e.g. `openssl rand -base64 32`>"],
    )
    conversation_keys: SecretStr = Field(
        default=SecretStr(DEV_KEYRING),
        description="AES-256-GCM keyring that seals conversation text at rest: "
        "`kid:<base64 32 bytes>,...`; the first seals, every one opens (add a new key first "
        "to rotate, drop an old one once nothing sealed with it is kept)",
        examples=["k2026:<base64 of 32 random bytes>,k2025:<...>"],
    )
    key_cache_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long a node trusts a key lookup (and a tenant's limits): a revoked "
        "key or a new limit takes effect within this",
    )
    key_stale_s: float = Field(
        default=3600.0,
        ge=0,
        description="While the database is unreachable, a key checked within this keeps its last"
        " answer (0: refuse with 503 once `key_cache_s` is over)",
    )
    limits_when_database_down: Literal["open", "closed"] = Field(
        default="open",
        description="Rate limits the database cannot check: `open` admits the request uncounted"
        " (logged), `closed` refuses it with a retryable 503",
    )
    lease_s: float = Field(
        default=60.0,
        ge=3,
        description="Lease of a concurrency slot; renewed while the stream runs, so a node "
        "that dies frees its slots within this",
    )
    lease_max_s: float = Field(
        default=3600.0,
        gt=0,
        description="A stream holding its concurrency slot longer than this is taken for lost "
        "and its slot freed",
    )
    default_output_tokens: int = Field(
        default=256,
        ge=1,
        description="Tokens-per-minute estimate of the answer when a request sets no max_tokens",
    )
    subscriber_buffer: int = Field(
        default=4096, ge=16, description="Events buffered per watcher before it is dropped"
    )
    watcher_stall_s: float = Field(
        default=10.0, gt=0, description="A resuming watcher that reads nothing this long is dropped"
    )
    responses_retention_s: float = Field(
        default=86_400.0,
        gt=0,
        le=86_400.0 * 7,
        description="How long a stored Responses API response can be retrieved and resumed "
        "(no longer than llm.tokens keeps its events)",
    )
    context_budget_tokens: int = Field(
        default=8192,
        ge=256,
        description="A conversation's context budget in tokens, for tiers the tiers file "
        "gives none (context_budgets): older turns beyond it are folded into a summary",
    )
    conversation_lease_s: float = Field(
        default=900.0,
        gt=0,
        description="Longest a request holds its conversation (a second request meanwhile is a "
        "409); a node that dies frees it by then",
    )
    conversation_retention_days: float = Field(
        default=30.0, gt=0, description="Conversations idle this long are deleted"
    )
    first_event_timeout_s: float = Field(
        default=60.0, gt=0, description="Give up (503) if no worker takes the request by then"
    )
    drain_timeout_s: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM, how long open streams may run before their clients are told to"
        " resume on another node",
    )
    disconnect_grace_s: float = Field(
        default=30.0, ge=0, description="Keep generating this long for a client that left"
    )
    node_alive_s: float = Field(
        default=2.0,
        gt=0,
        description="How often the node tells the workers it is up (well under their"
        " `gateway_silence_s`, after which its clients count as gone)",
    )
    send_timeout_s: float = Field(
        default=60.0, gt=0, description="Close a client that accepts no bytes for this long"
    )
    idle_timeout_s: float = Field(
        default=120.0, gt=0, description="End a stream with an error after this long silent"
    )
    ws_heartbeat_s: float = Field(
        default=20.0, gt=0, description="Send a WebSocket `heartbeat` after this long idle"
    )
    # Rooms (docs/rooms.md)
    room_alive_s: float = Field(
        default=5.0, gt=0, description="How often a node says its room members are still there"
    )
    room_presence_timeout_s: float = Field(
        default=15.0, gt=0, description="A room member nobody says is there for this long left"
    )
    room_max_members: int = Field(default=50, ge=1, description="Members in one room")
    room_max_per_tenant: int = Field(default=100, ge=1, description="Rooms with members, a tenant")
    room_max_message_chars: int = Field(default=8000, ge=1, description="A `say` or `ask`")
    room_messages_per_s: float = Field(
        default=5.0, gt=0, description="`say`, `ask` and `typing` a second, per member"
    )
    room_message_burst: int = Field(default=10, ge=1, description="... in bursts of this many")
    room_history_items: int = Field(default=100, ge=0, description="Messages in `room_state`")
    room_replay_frames: int = Field(
        default=1000, ge=0, description="Recent frames a node keeps per room, for `since`"
    )

    @field_validator("conversation_keys", mode="before")
    @classmethod
    def _empty_keyring_is_unset(cls, value: object) -> object:
        return DEV_KEYRING if value == "" else value

    @field_validator("conversation_keys")
    @classmethod
    def _keyring_is_valid(cls, value: SecretStr) -> SecretStr:
        Sealer.from_keyring(value.get_secret_value())  # fail fast, with its own message
        return value

    @field_validator("id_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        return PLACEHOLDER_ID_SECRET if value == "" else value

    def insecure_secrets(self) -> list[str]:
        """Secrets still at their placeholder (a keys-mode node refuses to start with any,
        outside development)."""
        placeholder = self.id_secret.get_secret_value() == PLACEHOLDER_ID_SECRET
        dev_keys = self.conversation_keys.get_secret_value() == DEV_KEYRING
        return [
            *super().insecure_secrets(),
            *(["id_secret"] if placeholder else []),
            *(["conversation_keys"] if dev_keys else []),
        ]
