"""The engine: requests in, tokens out (``LLM`` for batches, ``LLMEngine`` online)."""

from minikv.engine.llm import LLM
from minikv.engine.llm_engine import EngineStats, LLMEngine, StepInfo

__all__ = ["LLM", "EngineStats", "LLMEngine", "StepInfo"]
