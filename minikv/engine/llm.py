"""LLM: the user-facing engine (vLLM's names): ``LLM(model).generate(prompts, SamplingParams(...))``.

A thin facade over the online :class:`~minikv.engine.llm_engine.LLMEngine`:
``generate`` adds every prompt as a request and steps the engine until all
are done. The contiguous layout and the chapter 01 plug-ins, which have no
blocks to schedule, run closed batches through the
:class:`~minikv.engine.waves.WavesScheduler` and a
:class:`~minikv.engine.row_manager.RowManager` (or one sequence at a time).
Attributes the facade does not have (``model``, ``tokenizer``, ``kv_pool``,
``cache``, ``block_manager``, ...) are the engine's parts.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Literal, Sequence as Seq

import torch

from minikv.attention.contiguous import DecodeFn
from minikv.attention.paged import PagedDecodeFn
from minikv.engine.inputs import PromptLike, as_params_list, as_prompt_list, prompt_name
from minikv.engine.llm_engine import LLMEngine
from minikv.engine.model_runner import ModelRunner
from minikv.engine.parts import PrefixCacheLike, default_kv_cache_memory  # noqa: F401 - re-exported
from minikv.engine.row_manager import RowManager
from minikv.engine.sequence import Sequence
from minikv.engine.waves import WavesScheduler
from minikv.errors import InvalidRequestError, KVCacheFull
from minikv.kv.padded import PaddedKVCache
from minikv.models import DEFAULT_MODEL
from minikv.outputs import RequestOutput
from minikv.prefix import CacheStats
from minikv.sampling import SamplingParams
from minikv.validation import check_bool


def vllm_prefix_cache(prefix_cache: Any, enable_prefix_caching: bool | None) -> Any:
    """``prefix_cache`` after vLLM's ``enable_prefix_caching`` switch (None: leave it as it is)."""
    if enable_prefix_caching is None:
        return prefix_cache
    if not isinstance(enable_prefix_caching, bool):
        raise InvalidRequestError(f"enable_prefix_caching must be True, False or None, got "
                                  f"{enable_prefix_caching!r}")
    if enable_prefix_caching:
        return "hash" if isinstance(prefix_cache, str) and prefix_cache == "none" else prefix_cache
    if not (isinstance(prefix_cache, str) and prefix_cache == "none"):
        raise InvalidRequestError(f"enable_prefix_caching=False contradicts prefix_cache={prefix_cache!r}; "
                                  "give one of them")
    return "none"


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
    Requests run through the online engine, :class:`~minikv.engine.llm_engine.LLMEngine`
    (``llm.llm_engine``; chapter 05): continuous batching with a token budget
    per step, chunked prefill, blocks taken on demand and preemption by
    recompute when the pool runs dry. Its options: ``max_num_batched_tokens``,
    ``max_num_seqs``, ``enable_chunked_prefill``, ``long_prefill_token_threshold``,
    ``scheduler`` (``"continuous"``, or ``"waves"``: the closed-batch baseline),
    ``policy`` (``"fcfs"``, ``"lpm"``, ``"dfs-weight"``) and ``schedule_fn``
    (see :class:`~minikv.engine.sched_config.SchedulerConfig`). The contiguous
    layout and the chapter 01 plug-ins run closed batches (waves) instead.

    ``kv_cache_cls`` / ``decode_attention``: swap in your own contiguous
    cache class or single-token attention function (chapter 01's exercises);
    either one implies the contiguous layout, one sequence at a time.
    ``paged_decode_attention``: your batched paged decode attention (chapter
    02, the signature of :func:`minikv.attention.torch_ref.paged_decode_attention`)
    in place of the engine's, on the paged layout.
    ``cpu_offload_blocks`` / ``cpu_offload_gb``: a second prefix-cache level in host memory
    (hash or radix cache): evicted blocks are copied there and copied back on a later hit instead
    of being recomputed (``llm.offload_tier``; ``cache_stats().offload_hit_tokens``).
    ``cpu_offload_cls``: your tier class in place of :class:`~minikv.prefix.offload.OffloadTier`
    (chapter 08), built as ``cpu_offload_cls(llm.kv_pool, num_blocks)`` at the size those two give.
    ``attention``: the paged layout's kernels, ``"torch"``, ``"triton"`` (in
    place through the block tables; on the CPU, Triton's interpreter: slow) or
    ``"auto"`` (Triton on CUDA, torch on the CPU); ``llm.attention`` says which.

    Every option is checked by :class:`~minikv.engine.config.EngineConfig` and
    :class:`~minikv.engine.sched_config.SchedulerConfig` (their field docs
    give each one's meaning and default) before the model loads:
    a wrong one raises :class:`~minikv.errors.InvalidRequestError` saying what to give.
    ``seed=None`` seeds the engine's generator nondeterministically; a
    ``max_model_len`` above the model's context is cut to it.
    ``enforce_eager``: no CUDA graphs for decode steps (used by default on CUDA with the Triton kernels).
    ``enable_prefix_caching`` (vLLM's switch): True means ``prefix_cache="hash"``
    (vLLM's block hashing) unless another cache is named; False means ``"none"``.
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
        max_num_batched_tokens: int = 8192,
        max_num_seqs: int = 256,
        enable_chunked_prefill: bool = True,
        long_prefill_token_threshold: int = 0,
        scheduler: Literal["continuous", "waves"] = "continuous",
        policy: Any = "fcfs",
        schedule_fn: Callable[..., dict[int, int]] | None = None,
        enable_prefix_caching: bool | None = None,
        enforce_eager: bool = False,
        cpu_offload_blocks: int | None = None,
        cpu_offload_gb: float | None = None,
        cpu_offload_cls: Callable[..., Any] | None = None,
    ) -> None:
        prefix_cache = vllm_prefix_cache(prefix_cache, enable_prefix_caching)
        self.llm_engine = LLMEngine(
            model, max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
            enable_chunked_prefill=enable_chunked_prefill, long_prefill_token_threshold=long_prefill_token_threshold,
            scheduler=scheduler, policy=policy, schedule_fn=schedule_fn,
            prefix_cache=prefix_cache, prefix_cache_options=prefix_cache_options, device=device, dtype=dtype,
            seed=seed, max_model_len=max_model_len, kv_layout=kv_layout, block_size=block_size, num_blocks=num_blocks,
            kv_cache_memory=kv_cache_memory, kv_cache_cls=kv_cache_cls, decode_attention=decode_attention,
            paged_decode_attention=paged_decode_attention, attention=attention, enforce_eager=enforce_eager,
            cpu_offload_blocks=cpu_offload_blocks, cpu_offload_gb=cpu_offload_gb, cpu_offload_cls=cpu_offload_cls)

    def __getattr__(self, name: str) -> Any:  # model, tokenizer, kv_pool, cache, block_manager, ...
        if name == "llm_engine":
            raise AttributeError(name)
        return getattr(self.llm_engine, name)

    def get_tokenizer(self) -> Any:
        """The model's tokenizer (vLLM's name)."""
        return self.llm_engine.tokenizer

    def cache_stats(self) -> CacheStats:
        """Prefix-cache statistics in tokens: queries, hits, hit rate, evictions, blocks free/cached/used."""
        return self.llm_engine.cache_stats()

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (the next requests all miss) and zero the statistics."""
        self.llm_engine.reset_prefix_cache()

    def encode(self, prompt: str, chat: bool = False) -> list[int]:
        """Token ids of ``prompt``; with ``chat=True`` wrapped in the model's chat template as a user turn."""
        return self.llm_engine.parts.encode(prompt, chat)

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
        All prompts are checked before any work starts (and refused if one could never fit the KV pool).
        """
        chat, use_tqdm = check_bool("chat", chat), check_bool("use_tqdm", use_tqdm)
        prompts = as_prompt_list(prompts)
        params = as_params_list(sampling_params, len(prompts))
        engine = self.llm_engine
        many = len(prompts) > 1
        seqs = [engine.make_sequence(p, sp, chat, prompt_name(i, len(prompts)))
                for i, (p, sp) in enumerate(zip(prompts, params))]
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(seqs), desc="generating", unit="req")
        try:
            if engine.parts.sequential is not None:
                for seq in seqs:
                    engine.parts.sequential.run(seq)
                    if bar is not None:
                        bar.update(1)
            elif engine.scheduler is None:
                if seqs:
                    self._run_contiguous(seqs, bar)
            else:
                for i, seq in enumerate(seqs):
                    engine.check_fits(seq, f"prompt {i}" if many else "the request")
                return self._run_engine(seqs, bar)
        finally:
            if bar is not None:
                bar.close()
        return [engine._output(s) for s in seqs]

    def _run_engine(self, seqs: list[Sequence], bar: Any) -> list[RequestOutput]:
        """Every sequence through the online engine; their final outputs in order."""
        engine = self.llm_engine
        if engine.has_unfinished_requests():
            raise InvalidRequestError("LLM.generate needs the engine to itself, but llm.llm_engine has requests in "
                                      "flight; step them to the end (or abort them) first")
        done: dict[int, RequestOutput] = {}
        engine.enqueue(seqs)
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    done[out.request_id] = out
                    if bar is not None:
                        bar.update(1)
        return [done[s.request_id] for s in seqs]

    def _run_contiguous(self, seqs: list[Sequence], bar: Any = None) -> None:
        """The contiguous baseline: padded rows sized for this batch's longest sequence, run in waves."""
        p = self.llm_engine.parts
        row_len = max(s.max_length(p.max_model_len) for s in seqs)
        row_bytes = row_len * p.kv_bytes_per_token
        rows = min(len(seqs), p.kv_cache_memory // row_bytes)
        if rows == 0:
            raise KVCacheFull(
                f"the contiguous KV cache gives every sequence a row of {row_len} tokens ({row_bytes} bytes), "
                f"but kv_cache_memory is {p.kv_cache_memory} bytes ({p.kv_cache_memory // p.kv_bytes_per_token} "
                f"tokens); raise kv_cache_memory to at least {row_bytes}, or lower max_tokens, or shorten the prompt"
            )
        cfg = p.config
        kv = PaddedKVCache(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, rows, row_len, p.dtype, p.device)
        scheduler = WavesScheduler(RowManager(rows, row_len, p.max_model_len), p.eos_ids, p.max_model_len)
        runner = ModelRunner(p.model, kv, p.scale, p.device)
        for seq in seqs:
            scheduler.add(seq)
        try:
            while not scheduler.is_finished:
                out = scheduler.schedule()
                finished = scheduler.postprocess(out, runner.run(out.scheduled))
                if bar is not None and finished:
                    bar.update(len(finished))
        finally:
            scheduler.abort_all()  # on an error or interrupt: nothing stays allocated

    def chat(self, message: str | list[dict[str, str]] | list[list[dict[str, str]]],
             sampling_params: SamplingParams | None = None, *, use_tqdm: bool = False) -> Any:
        """A chat turn through the model's chat template.

        ``message`` as a string: one user message; returns its :class:`RequestOutput`.
        As a conversation (``[{"role": "system", "content": ...}, {"role": "user", ...}]``) or a list of
        conversations: vLLM's ``LLM.chat``; returns a list of outputs, one per conversation.
        """
        if isinstance(message, str):
            return self.generate(message, sampling_params, chat=True, use_tqdm=use_tqdm)[0]
        conversations = message if message and isinstance(message, list) and isinstance(message[0], list) \
            else [message]
        parts = self.llm_engine.parts
        prompts = [{"prompt_token_ids": parts.encode_messages(c)} for c in conversations]
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)
