"""minikv: learn how LLM inference engines reuse the KV cache, and run a small real engine.

>>> from minikv import LLM, SamplingParams
>>> llm = LLM("tiny-llama")
>>> out = llm.generate("hello", SamplingParams(max_tokens=4, temperature=0.0))[0]
>>> len(out.token_ids)
4
"""

from minikv.engine import LLM, LLMEngine
from minikv.errors import MinikvError
from minikv.outputs import RequestMetrics, RequestOutput
from minikv.sampling import SamplingParams

__version__ = "0.1.0"
__all__ = ["LLM", "LLMEngine", "MinikvError", "RequestMetrics", "RequestOutput", "SamplingParams", "__version__"]
