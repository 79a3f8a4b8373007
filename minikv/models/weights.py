"""Build a :class:`CausalLM` and fill it with a checkpoint's safetensors, by name."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from minikv.config import ModelConfig
from minikv.errors import ModelNotFoundError, UnsupportedModelError
from minikv.models.llama import CausalLM


def _shard_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        with open(index) as f:
            return sorted({path / name for name in json.load(f)["weight_map"].values()})
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelNotFoundError(f"no *.safetensors weights in {path}; minikv needs a checkpoint saved with safetensors")
    return files


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> CausalLM:
    """Create the model without initialising it (meta device), then assign the checkpoint's tensors."""
    path = Path(path)
    cfg = ModelConfig.from_dir(path)
    with torch.device("meta"):
        model = CausalLM(cfg)
    state: dict[str, torch.Tensor] = {}
    for file in _shard_files(path):
        state.update(load_file(file, device=str(device)))
    state = {k: v for k, v in state.items() if "rotary_emb" not in k}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    expected = {k for k in model.state_dict() if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
    missing, unexpected = expected - state.keys(), state.keys() - expected
    if missing or unexpected:
        raise UnsupportedModelError(
            f"checkpoint {path} does not match a {cfg.model_type} model: "
            f"missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}"
        )
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()
