"""Chapter 01's path: one sequence at a time through a contiguous cache class and decode function you plug in.

``LLM(kv_cache_cls=..., decode_attention=...)`` takes this road, so a learner's
own cache or attention function serves real requests. It is sequential on
purpose: the learner's pieces see one sequence, as in the chapter.
"""

from __future__ import annotations

import torch

from minikv.attention.contiguous import ContiguousStep, DecodeFn
from minikv.config import ModelConfig
from minikv.engine.sampler import sample
from minikv.engine.sequence import Sequence
from minikv.models.llama import CausalLM


class SequentialRunner:
    """Prefills one prompt, then decodes one token at a time into a fresh ``kv_cache_cls`` instance."""

    def __init__(self, model: CausalLM, config: ModelConfig, kv_cache_cls: type, decode_fn: DecodeFn | None,
                 scale: float, dtype: torch.dtype, device: torch.device, eos_ids: set[int], max_model_len: int) -> None:
        self.model, self.config, self.kv_cache_cls, self.decode_fn = model, config, kv_cache_cls, decode_fn
        self.scale, self.dtype, self.device = scale, dtype, device
        self.eos_ids, self.max_model_len = eos_ids, max_model_len

    @torch.inference_mode()
    def run(self, seq: Sequence) -> None:
        cfg = self.config
        cache = self.kv_cache_cls(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, seq.max_length(self.max_model_len),
                                  dtype=self.dtype, device=self.device)
        new = seq.prompt_token_ids
        while not seq.finished:
            step = ContiguousStep([cache], [len(new)], self.scale, self.decode_fn)
            ids = torch.tensor(new, dtype=torch.long, device=self.device)
            positions = torch.arange(len(seq) - len(new), len(seq), device=self.device)
            logits = self.model(ids, positions, step, torch.tensor([len(new) - 1], device=self.device))  # [1, vocab]
            seq.num_computed_tokens = len(seq)
            seq.append(sample(logits, [seq])[0], self.eos_ids, self.max_model_len)
            new = seq.output_token_ids[-1:]
