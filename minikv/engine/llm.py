"""LLM: the user-facing engine (vLLM's names): ``LLM(model).generate(prompts, SamplingParams(...))``."""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence as Seq

import torch

from minikv.attention.contiguous import ContiguousStep, DecodeFn
from minikv.config import ModelConfig
from minikv.engine.sampler import sample
from minikv.engine.sequence import Sequence
from minikv.errors import InvalidRequestError
from minikv.kv.contiguous import ContiguousKVCache
from minikv.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer, resolve
from minikv.outputs import RequestOutput
from minikv.sampling import SamplingParams

PromptLike = str | dict[str, Any]

PREFIX_CACHES = ("none",)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class LLM:
    """A small inference engine over one Llama-family model.

    ``model``: a name (``"smollm2-135m"``, ``"tiny-llama"``...), a checkpoint
    directory or a hub id (see :func:`minikv.models.resolve`).
    ``prefix_cache``: ``"none"`` for now; later chapters add ``"hash"`` and ``"radix"``.
    ``kv_cache_cls`` / ``decode_attention``: swap in your own contiguous
    cache class or single-token attention function (chapter 01's exercises).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        prefix_cache: str = "none",
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        seed: int = 0,
        max_model_len: int | None = None,
        kv_cache_cls: type = ContiguousKVCache,
        decode_attention: DecodeFn | None = None,
    ) -> None:
        if prefix_cache not in PREFIX_CACHES:
            raise InvalidRequestError(
                f"prefix_cache={prefix_cache!r} is not available in this version; choose from {PREFIX_CACHES}"
            )
        self.device = torch.device(device) if device is not None else _default_device()
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.path = resolve(model)
        self.model_name = str(model)
        self.config: ModelConfig = ModelConfig.from_dir(self.path)
        self.model = load_causal_lm(self.path, dtype=self.dtype, device=self.device)
        self.tokenizer = load_tokenizer(self.path)
        self.max_model_len = min(max_model_len or self.config.max_position_embeddings, self.config.max_position_embeddings)
        self.eos_ids = set(self.config.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self.prefix_cache = prefix_cache
        self.kv_cache_cls = kv_cache_cls
        self.decode_attention = decode_attention
        self.scale = self.config.head_dim ** -0.5
        self._generator = torch.Generator().manual_seed(seed)
        self._ids = itertools.count()

    # ---- input handling -------------------------------------------------------------------
    def encode(self, prompt: str, chat: bool = False) -> list[int]:
        """Token ids of ``prompt``; with ``chat=True`` wrapped in the model's chat template as a user turn."""
        if chat:
            if not self.tokenizer.chat_template:
                raise InvalidRequestError(f"model {self.model_name!r} has no chat template; call without chat")
            prompt = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        return self.tokenizer.encode(prompt)

    def _make_sequence(self, prompt: PromptLike, params: SamplingParams, chat: bool) -> Sequence:
        if isinstance(prompt, dict):
            ids = [int(t) for t in prompt.get("prompt_token_ids", [])]
            text = prompt.get("prompt")
        elif isinstance(prompt, str):
            if not prompt.strip():
                raise InvalidRequestError("the prompt is empty; give at least one non-blank character")
            ids, text = self.encode(prompt, chat), prompt
        else:
            raise InvalidRequestError(
                f"a prompt must be a string or {{'prompt_token_ids': [...]}}, got {type(prompt).__name__}"
            )
        if not ids:
            raise InvalidRequestError("the prompt has no tokens; give at least one token")
        bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
        if bad:
            raise InvalidRequestError(
                f"token id {bad[0]} is outside the vocabulary (0..{self.config.vocab_size - 1}); "
                "encode prompts with this model's tokenizer"
            )
        if len(ids) >= self.max_model_len:
            raise InvalidRequestError(
                f"the prompt has {len(ids)} tokens but the model's context is {self.max_model_len}; "
                f"shorten it to at most {self.max_model_len - 1} tokens"
            )
        generator = self._generator if params.seed is None else torch.Generator().manual_seed(params.seed)
        return Sequence(next(self._ids), text, ids, params, generator=generator)

    # ---- generation -------------------------------------------------------------------------
    def generate(
        self,
        prompts: PromptLike | Iterable[PromptLike],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        chat: bool = False,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Generate a completion for each prompt, in order.

        ``prompts``: a string, ``{"prompt_token_ids": [...]}``, or a list of them.
        ``sampling_params``: one for all prompts or one per prompt.
        All prompts are checked before any work starts.
        """
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = list(sampling_params) if isinstance(sampling_params, Seq) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise InvalidRequestError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
        seqs = [self._make_sequence(p, sp, chat) for p, sp in zip(prompts, params)]
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(seqs), desc="generating", unit="req")
        with torch.inference_mode():
            for seq in seqs:
                self._run_contiguous(seq)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return [self._output(s) for s in seqs]

    def _run_contiguous(self, seq: Sequence) -> None:
        """Prefill the prompt, then decode one token at a time into a contiguous cache."""
        cfg = self.config
        max_len = min(len(seq) + seq.params.max_tokens, self.max_model_len)
        cache = self.kv_cache_cls(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, max_len, dtype=self.dtype, device=self.device)
        new = seq.prompt_token_ids
        while True:
            step = ContiguousStep([cache], [len(new)], self.scale, self.decode_attention)
            ids = torch.tensor(new, dtype=torch.long, device=self.device)
            positions = torch.arange(len(seq) - len(new), len(seq), device=self.device)
            logits = self.model(ids, positions, step, torch.tensor([len(new) - 1], device=self.device))
            seq.append(sample(logits, [seq])[0], self.eos_ids)
            if not seq.finished and len(seq) >= self.max_model_len:
                seq.finish_reason = "length"
                seq.metrics.num_generated_tokens = len(seq.output_token_ids)
            if seq.finished:
                return
            new = seq.output_token_ids[-1:]

    def _output(self, seq: Sequence) -> RequestOutput:
        return RequestOutput(
            request_id=seq.request_id,
            prompt=seq.prompt,
            prompt_token_ids=seq.prompt_token_ids,
            text=self.tokenizer.decode(seq.output_token_ids, skip_special_tokens=True),
            token_ids=list(seq.output_token_ids),
            finish_reason=seq.finish_reason or "length",
            num_cached_tokens=seq.num_cached_tokens,
            metrics=seq.metrics,
        )

    def chat(self, message: str, sampling_params: SamplingParams | None = None) -> RequestOutput:
        """One user message through the chat template; returns its output."""
        return self.generate(message, sampling_params, chat=True)[0]
