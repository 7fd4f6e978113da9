"""Integration tests against real processes (a Kafka broker run from its jars)."""
