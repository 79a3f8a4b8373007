"""The engine: requests in, tokens out."""

from minikv.engine.llm import LLM

__all__ = ["LLM"]
