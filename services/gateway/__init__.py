"""The edge: OpenAI-compatible HTTP API, SSE and WebSocket, publishing to Kafka."""
