"""localmodel: the bundled local LLM (SmolLM2-135M-Instruct on llama.cpp) as an
OpenAI-compatible service, so tokenbus answers with a real model out of the box."""

from services.localmodel.app import create_app, run
from services.localmodel.settings import LocalModelSettings

__all__ = ["LocalModelSettings", "create_app", "run"]
