"""OpenAI's Responses API, rendered from the same request events as chat completions."""
