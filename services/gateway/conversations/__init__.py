"""OpenAI's Conversations API: server-side memory, encrypted at rest, with a summarising window."""
