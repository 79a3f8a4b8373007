"""Checks of a ``prefix_cache`` option before any work: a known kind, a factory whose signature takes the
options, or a built object with what the engine calls (:class:`~minikv.prefix.PrefixCache`); and of a
``cpu_offload_cls`` tier factory (:func:`check_tier_factory`, :func:`check_built_tier`).

:class:`~minikv.engine.config.EngineConfig` runs :func:`check_cache_options`;
:class:`~minikv.engine.parts.EngineParts` runs :func:`check_cache_size` once the pool exists.
"""

from __future__ import annotations

import inspect
from inspect import getattr_static
from typing import Any, Callable

from minikv.errors import InvalidRequestError, MinikvError
from minikv.prefix import PREFIX_CACHE_KINDS
from minikv.prefix.offload import TIER_METHODS, OffloadTier, tier_lacks
from minikv.validation import check_int, describe

PREFIX_CACHES = tuple(PREFIX_CACHE_KINDS)  # "none", "hash", "radix"
CACHE_ATTRIBUTES = ("num_blocks", "block_size")
CACHE_METHODS = ("match", "allocate", "insert", "release", "stats", "reset")
CACHE_PROPERTIES = ("num_allocatable",)
"""What the engine reads from a prefix cache (see :class:`~minikv.prefix.PrefixCache`)."""


def is_cache_factory(kind: Any) -> bool:
    """A class or a function to build the cache, as opposed to a built cache object."""
    return isinstance(kind, type) or (callable(kind) and not hasattr(kind, "match"))


def check_cache_options(kind: Any, options: Any, block_size: int) -> dict[str, Any]:
    """``prefix_cache`` is a known kind, a factory or a cache object, and ``options`` fit its constructor.

    A built-in kind is built once on a one-block pool, so its own checks of the option values
    (``page_size`` must divide ``block_size``...) run now too; a learner's factory is never called here.
    """
    if options is not None and not isinstance(options, dict):
        raise InvalidRequestError(f"prefix_cache_options must be a dict of constructor keywords, got "
                                  f"{describe(options)}; e.g. {{'hash_fn': 'xxh3_128'}}")
    options = dict(options or {})
    bad_key = next((k for k in options if not isinstance(k, str)), None)
    if bad_key is not None:
        raise InvalidRequestError(f"prefix_cache_options keys are keyword names, got {describe(bad_key)}")
    if isinstance(kind, str):
        if kind not in PREFIX_CACHES:
            raise InvalidRequestError(f"prefix_cache={kind!r} is unknown; choose from {PREFIX_CACHES}, "
                                      "or pass a PrefixCache object or factory")
        if kind == "none" and options:
            raise InvalidRequestError(f"prefix_cache_options {sorted(options)} given with prefix_cache='none', "
                                      "which takes none; choose prefix_cache='hash' or 'radix', or drop the options")
        _check_signature(f"the {kind!r} prefix cache", PREFIX_CACHE_KINDS[kind], options)
        try:
            PREFIX_CACHE_KINDS[kind](1, block_size, **options)
        except MinikvError:
            raise
        except (ValueError, TypeError) as e:
            raise InvalidRequestError(f"prefix_cache_options {options!r} do not suit the {kind!r} prefix cache "
                                      f"with block_size={block_size}: {e}") from None
        return options
    if is_cache_factory(kind):
        _check_signature(f"the prefix_cache factory {getattr(kind, '__name__', kind)!r}", kind, options)
        return options
    if not hasattr(kind, "match"):
        raise InvalidRequestError(f"prefix_cache={kind!r} is unknown; choose from {PREFIX_CACHES}, "
                                  "or pass a PrefixCache object or a factory (num_blocks, block_size) -> PrefixCache")
    if options:
        raise InvalidRequestError("prefix_cache_options go to a cache's constructor, but prefix_cache is an object "
                                  "already built; pass its class or a factory instead, or build it with the options")
    check_cache_interface(kind)
    return options


def _check_signature(what: str, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    """``factory(num_blocks, block_size, **options)`` binds; else name the wrong option and the valid ones."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check before calling it
        return
    params = list(sig.parameters.values())
    try:
        sig.bind(1, 1, **options)
    except TypeError as e:
        if any(p.kind is p.VAR_KEYWORD for p in params):
            unknown = []
        else:
            named = {p.name for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
            unknown = sorted(set(options) - named)
        if unknown:
            valid = ", ".join(sorted(named - {"allocator", "offload"})) or "none"  # offload: cpu_offload_*
            raise InvalidRequestError(f"prefix_cache_options: {', '.join(map(repr, unknown))} is not an option "
                                      f"of {what}; its options are: {valid}") from None
        raise InvalidRequestError(f"{what} cannot be called as factory(num_blocks, block_size, "
                                  f"**prefix_cache_options) ({e}); make it take "
                                  "(num_blocks, block_size) and the options as keywords") from None


def check_cache_interface(cache: Any) -> None:
    """``cache`` has what the engine calls (:class:`~minikv.prefix.PrefixCache`), without running any of it."""
    missing = [a for a in CACHE_ATTRIBUTES + CACHE_METHODS + CACHE_PROPERTIES if not _has(cache, a)]
    missing += [m for m in CACHE_METHODS if m not in missing and not callable(getattr(cache, m))]
    if missing:
        raise InvalidRequestError(
            f"prefix_cache object {cache!r} lacks {', '.join(map(repr, missing))}; it must implement "
            f"minikv.prefix.PrefixCache: attributes {', '.join(CACHE_ATTRIBUTES)}, methods "
            f"{', '.join(CACHE_METHODS)} and the property num_allocatable")
    for attr in CACHE_ATTRIBUTES:
        check_int(f"the prefix cache's {attr}", getattr(cache, attr), 1, expected="a positive int")


def check_cache_size(cache: Any, num_blocks: int, block_size: int) -> None:
    """A plugged cache must manage exactly the pool's blocks (its ids index the pool's tensors)."""
    check_cache_interface(cache)
    if (cache.num_blocks, cache.block_size) != (num_blocks, block_size):
        raise InvalidRequestError(
            f"the prefix cache manages {cache.num_blocks} blocks of {cache.block_size} tokens, but the KV pool "
            f"has {num_blocks} blocks of {block_size}; build it with (num_blocks={num_blocks}, "
            f"block_size={block_size})")


def check_tier_factory(factory: Any) -> None:
    """``cpu_offload_cls`` is a class or function callable as ``factory(kv_pool, num_blocks)``, not a built tier.

    A class that is no :class:`~minikv.prefix.offload.OffloadTier` subclass must have the tier's methods;
    a function's product is checked once built (:func:`check_built_tier`).
    """
    name = getattr(factory, "__name__", type(factory).__name__)
    if not callable(factory) or (not isinstance(factory, type) and hasattr(factory, "store")):
        built = " (a tier already built: the engine builds it over its own KV pool)" if hasattr(factory, "store") else ""
        raise InvalidRequestError(f"cpu_offload_cls must be a tier class or a factory (kv_pool, num_blocks) -> tier, "
                                  f"got {describe(factory)}{built}; pass the class, e.g. cpu_offload_cls=HostTier")
    if isinstance(factory, type) and not issubclass(factory, OffloadTier):
        missing = tier_lacks(factory)
        if missing:
            raise InvalidRequestError(f"cpu_offload_cls={name} lacks {', '.join(map(repr, missing))}; a tier needs "
                                      f"{', '.join(TIER_METHODS)} (subclass minikv.prefix.offload.OffloadTier to "
                                      "inherit them)")
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check before calling it
        return
    try:
        sig.bind(object(), 1)
    except TypeError as e:
        raise InvalidRequestError(f"cpu_offload_cls={name} cannot be called as cpu_offload_cls(kv_pool, "
                                  f"num_blocks) ({e}); make it take the pool and the tier's size in blocks") from None


def check_built_tier(factory: Any, tier: Any) -> Any:
    """What ``cpu_offload_cls`` built: a tier with the methods the caches call."""
    missing = [] if isinstance(tier, OffloadTier) else tier_lacks(tier)
    if missing:
        name = getattr(factory, "__name__", type(factory).__name__)
        raise InvalidRequestError(f"cpu_offload_cls={name} built {describe(tier)}, which lacks "
                                  f"{', '.join(map(repr, missing))}; a tier needs {', '.join(TIER_METHODS)} and "
                                  "block_size (subclass minikv.prefix.offload.OffloadTier to inherit them)")
    return tier


def _has(obj: Any, name: str) -> bool:
    """Whether ``obj`` has ``name``, found without calling a property (a learner's may raise)."""
    try:
        getattr_static(obj, name)
    except AttributeError:  # a proxy (a spy around a learner's cache) may delegate through __getattr__
        return hasattr(type(obj), "__getattr__") and hasattr(obj, name)
    return True
