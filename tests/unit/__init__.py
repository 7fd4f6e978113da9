"""Unit tests: one service or library at a time, in-process, without Kafka."""
