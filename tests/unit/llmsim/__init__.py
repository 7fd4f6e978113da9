"""Tests of llmsim, the OpenAI-compatible model simulator."""
