"""Tables of tenants, their API keys (hashed) and the shared rate-limit state."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)

from services.common.database import UtcDateTime

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    # NULL: no limit of that kind.
    Column("rpm", BigInteger),
    Column("tpm", BigInteger),
    Column("concurrency", BigInteger),
    Column("daily_tokens", BigInteger),
    Column("created_at", UtcDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # public: listed, revoked by
    Column(
        "tenant_id",
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("key_hash", String(64), nullable=False, unique=True),  # HMAC-SHA256(pepper, key)
    Column("hint", String(8), nullable=False),  # the key's last 4 characters, for humans
    Column("admin", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
    Index("ix_api_keys_tenant_id", "tenant_id"),
)

# Fixed windows: (tenant, "requests"|"tokens", minute start) and (tenant, "daily_tokens", day
# start), plus (tenant, "admissions", 0), which serialises a tenant's admissions. Times are
# epoch seconds (windows) and epoch milliseconds (expiry), from the gateways' clocks.
rate_counters = Table(
    "rate_counters",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant", "kind", "window_start"),
    Index("ix_rate_counters_expires_at_ms", "expires_at_ms"),
)

# One row per open stream of a tenant with a concurrency limit; its node renews the lease,
# so the slots of a node that died expire on their own.
stream_leases = Table(
    "stream_leases",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("node", String(128), nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
    Index("ix_stream_leases_tenant_expires_at_ms", "tenant", "expires_at_ms"),
    Index("ix_stream_leases_node", "node"),
)
