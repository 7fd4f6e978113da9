"""Unit tests of the analytics service: query parsing, aggregation, consumer, report."""
