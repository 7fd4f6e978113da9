"""Unit tests of the benchmark package."""
