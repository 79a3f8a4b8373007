"""LLM: the user-facing engine (vLLM's names): ``LLM(model).generate(prompts, SamplingParams(...))``.

A thin facade over the engine's one road: prompts become :class:`Sequence` s,
the :class:`Scheduler` admits them into the KV cache (blocks of the paged
:class:`KVPool` through the :class:`BlockManager`, whose one ledger is the
prefix cache; or rows of a padded cache through a :class:`RowManager`), the
:class:`ModelRunner` runs each batched step and samples.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Literal, Sequence as Seq

import torch

from minikv.attention.contiguous import DecodeFn
from minikv.attention.paged import PagedDecodeFn
from minikv.config import ModelConfig
from minikv.engine.block_manager import BlockManager
from minikv.engine.config import EngineConfig, check_cache_size, is_cache_factory
from minikv.engine.inputs import PromptLike, as_params_list, as_prompt_list, check_prompt_ids, parse_prompt, prompt_name
from minikv.engine.model_runner import ModelRunner
from minikv.engine.row_manager import RowManager
from minikv.engine.scheduler import Scheduler
from minikv.engine.sequence import Sequence
from minikv.engine.sequential import SequentialRunner
from minikv.errors import InvalidRequestError, KVCacheFull
from minikv.kv.contiguous import ContiguousKVCache
from minikv.kv.padded import PaddedKVCache
from minikv.kv.pool import KVPool, bytes_per_token
from minikv.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer, resolve
from minikv.outputs import RequestOutput
from minikv.prefix import CacheStats, NoPrefixCache, PrefixCache, make_prefix_cache
from minikv.sampling import SamplingParams
from minikv.validation import check_bool

PrefixCacheLike = str | PrefixCache | Callable[[int, int], PrefixCache]
MiB = 1 << 20
DEFAULT_KV_CAP = {"cpu": 256 * MiB, "cuda": 4096 * MiB}
DEFAULT_KV_SEQS = 4


def default_kv_cache_memory(token_bytes: int, max_model_len: int, device: torch.device) -> int:
    """Room for ``DEFAULT_KV_SEQS`` (4) full-context sequences, at most 256 MiB on CPU (4 GiB on a GPU)."""
    cap = DEFAULT_KV_CAP.get(device.type, DEFAULT_KV_CAP["cpu"])
    return min(DEFAULT_KV_SEQS * max_model_len * token_bytes, cap)


class LLM:
    """A small inference engine over one Llama-family model.

    ``model``: a name (``"smollm2-135m"``, ``"tiny-llama"``...), a checkpoint
    directory or a hub id (see :func:`minikv.models.resolve`).
    ``prefix_cache``: reuse the K/V of prompt prefixes seen before (paged layout only):
    ``"none"``; ``"hash"`` (chained block hashes, ref-counted LRU pool, the vLLM
    way); ``"radix"`` (a radix tree, the SGLang way); or your own
    :class:`~minikv.prefix.PrefixCache` object, or a factory
    ``(num_blocks, block_size) -> PrefixCache`` (chapters 03 and 04).
    ``prefix_cache_options`` go to the cache's constructor, e.g.
    ``{"hash_fn": "xxh3_128"}`` or ``{"page_size": 1, "policy": "lfu"}`` for the radix tree.
    The cache lives as long as the ``LLM``: later ``generate`` calls hit what
    earlier ones computed; ``cache_stats()`` and ``reset_prefix_cache()``.
    It owns the pool's blocks (``llm.cache``, a ``NoPrefixCache`` with ``"none"``):
    the one ledger of used, evictable and free blocks, ``cache_stats()``.
    ``llm.kv_pool`` holds only the K/V tensors.

    KV cache: ``kv_layout="paged"`` (default) keeps every sequence's K/V in
    blocks of ``block_size`` tokens of one preallocated :class:`KVPool`;
    ``"contiguous"`` gives each sequence of a batch one padded row sized for
    the longest one (the baseline). The cache is sized by ``kv_cache_memory``
    (bytes) or, paged only, ``num_blocks``; by default it holds 4 sequences of
    the full context, capped at 256 MiB on CPU and 4 GiB on a GPU.
    Several prompts run as one batch; what does not fit waits until earlier
    sequences finish.

    ``kv_cache_cls`` / ``decode_attention``: swap in your own contiguous
    cache class or single-token attention function (chapter 01's exercises);
    either one implies the contiguous layout, one sequence at a time.
    ``paged_decode_attention``: your batched paged decode attention (chapter
    02, the signature of :func:`minikv.attention.torch_ref.paged_decode_attention`)
    in place of the engine's, on the paged layout.
    ``attention``: the paged layout's kernels, ``"torch"``, ``"triton"`` (in
    place through the block tables; on the CPU, Triton's interpreter: slow) or
    ``"auto"`` (Triton on CUDA, torch on the CPU); ``llm.attention`` says which.

    Every option is checked by :class:`~minikv.engine.config.EngineConfig` (its
    field docs give each one's meaning and default) before the model loads:
    a wrong one raises :class:`~minikv.errors.InvalidRequestError` saying what to give.
    ``seed=None`` seeds the engine's generator nondeterministically; a
    ``max_model_len`` above the model's context is cut to it.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        prefix_cache: PrefixCacheLike = "none",
        prefix_cache_options: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        seed: int | None = 0,
        max_model_len: int | None = None,
        kv_layout: Literal["paged", "contiguous"] | None = None,
        block_size: int = 16,
        num_blocks: int | None = None,
        kv_cache_memory: int | None = None,
        kv_cache_cls: type | None = None,
        decode_attention: DecodeFn | None = None,
        paged_decode_attention: PagedDecodeFn | None = None,
        attention: Literal["auto", "torch", "triton"] = "auto",
    ) -> None:
        econf = EngineConfig(  # every option is checked here, before the model loads
            model=model, prefix_cache=prefix_cache, prefix_cache_options=prefix_cache_options, device=device,
            dtype=dtype, seed=seed, max_model_len=max_model_len, kv_layout=kv_layout, block_size=block_size,
            num_blocks=num_blocks, kv_cache_memory=kv_cache_memory, kv_cache_cls=kv_cache_cls,
            decode_attention=decode_attention, paged_decode_attention=paged_decode_attention, attention=attention)
        self.engine_config = econf
        kv_layout, block_size, num_blocks, kv_cache_memory = (econf.kv_layout, econf.block_size, econf.num_blocks,
                                                              econf.kv_cache_memory)
        prefix_cache_options, plugged = econf.prefix_cache_options, econf.plugged
        self.paged_decode_attention = paged_decode_attention
        self.attention: str = econf.attention  # "torch" or "triton", "auto" resolved

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
        self.prefix_cache = prefix_cache if isinstance(prefix_cache, str) else type(prefix_cache).__name__
        self.scale = self.config.head_dim ** -0.5
        self._generator = torch.Generator()
        if econf.seed is None:
            self._generator.seed()  # nondeterministic, as documented on EngineConfig.seed
        else:
            self._generator.manual_seed(econf.seed)
        self._ids = itertools.count()

        cfg = self.config
        self.kv_layout: str = kv_layout
        self.block_size = block_size
        self.kv_bytes_per_token = bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, self.dtype)
        self.kv_cache_memory = kv_cache_memory or default_kv_cache_memory(
            self.kv_bytes_per_token, self.max_model_len, self.device)
        self.kv_pool: KVPool | None = None
        if kv_layout == "paged":
            size = {"num_blocks": num_blocks} if num_blocks is not None else {"memory_bytes": self.kv_cache_memory}
            self.kv_pool = KVPool(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, block_size, **size,
                                  dtype=self.dtype, device=self.device)
            self.kv_cache_memory = self.kv_pool.memory_bytes
        self.cache: PrefixCache = self._make_prefix_cache(prefix_cache, prefix_cache_options or {})
        self.block_manager = BlockManager(self.cache, self.kv_pool, self.max_model_len) if self.kv_pool else None
        self._sequential: SequentialRunner | None = None
        if plugged:
            self._sequential = SequentialRunner(
                self.model, cfg, kv_cache_cls or ContiguousKVCache, decode_attention, self.scale, self.dtype,
                self.device, self.eos_ids, self.max_model_len)

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

    def cache_stats(self) -> CacheStats:
        """Prefix-cache statistics in tokens: queries, hits, hit rate, evictions, blocks free/cached/used."""
        return self.cache.stats()

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (the next requests all miss) and zero the statistics."""
        self.cache.reset()

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

    def _make_sequence(self, prompt: PromptLike, params: SamplingParams, chat: bool,
                       where: str = "the prompt") -> Sequence:
        """A checked prompt as a :class:`Sequence` (forms: :mod:`minikv.engine.inputs`).

        ``where`` names the prompt in error messages ("the prompt", "prompt 2").
        """
        parsed = parse_prompt(prompt, where)
        ids = parsed.token_ids if parsed.token_ids is not None else self.encode(parsed.text, chat)
        check_prompt_ids(ids, self.config.vocab_size, self.max_model_len, where)
        generator = self._generator if params.seed is None else torch.Generator().manual_seed(params.seed)
        return Sequence(next(self._ids), parsed.text, ids, params, generator=generator)

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

        ``prompts``: a string, ``{"prompt": text}``, ``{"prompt_token_ids": [...]}``, or a list of them
        (see :mod:`minikv.engine.inputs`). ``sampling_params``: one for all prompts or one per prompt.
        All prompts are checked before any work starts.
        """
        chat, use_tqdm = check_bool("chat", chat), check_bool("use_tqdm", use_tqdm)
        prompts = as_prompt_list(prompts)
        params = as_params_list(sampling_params, len(prompts))
        seqs = [self._make_sequence(p, sp, chat, prompt_name(i, len(prompts)))
                for i, (p, sp) in enumerate(zip(prompts, params))]
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(seqs), desc="generating", unit="req")
        try:
            if self._sequential is not None:
                for seq in seqs:
                    self._sequential.run(seq)
                    if bar is not None:
                        bar.update(1)
            elif seqs:
                self._run_batch(seqs, bar)
        finally:
            if bar is not None:
                bar.close()
        return [self._output(s) for s in seqs]

    def _kv_for(self, seqs: list[Sequence]) -> tuple[KVPool | PaddedKVCache, BlockManager | RowManager]:
        """The KV store for this batch and its manager; raises :class:`KVCacheFull` before any work."""
        if self.kv_pool is not None:
            assert self.block_manager is not None
            for i, seq in enumerate(seqs):
                self.block_manager.check_fits(seq, f"prompt {i}" if len(seqs) > 1 else "the request")
            return self.kv_pool, self.block_manager
        cfg = self.config
        row_len = max(s.max_length(self.max_model_len) for s in seqs)
        row_bytes = row_len * self.kv_bytes_per_token
        rows = min(len(seqs), self.kv_cache_memory // row_bytes)
        if rows == 0:
            raise KVCacheFull(
                f"the contiguous KV cache gives every sequence a row of {row_len} tokens ({row_bytes} bytes), "
                f"but kv_cache_memory is {self.kv_cache_memory} bytes ({self.kv_cache_memory // self.kv_bytes_per_token} "
                f"tokens); raise kv_cache_memory to at least {row_bytes}, or lower max_tokens, or shorten the prompt"
            )
        cache = PaddedKVCache(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, rows, row_len, self.dtype, self.device)
        return cache, RowManager(rows, row_len, self.max_model_len)

    def _run_batch(self, seqs: list[Sequence], bar: Any = None) -> None:
        """Run all sequences to completion as one batch stepping together."""
        kv, manager = self._kv_for(seqs)
        scheduler = Scheduler(manager, self.eos_ids, self.max_model_len, block_size=self.block_size,
                              share_in_batch=not isinstance(self.cache, NoPrefixCache))
        runner = ModelRunner(self.model, kv, self.scale, self.device, self.paged_decode_attention,
                             attention=self.attention)
        for seq in seqs:
            scheduler.add(seq)
        try:
            while not scheduler.is_finished:
                batch, is_prefill = scheduler.schedule()
                finished = scheduler.postprocess(batch, runner.run(batch), is_prefill)
                if bar is not None and finished:
                    bar.update(len(finished))
        finally:
            scheduler.abort_all()  # on an error or interrupt: nothing stays allocated

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
