"""analytics: consumes `llm.usage` into SQL and serves usage aggregates (`GET /v1/usage`)."""
