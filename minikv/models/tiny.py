"""Deterministic random-weight models for fast tests: ``tiny-llama``, ``tiny-qwen2`` and variants.

A name may carry overrides after a colon, e.g.
``tiny-llama:heads=6,kv_heads=2,head_dim=20,hidden=72,layers=3,tie=1``.
The model is written once as an ordinary Hugging Face directory (config,
safetensors, tokenizer), so minikv and transformers load the same files.

The tokenizer is byte-level: 256 byte tokens plus ChatML specials, so any
text round-trips and the chat template works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from minikv.errors import ModelNotFoundError

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# name -> (short key, default); short keys are what a variant name may override
_KEYS: dict[str, str] = {
    "hidden": "hidden_size",
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "inter": "intermediate_size",
    "vocab": "vocab_size",
    "tie": "tie_word_embeddings",
    "theta": "rope_theta",
    "max_pos": "max_position_embeddings",
    "seed": "seed",
    "std": "initializer_range",
    "bias": "attention_bias",
    "scaling": "rope_scaling",
}

BASE: dict[str, dict[str, Any]] = {
    "tiny-llama": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, intermediate_size=128, vocab_size=320,
                       tie_word_embeddings=False, rope_theta=10000.0, max_position_embeddings=1024, seed=0,
                       initializer_range=0.1),
    "tiny-qwen2": dict(model_type="qwen2", hidden_size=96, num_hidden_layers=2, num_attention_heads=6,
                       num_key_value_heads=2, head_dim=16, intermediate_size=160, vocab_size=300,
                       tie_word_embeddings=True, rope_theta=1000000.0, max_position_embeddings=1024, seed=1,
                       initializer_range=0.1),
}


def is_tiny_name(name: str) -> bool:
    return name.split(":", 1)[0] in BASE


def parse_tiny_name(name: str) -> dict[str, Any]:
    """``"tiny-llama:heads=6,kv_heads=3"`` -> the full settings dict."""
    base, _, rest = name.partition(":")
    settings = dict(BASE[base])
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in _KEYS:
            raise ModelNotFoundError(
                f"bad tiny-model override {item!r} in {name!r}; use key=value with keys {', '.join(_KEYS)}"
            )
        field = _KEYS[key]
        if field == "rope_scaling":  # "linear2" or "llama3x8"
            settings[field] = _parse_scaling(value, settings)
        elif field in ("tie_word_embeddings", "attention_bias"):
            settings[field] = value.lower() in ("1", "true", "yes")
        elif field in ("rope_theta", "initializer_range"):
            settings[field] = float(value)
        else:
            settings[field] = int(value)
    return settings


def _parse_scaling(value: str, settings: dict[str, Any]) -> dict[str, Any]:
    if value.startswith("linear"):
        return {"rope_type": "linear", "factor": float(value[len("linear"):] or 2)}
    if value.startswith("llama3"):
        return {"rope_type": "llama3", "factor": float(value[len("llama3x"):] or 8), "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    raise ModelNotFoundError(f"unknown rope scaling {value!r}; use linearF or llama3xF")


def build_tokenizer(vocab_size: int):
    """A byte-level fast tokenizer (256 bytes + ChatML specials) as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    assert len(vocab) + len(SPECIAL_TOKENS) <= vocab_size, "tiny vocab must hold 256 bytes + specials"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def write_tiny_model(name: str, path: Path) -> None:
    """Create the random model ``name`` as a Hugging Face directory at ``path``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = parse_tiny_name(name)
    seed = settings.pop("seed")
    model_type = settings.pop("model_type")
    tokenizer = build_tokenizer(settings["vocab_size"])
    ids = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
    config = AutoConfig.for_model(model_type, bos_token_id=ids[0], eos_token_id=ids[1], pad_token_id=ids[2], **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "minikv.json").write_text(json.dumps({"name": name, "kind": "tiny", "seed": seed}))
