"""Model names, checkpoint directories and config parsing."""

from __future__ import annotations

import json

import pytest

from minikv.config import ModelConfig
from minikv.errors import ModelNotFoundError, UnsupportedModelError
from minikv.models import resolve
from minikv.models.rope import inv_frequencies
from minikv.models.tiny import parse_tiny_name


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        resolve("no-such-model")


def test_directory_without_config(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve(str(tmp_path))


def test_unsupported_architecture(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        ModelConfig.from_dir(resolve(str(tmp_path)))


def test_unsupported_rope_scaling() -> None:
    cfg = dict(model_type="llama", vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
               num_attention_heads=2, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(UnsupportedModelError, match="yarn"):
        ModelConfig.from_dict(cfg)


@pytest.mark.parametrize("act", ["gelu", "relu", "gelu_pytorch_tanh"])
def test_unsupported_activation_is_refused(act: str) -> None:
    # LlamaConfig accepts any hidden_act; minikv's MLP is SiLU-gated, so another one would compute a different model
    cfg = dict(model_type="llama", vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
               num_attention_heads=2, hidden_act=act)
    with pytest.raises(UnsupportedModelError, match=f"hidden_act '{act}'"):
        ModelConfig.from_dict(cfg)


@pytest.mark.parametrize("act", ["silu", "swish", None])
def test_silu_activation_is_accepted(act) -> None:
    cfg = dict(model_type="qwen2", vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
               num_attention_heads=2)
    if act is not None:
        cfg["hidden_act"] = act
    assert ModelConfig.from_dict(cfg).num_heads == 2


def test_bad_tiny_override() -> None:
    with pytest.raises(ModelNotFoundError, match="heads"):
        parse_tiny_name("tiny-llama:nonsense=3")


def test_config_reads_v4_and_v5_rope_fields() -> None:
    base = dict(model_type="llama", vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                num_attention_heads=2)
    v4 = ModelConfig.from_dict({**base, "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}})
    v5 = ModelConfig.from_dict({**base, "rope_parameters": {"rope_theta": 5e5, "rope_type": "linear", "factor": 2.0}})
    assert v4.rope_theta == v5.rope_theta == 5e5
    assert v4.rope_scaling["rope_type"] == v5.rope_scaling["rope_type"] == "linear"
    assert v4.num_kv_heads == 2 and v4.head_dim == 4


def test_qwen2_has_qkv_bias_only() -> None:
    cfg = ModelConfig.from_dict(dict(model_type="qwen2", vocab_size=10, hidden_size=8, intermediate_size=8,
                                     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    assert cfg.qkv_bias and not cfg.o_bias


def test_llama3_scaling_keeps_high_frequencies() -> None:
    plain = inv_frequencies(64, 500000.0)
    scaled = inv_frequencies(64, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    assert scaled[0] == plain[0]  # fastest rotation untouched
    assert scaled[-1] == pytest.approx(plain[-1] / 8)  # slowest divided by the factor


def test_tiny_model_is_deterministic(tmp_path, monkeypatch) -> None:
    from safetensors.torch import load_file

    monkeypatch.setenv("MINIKV_CACHE", str(tmp_path / "a"))
    a = load_file(resolve("tiny-llama:layers=1") / "model.safetensors")
    monkeypatch.setenv("MINIKV_CACHE", str(tmp_path / "b"))
    b = load_file(resolve("tiny-llama:layers=1") / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_tiny_tokenizer_round_trips_bytes() -> None:
    from minikv.models.tiny import build_tokenizer

    tok = build_tokenizer(300)
    text = "naïve café – 東京 🙂"
    assert tok.decode(tok.encode(text)) == text
