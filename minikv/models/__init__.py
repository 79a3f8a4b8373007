"""Model loading: names to checkpoint directories, checkpoints to minikv's own forward pass."""

from minikv.models.llama import CausalLM
from minikv.models.registry import DEFAULT_MODEL, cached_models, known_names, resolve
from minikv.models.weights import load_causal_lm

__all__ = ["CausalLM", "DEFAULT_MODEL", "cached_models", "known_names", "load_causal_lm", "resolve", "load_tokenizer"]


def load_tokenizer(path):
    """The checkpoint's tokenizer (a transformers fast tokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
