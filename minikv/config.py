"""ModelConfig: the handful of numbers minikv needs from a Hugging Face config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minikv.errors import UnsupportedModelError

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")
SUPPORTED_ACTIVATIONS = ("silu", "swish")  # transformers' names for the SwiGLU gate minikv computes


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and constants of a Llama-family decoder (Llama, Qwen2).

    ``qkv_bias``: q/k/v projections carry a bias (Qwen2 always, Llama when
    ``attention_bias``); ``o_bias``: the output projection does (Llama's
    ``attention_bias`` only). ``rope_scaling`` is ``None`` or a dict with a
    ``rope_type`` of ``"linear"`` or ``"llama3"``.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    rope_scaling: dict[str, Any] | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token costs in fp32: 2 (K and V) x layers x KV heads x head dim x 4."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 4

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "ModelConfig":
        """Read a transformers config dict (v4 ``rope_theta``/``rope_scaling`` or v5 ``rope_parameters``)."""
        model_type = cfg.get("model_type", "?")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModelError(
                f"model_type {model_type!r} is not supported; minikv runs the Llama family: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if model_type == "qwen2" and cfg.get("use_sliding_window", False):
            raise UnsupportedModelError("Qwen2 with use_sliding_window=true is not supported; minikv attends over the full context")
        act = cfg.get("hidden_act", "silu")
        if act not in SUPPORTED_ACTIVATIONS:
            raise UnsupportedModelError(
                f"hidden_act {act!r} is not supported; minikv's MLP is SwiGLU with SiLU "
                f"(hidden_act {' or '.join(map(repr, SUPPORTED_ACTIVATIONS))}), so it would compute another model"
            )
        num_heads = cfg["num_attention_heads"]
        hidden = cfg["hidden_size"]
        head_dim = cfg.get("head_dim") or hidden // num_heads
        rope = dict(cfg.get("rope_parameters") or {})
        theta = rope.pop("rope_theta", None) or cfg.get("rope_theta") or 10000.0
        scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        if scaling is not None:
            scaling = dict(scaling)
            scaling.setdefault("rope_type", scaling.get("type", "default"))
            if scaling["rope_type"] == "default":
                scaling = None
            elif scaling["rope_type"] not in ("linear", "llama3"):
                raise UnsupportedModelError(
                    f"rope scaling {scaling['rope_type']!r} is not supported (minikv knows default, linear and llama3)"
                )
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        attention_bias = bool(cfg.get("attention_bias", False))
        return cls(
            model_type=model_type,
            vocab_size=cfg["vocab_size"],
            hidden_size=hidden,
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=cfg.get("num_key_value_heads") or num_heads,
            head_dim=head_dim,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=(model_type == "qwen2") or attention_bias,
            o_bias=(model_type == "llama") and attention_bias,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            rope_scaling=scaling,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> "ModelConfig":
        """Read ``config.json`` of a checkpoint directory."""
        with open(Path(path) / "config.json") as f:
            return cls.from_dict(json.load(f))
