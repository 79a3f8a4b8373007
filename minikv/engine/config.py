"""EngineConfig: every option of :class:`~minikv.engine.llm.LLM`, checked in one place before any work.

``LLM(model, **options)`` builds an :class:`EngineConfig` first. Its
``__post_init__`` refuses a wrong option with an
:class:`~minikv.errors.InvalidRequestError` that names the option and what to
give instead, and normalises the rest (a ``torch.device``, a ``torch.dtype``,
the KV layout resolved), all before the model is resolved or loaded: a typo
costs nothing. Any engine (this one, chapter 05's) can build one and trust it.

The prefix-cache checks are in :mod:`minikv.engine.cache_checks`. Only the checks that need the model or
the KV pool live elsewhere: the
prompt's length against the context (``LLM._make_sequence``) and a plugged
prefix cache's size against the pool (``LLM._make_prefix_cache``, through
:func:`check_cache_size`).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from minikv.engine.cache_checks import (  # noqa: F401 - re-exported: they were defined here
    PREFIX_CACHES, check_built_tier, check_cache_interface, check_cache_options, check_cache_size,
    check_tier_factory, is_cache_factory)
from minikv.errors import InvalidRequestError
from minikv.models import DEFAULT_MODEL
from minikv.validation import check_bool, check_int, check_optional_int, check_seed, describe

if TYPE_CHECKING:
    from minikv.attention.contiguous import DecodeFn
    from minikv.attention.paged import PagedDecodeFn

KV_LAYOUTS = ("paged", "contiguous")
ATTENTION_BACKENDS = ("auto", "torch", "triton")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""The dtypes the model and KV cache can run in, by name (``torch.float32`` etc. are accepted too)."""


@dataclass
class EngineConfig:
    """The engine's options, checked and normalised on creation (see :class:`~minikv.engine.llm.LLM`)."""

    model: str | os.PathLike = DEFAULT_MODEL
    """A model name (``"tiny-llama"``), a checkpoint directory or a hub id. Default: SmolLM2-135M.
    Resolved later by :func:`minikv.models.resolve`, which names the known models when it fails."""

    prefix_cache: Any = "none"
    """``"none"``, ``"hash"`` (vLLM's chained block hashes), ``"radix"`` (SGLang's tree), a
    :class:`~minikv.prefix.PrefixCache` object, or a factory / class called as
    ``(num_blocks, block_size, **prefix_cache_options)``. Default ``"none"``: no reuse across requests.
    Objects and factories are checked for the methods the engine calls, so a missing one fails here."""

    prefix_cache_options: dict[str, Any] | None = None
    """Keyword arguments for the cache's constructor, e.g. ``{"hash_fn": "xxh3_128"}``. Default: none.
    Each name is checked against the constructor's signature; refused with ``"none"`` or a built object
    (there is no constructor to give them to). Normalised to a dict."""

    device: str | torch.device | None = None
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Default: ``cuda`` when available, else ``cpu``.
    A device this machine lacks is refused with what it has. Normalised to a ``torch.device``."""

    dtype: str | torch.dtype | None = None
    """``"float32"``, ``"float16"`` or ``"bfloat16"`` (names or ``torch`` dtypes) for weights and KV.
    Default: bfloat16 on CUDA (half the memory of float32), float32 on CPU (the reference precision;
    bfloat16 also runs on CPU). Normalised to a ``torch.dtype``."""

    seed: int | None = 0
    """Seeds the generator of requests without their own ``SamplingParams.seed``. Default 0, so runs
    repeat. ``None``: a fresh nondeterministic seed per ``LLM`` (vLLM's meaning). An int 0..2**64-1."""

    max_model_len: int | None = None
    """The context length (prompt + generated tokens), at least 2. Default: the model's own. A larger
    value is cut to the model's (its position embeddings end there), as vLLM's default does, with no error."""

    kv_layout: str | None = None
    """``"paged"`` (blocks of one preallocated pool) or ``"contiguous"`` (one padded row per sequence,
    the baseline). Default: contiguous when a chapter-01 plug-in is given, else paged. Resolved to a str."""

    block_size: int = 16
    """Tokens per KV block (paged layout), a positive int. Default 16, vLLM's; prefix caches share
    whole blocks, so smaller blocks hit more often at the cost of longer block tables."""

    num_blocks: int | None = None
    """The paged pool's size in blocks, a positive int; or give ``kv_cache_memory``, not both.
    Default: sized from ``kv_cache_memory``."""

    kv_cache_memory: int | None = None
    """The KV cache's budget in bytes, a positive int. Default: 4 full-context sequences, capped at
    256 MiB on CPU and 4 GiB on a GPU (see :func:`~minikv.engine.parts.default_kv_cache_memory`)."""

    kv_cache_cls: type | None = None
    """Chapter 01: your contiguous KV-cache class (implies the contiguous layout). Default: the engine's."""

    decode_attention: DecodeFn | None = None
    """Chapter 01: your single-token attention function (implies the contiguous layout). Default: torch's."""

    paged_decode_attention: PagedDecodeFn | None = None
    """Chapter 02: your batched paged decode attention (paged layout). Default: the engine's."""

    attention: str = "auto"
    """The paged layout's attention kernels: ``"torch"`` (SDPA over a gather through the block tables,
    plus shared-prefix attention on decode), ``"triton"`` (minikv's Triton kernels, reading K/V in place
    through the block tables) or ``"auto"`` (default: Triton on CUDA when it is installed, else torch).
    ``"triton"`` on the CPU runs Triton's interpreter (slow: for tests and chapter 06) in float32 only.
    Resolved to ``"torch"`` or ``"triton"``."""

    enforce_eager: bool = False
    """vLLM's name: True never uses CUDA graphs. By default decode steps on CUDA with the Triton kernels
    replay captured graphs (:mod:`minikv.engine.cuda_graphs`); on the CPU there are none."""

    cpu_offload_blocks: int | None = None
    """A second cache level in host memory, in blocks (:mod:`minikv.prefix.offload`): blocks the prefix
    cache evicts are copied there (pinned memory, a side stream on CUDA) and a later hit copies them back
    instead of recomputing them. Needs ``prefix_cache="hash"`` or ``"radix"``. Give this or
    ``cpu_offload_gb``, not both. Default: no tier."""

    cpu_offload_gb: float | None = None
    """The same tier sized in GiB of host memory (``2**30`` bytes; vLLM calls its KV tier's size
    ``kv_offloading_size``, and its own ``cpu_offload_gb`` offloads weights). Default: no tier."""

    cpu_offload_cls: Any = None
    """Chapter 08: your tier class (or any factory) in place of :class:`~minikv.prefix.offload.OffloadTier`,
    called as ``cpu_offload_cls(kv_pool, num_blocks)`` with the engine's pool and the size that
    ``cpu_offload_blocks`` / ``cpu_offload_gb`` gives (one of them is needed). What it builds must have the
    methods the caches call (:data:`~minikv.prefix.offload.TIER_METHODS`; a subclass of ``OffloadTier`` has
    them). Default: minikv's ``OffloadTier``."""

    def __post_init__(self) -> None:
        self.kv_layout = self._check_kv_layout()
        self.block_size = check_int("block_size", self.block_size, 1, expected="a positive int",
                                    hint="give tokens per KV block, e.g. 16")
        if isinstance(self.prefix_cache_options, dict) and "offload" in self.prefix_cache_options:
            raise InvalidRequestError("the engine builds the offload tier over its own KV pool: give cpu_offload_blocks "
                                      "or cpu_offload_gb (and cpu_offload_cls for your own tier class) instead of "
                                      "prefix_cache_options['offload']")
        self.prefix_cache_options = check_cache_options(self.prefix_cache, self.prefix_cache_options, self.block_size)
        if self.num_blocks is not None and self.kv_cache_memory is not None:
            raise InvalidRequestError("give num_blocks or kv_cache_memory, not both")
        if self.num_blocks is not None and self.kv_layout != "paged":
            raise InvalidRequestError("num_blocks sizes the paged pool; with kv_layout='contiguous' "
                                      "give kv_cache_memory")
        self.num_blocks = check_optional_int("num_blocks", self.num_blocks, 1, expected="a positive int",
                                             hint="give blocks in the KV pool, or None to size it by kv_cache_memory")
        self.kv_cache_memory = check_optional_int("kv_cache_memory", self.kv_cache_memory, 1,
                                                  expected="a positive int", hint="give bytes, or None for the default")
        self.max_model_len = check_optional_int(
            "max_model_len", self.max_model_len, 2, expected="at least 2 (one prompt token and one generated)",
            hint="give None for the model's context length")
        self.seed = check_seed("seed", self.seed, none_means="a nondeterministic seed")
        self.device = check_device(self.device)
        self.dtype = check_dtype(self.dtype, self.device)
        if self.prefix_cache != "none" and self.kv_layout != "paged":
            raise InvalidRequestError("prefix caching needs the paged KV layout; drop kv_layout='contiguous' "
                                      "and the chapter 01 plug-ins, or use prefix_cache='none'")
        self.attention = check_attention(self.attention, self.kv_layout, self.device, self.dtype)
        self.enforce_eager = check_bool("enforce_eager", self.enforce_eager)
        check_offload_options(self)

    @property
    def offload(self) -> bool:
        """A CPU offload tier is asked for."""
        return self.cpu_offload_blocks is not None or self.cpu_offload_gb is not None

    @property
    def cuda_graphs(self) -> bool:
        """Decode steps replay CUDA graphs: on CUDA, Triton kernels, the paged layout, no plugged decode kernel."""
        return (not self.enforce_eager and self.device.type == "cuda" and self.attention == "triton"
                and self.kv_layout == "paged" and self.paged_decode_attention is None)

    @property
    def plugged(self) -> bool:
        """A chapter-01 plug-in is given: sequences run one at a time through the contiguous road."""
        return self.kv_cache_cls is not None or self.decode_attention is not None

    def context_len(self, model_max: int) -> int:
        """``max_model_len`` for a model whose positions end at ``model_max``: the smaller one."""
        return min(self.max_model_len or model_max, model_max)

    def _check_kv_layout(self) -> str:
        for name in ("kv_cache_cls", "decode_attention", "paged_decode_attention"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise InvalidRequestError(f"{name} must be a class or function, got {describe(value)}; "
                                          "or leave it None for the engine's own")
        paged_plug = self.paged_decode_attention is not None
        if self.plugged and paged_plug:
            raise InvalidRequestError(
                "paged_decode_attention plugs into the paged layout, kv_cache_cls / decode_attention into the "
                "contiguous one; give one or the other"
            )
        layout = self.kv_layout or ("contiguous" if self.plugged else "paged")
        if layout not in KV_LAYOUTS:
            raise InvalidRequestError(f"kv_layout={layout!r} is unknown; choose from {KV_LAYOUTS}")
        if self.plugged and layout != "contiguous":
            raise InvalidRequestError(
                "kv_cache_cls / decode_attention plug into the contiguous layout; drop kv_layout='paged' or the plug-in"
            )
        if paged_plug and layout != "paged":
            raise InvalidRequestError(
                "paged_decode_attention plugs into the paged layout; drop kv_layout='contiguous' or the plug-in"
            )
        return layout


def check_offload_options(c: EngineConfig) -> None:
    """``cpu_offload_blocks`` / ``cpu_offload_gb``: one of them, a positive size, on a built-in prefix cache;
    ``cpu_offload_cls`` only with one of them, and a tier factory (:func:`~minikv.engine.cache_checks.check_tier_factory`)."""
    if c.cpu_offload_blocks is not None and c.cpu_offload_gb is not None:
        raise InvalidRequestError("give cpu_offload_blocks or cpu_offload_gb, not both (one sizes the tier in "
                                  "blocks, the other in GiB of host memory)")
    c.cpu_offload_blocks = check_optional_int(
        "cpu_offload_blocks", c.cpu_offload_blocks, 1, expected="a positive int",
        hint="give the tier's size in KV blocks, e.g. 4096, or None for no tier")
    gb = c.cpu_offload_gb
    if gb is not None:
        if isinstance(gb, bool) or not isinstance(gb, (int, float)) or not math.isfinite(gb) or gb <= 0:
            raise InvalidRequestError(f"cpu_offload_gb must be a positive number of GiB (e.g. 4 or 0.5), got "
                                      f"{describe(gb)}; or None for no tier")
        c.cpu_offload_gb = float(gb)
    if c.cpu_offload_cls is not None:
        if not c.offload:
            raise InvalidRequestError("cpu_offload_cls builds the tier that cpu_offload_blocks or cpu_offload_gb sizes, "
                                      "but neither is given; add one (e.g. cpu_offload_blocks=4096), or drop cpu_offload_cls")
        check_tier_factory(c.cpu_offload_cls)
    if not c.offload:
        return
    what = "cpu_offload_blocks" if c.cpu_offload_blocks is not None else "cpu_offload_gb"
    if not isinstance(c.prefix_cache, str) or c.prefix_cache == "none":
        kind = c.prefix_cache if isinstance(c.prefix_cache, str) else "a plugged cache"
        raise InvalidRequestError(f"{what} adds a second level to minikv's prefix caches, but prefix_cache is "
                                  f"{kind!r}; use prefix_cache='hash' or 'radix', or drop {what}")


def check_attention(attention: Any, kv_layout: str, device: torch.device, dtype: torch.dtype) -> str:
    """``"auto"`` resolved, and ``"triton"`` checked: installed, paged layout, and fp32 under the interpreter.

    On the CPU, ``"triton"`` needs Triton's interpreter: when minikv's kernels are not imported yet,
    this sets ``TRITON_INTERPRET=1`` (Triton reads it when a kernel is defined); if they were already
    defined for a GPU, the process must be restarted with the variable set.
    """
    if not isinstance(attention, str) or attention not in ATTENTION_BACKENDS:
        raise InvalidRequestError(f"attention={attention!r} is unknown; choose from {ATTENTION_BACKENDS}")
    has_triton = importlib.util.find_spec("triton") is not None
    if attention == "auto":
        return "triton" if (device.type == "cuda" and has_triton and kv_layout == "paged") else "torch"
    if attention == "torch":
        return attention
    if not has_triton:
        raise InvalidRequestError("attention='triton' needs Triton, which is not installed: pip install triton "
                                  "(Linux wheels), or use attention='torch'")
    if kv_layout != "paged":
        raise InvalidRequestError("attention='triton' runs on the paged KV layout; drop kv_layout='contiguous' "
                                  "and the chapter 01 plug-ins, or use attention='torch'")
    if device.type == "cpu":
        if dtype != torch.float32:
            raise InvalidRequestError(f"attention='triton' on the CPU runs Triton's interpreter, whose {dtype} "
                                      "arithmetic is wrong; use dtype='float32' (or attention='torch')")
        from minikv.attention.triton_common import interpreting  # reads the variable; imports no triton

        if not interpreting():
            if "minikv.attention.triton_decode" in sys.modules:
                raise InvalidRequestError(
                    "attention='triton' on the CPU needs Triton's interpreter, but minikv's kernels were already "
                    "compiled for a GPU in this process; restart it with TRITON_INTERPRET=1 set, or use device='cuda'")
            os.environ["TRITON_INTERPRET"] = "1"
    return attention


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device`` this machine has (``None``: :func:`default_device`)."""
    if device is None:
        return default_device()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    have = "'cpu'" + (f", 'cuda' or 'cuda:0'..'cuda:{count - 1}'" if count else " (no CUDA device is visible here)")
    if not isinstance(device, (str, torch.device)):
        raise InvalidRequestError(f"device must be a string or torch.device, got {describe(device)}; "
                                  f"this machine has {have}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InvalidRequestError(f"device={device!r} is unknown; this machine has {have}") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise InvalidRequestError(f"device={device!r}: minikv runs on CPU or CUDA only; this machine has {have}")
    if count == 0:
        raise InvalidRequestError(f"device={device!r} but CUDA is not available (torch {torch.__version__}, "
                                  f"no GPU visible); use device='cpu'")
    if dev.index is not None and dev.index >= count:
        raise InvalidRequestError(f"device={device!r} but only {count} CUDA device(s) are visible; "
                                  f"this machine has {have}")
    return dev


def check_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    """``dtype`` as one of :data:`DTYPES` (``None``: bfloat16 on CUDA, float32 elsewhere)."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = ", ".join(repr(n) for n in DTYPES)
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise InvalidRequestError(f"dtype={dtype!r} is not supported; choose {names} (or the torch dtypes "
                              "of those names), or None for the device's default")
