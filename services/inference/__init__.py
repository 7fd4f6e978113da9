"""Inference workers: take chat requests from Kafka, call a model backend, stream token events."""
