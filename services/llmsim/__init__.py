"""llmsim: an OpenAI-compatible model simulator with deterministic answers at a set pace."""

from services.llmsim.app import create_app
from services.llmsim.settings import LlmsimSettings
from services.llmsim.text import answer_tokens

__all__ = ["LlmsimSettings", "answer_tokens", "create_app"]
