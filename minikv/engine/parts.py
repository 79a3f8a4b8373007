"""EngineParts: what every engine is built of, from one checked :class:`~minikv.engine.config.EngineConfig`.

The model and tokenizer, the paged :class:`~minikv.kv.KVPool` (K/V tensors
only), the prefix cache that owns the pool's blocks (``NoPrefixCache`` when
caching is off; the one ledger of used, evictable and free blocks), the
:class:`~minikv.engine.block_manager.BlockManager` over them, the engine's
seeded generator, and the chapter 01/02 plug-ins. :class:`~minikv.engine.llm.LLM`
and :class:`~minikv.engine.llm_engine.LLMEngine` both stand on one of these.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from minikv.config import ModelConfig
from minikv.engine.block_manager import BlockManager
from minikv.engine.config import EngineConfig, check_built_tier, check_cache_size, is_cache_factory
from minikv.engine.sequential import SequentialRunner
from minikv.errors import InvalidRequestError
from minikv.kv.contiguous import ContiguousKVCache
from minikv.kv.pool import KVPool, bytes_per_token
from minikv.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer, resolve
from minikv.prefix import NoPrefixCache, PrefixCache, make_prefix_cache
from minikv.prefix.offload import OffloadTier, blocks_for_gb
from minikv.sampling import SamplingParams

PrefixCacheLike = str | PrefixCache | Callable[[int, int], PrefixCache]
MiB = 1 << 20
DEFAULT_KV_CAP = {"cpu": 256 * MiB, "cuda": 4096 * MiB}
DEFAULT_KV_SEQS = 4


def default_kv_cache_memory(token_bytes: int, max_model_len: int, device: torch.device) -> int:
    """Room for ``DEFAULT_KV_SEQS`` (4) full-context sequences, at most 256 MiB on CPU (4 GiB on a GPU)."""
    cap = DEFAULT_KV_CAP.get(device.type, DEFAULT_KV_CAP["cpu"])
    return min(DEFAULT_KV_SEQS * max_model_len * token_bytes, cap)


class EngineParts:
    """The model, tokenizer, KV pool, prefix cache and block manager of one engine (options: ``LLM``'s)."""

    def __init__(self, model: str = DEFAULT_MODEL, **options: Any) -> None:
        econf = EngineConfig(model=model, **options)  # every option is checked here, before the model loads
        self.engine_config = econf
        self.paged_decode_attention = econf.paged_decode_attention
        self.attention: str = econf.attention  # "torch" or "triton", "auto" resolved
        self.cuda_graphs: bool = econf.cuda_graphs  # decode steps replay CUDA graphs
        self.plugged: bool = econf.plugged
        self.device: torch.device = econf.device
        self.dtype: torch.dtype = econf.dtype
        self.path = resolve(model)
        self.model_name = str(model)
        self.config: ModelConfig = ModelConfig.from_dir(self.path)
        self.model = load_causal_lm(self.path, dtype=self.dtype, device=self.device)
        self.tokenizer = load_tokenizer(self.path)
        self.max_model_len = econf.context_len(self.config.max_position_embeddings)
        self.eos_ids = set(self.config.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        prefix_cache = econf.prefix_cache
        self.prefix_cache = prefix_cache if isinstance(prefix_cache, str) else type(prefix_cache).__name__
        self.scale = self.config.head_dim ** -0.5
        self.generator = torch.Generator()
        if econf.seed is None:
            self.generator.seed()  # nondeterministic, as documented on EngineConfig.seed
        else:
            self.generator.manual_seed(econf.seed)

        cfg = self.config
        self.kv_layout: str = econf.kv_layout
        self.block_size = econf.block_size
        self.kv_bytes_per_token = bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, self.dtype)
        self.kv_cache_memory = econf.kv_cache_memory or default_kv_cache_memory(
            self.kv_bytes_per_token, self.max_model_len, self.device)
        self.kv_pool: KVPool | None = None
        if self.kv_layout == "paged":
            size = ({"num_blocks": econf.num_blocks} if econf.num_blocks is not None
                    else {"memory_bytes": self.kv_cache_memory})
            self.kv_pool = KVPool(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, self.block_size, **size,
                                  dtype=self.dtype, device=self.device)
            self.kv_cache_memory = self.kv_pool.memory_bytes
        self.offload_tier: OffloadTier | None = self._make_offload_tier(econf)
        options = dict(econf.prefix_cache_options or {})
        if self.offload_tier is not None:
            options["offload"] = self.offload_tier
        self.cache: PrefixCache = self._make_prefix_cache(prefix_cache, options)
        self.block_manager = BlockManager(self.cache, self.kv_pool, self.max_model_len) if self.kv_pool else None
        self.sequential: SequentialRunner | None = None
        if self.plugged:
            self.sequential = SequentialRunner(
                self.model, cfg, econf.kv_cache_cls or ContiguousKVCache, econf.decode_attention, self.scale,
                self.dtype, self.device, self.eos_ids, self.max_model_len)

    def _make_offload_tier(self, econf: EngineConfig) -> OffloadTier | None:
        """The CPU offload tier over the pool's blocks (``cpu_offload_blocks`` or ``cpu_offload_gb``), or None.

        ``cpu_offload_cls`` (checked by :class:`EngineConfig`) builds it in place of ``OffloadTier``."""
        if not econf.offload or self.kv_pool is None:
            return None
        per_block = self.kv_pool.bytes_per_block
        n = econf.cpu_offload_blocks
        if n is None:
            n = blocks_for_gb(econf.cpu_offload_gb, per_block)
            if n < 1:
                raise InvalidRequestError(
                    f"cpu_offload_gb={econf.cpu_offload_gb} holds no KV block: one block of {self.block_size} tokens "
                    f"takes {per_block} bytes here; give at least {per_block / (1 << 30):.6f} GiB, or cpu_offload_blocks")
        if econf.cpu_offload_cls is None:
            return OffloadTier(self.kv_pool, n)
        return check_built_tier(econf.cpu_offload_cls, econf.cpu_offload_cls(self.kv_pool, n))

    def _make_prefix_cache(self, kind: PrefixCacheLike, options: dict[str, Any]) -> PrefixCache:
        """The prefix cache that owns the paged pool's blocks (``NoPrefixCache`` when caching is off)."""
        if self.kv_pool is None:
            if kind != "none":
                raise InvalidRequestError("prefix caching needs the paged KV layout; drop kv_layout='contiguous' "
                                          "and the chapter 01 plug-ins, or use prefix_cache='none'")
            return NoPrefixCache(1, self.block_size)  # unused: the contiguous layout sizes its rows per batch
        n, bs = self.kv_pool.num_blocks, self.block_size
        if kind == "none":  # the one ledger of the pool's blocks, even with caching off
            return NoPrefixCache(n, bs)
        if isinstance(kind, str):
            return make_prefix_cache(kind, n, bs, **options)
        cache = kind
        if is_cache_factory(kind):  # its signature was checked by EngineConfig; a TypeError is from its body
            try:
                cache = kind(n, bs, **options)
            except TypeError as e:
                raise InvalidRequestError(f"the prefix_cache factory raised TypeError when called as "
                                          f"factory({n}, {bs}, **{options!r}): {e}; it must take "
                                          "(num_blocks, block_size, **prefix_cache_options)") from e
        check_cache_size(cache, n, bs)  # what the engine calls is there, and it owns exactly the pool's blocks
        return cache

    def encode(self, prompt: str, chat: bool = False) -> list[int]:
        """Token ids of ``prompt``; with ``chat=True`` wrapped in the model's chat template as a user turn."""
        if chat:
            return self.encode_messages([{"role": "user", "content": prompt}])
        return self.tokenizer.encode(prompt)

    def encode_messages(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of a conversation (``[{"role": ..., "content": ...}, ...]``) through the chat template,
        ready for the assistant's turn."""
        if not self.tokenizer.chat_template:
            raise InvalidRequestError(f"model {self.model_name!r} has no chat template; call without chat")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise InvalidRequestError("a conversation is a non-empty list of {'role': str, 'content': str} "
                                      "dicts, e.g. [{'role': 'user', 'content': 'Hi'}]")
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # the template refuses the conversation (roles out of order, ...)
            raise InvalidRequestError(f"the chat template refused these messages: {e}") from None
        return self.tokenizer.encode(text, add_special_tokens=False)

    def generator_for(self, params: SamplingParams) -> torch.Generator:
        """The request's own seeded generator, or the engine's when it gives no seed."""
        return self.generator if params.seed is None else torch.Generator().manual_seed(params.seed)
