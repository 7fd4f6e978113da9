"""Small utilities every service shares: settings mixins, logging, telemetry, health, Kafka."""
