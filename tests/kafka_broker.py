"""The test session's Kafka broker: `infra.kafka.find.session_broker`, shipped with infra."""

from infra.kafka.find import session_broker

__all__ = ["session_broker"]
