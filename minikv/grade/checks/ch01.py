"""Chapter 01 (the KV cache): exercises 1.1 KV bytes per token, 1.2 contiguous KV cache, 1.3 decode attention.

References: :func:`minikv.kv.pool.bytes_per_token`, :class:`minikv.kv.contiguous.ContiguousKVCache`,
:func:`minikv.attention.reference.decode_attention`. The final checks serve ``LLM("tiny-llama")`` (CPU) with the
learner's piece; 1.3's uses the learner's ``KVCache`` too when it reproduces a fixed trace of minikv's cache,
else ``ContiguousKVCache``, so 1.3's grade depends on 1.3's code alone.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from hypothesis import strategies as st

from minikv.attention.reference import decode_attention as ref_decode_attention
from minikv.errors import KVCacheFull
from minikv.grade.compare import CheckFailed, call, expect_tensor, forall, looks_like, one_line
from minikv.grade.engine import Plug, Workload, engine_check
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.grade.trace import Trace
from minikv.kv.contiguous import ContiguousKVCache
from minikv.kv.pool import bytes_per_token

MODULE = "ch01_kv_cache"
PROMPTS = ("The KV cache keeps", "hello hello hello", "0123456789 abc")
MAX_TOKENS = 16
KV_DIMS = ("kv head", "position", "dim")


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ---- the engine, shared by 1.2 and 1.3 ---------------------------------------------------------

WORKLOAD = Workload("ch01", rounds=(PROMPTS,), max_tokens=MAX_TOKENS)
REFERENCE = {"kv_cache_cls": ContiguousKVCache, "decode_attention": ref_decode_attention}


# ---- 1.1 KV bytes per token ----------------------------------------------------------------------

ex11 = register(Exercise(
    "1.1", "KV bytes per token", MODULE, ("kv_bytes_per_token",),
    hint="every layer keeps a key AND a value (x2) for each KV head (not each query head), "
         "each head_dim numbers of dtype_bytes bytes",
))


def _expect_bytes(fn: Callable[..., Any], layers: int, kv_heads: int, head_dim: int, nbytes: int) -> None:
    args = f"kv_bytes_per_token(num_layers={layers}, num_kv_heads={kv_heads}, head_dim={head_dim}, dtype_bytes={nbytes})"
    got = call(fn, layers, kv_heads, head_dim, nbytes, context=args)
    want = 2 * layers * kv_heads * head_dim * nbytes
    if isinstance(got, bool) or not isinstance(got, int):
        if isinstance(got, float) and got == want:
            raise CheckFailed(f"{args} returned the float {got!r}; return an int (use * and //, not /)")
        raise CheckFailed(one_line(f"{args} returned {got!r} ({type(got).__name__}), expected the int {want}"))
    if got != want:
        half, numbers = got * 2 == want, got * nbytes == want and nbytes != 1
        if half and numbers:  # ambiguous at 2 bytes: does it read dtype_bytes at all?
            numbers = call(fn, layers, kv_heads, head_dim, 2 * nbytes, context=args) == got
            half = not numbers
        why = ""
        if half and numbers:
            why = " (half: count both K and V, and dtype_bytes bytes per number)"
        elif half:
            why = " (half: count both K and V)"
        elif numbers:
            why = " (that counts numbers; multiply by dtype_bytes for bytes)"
        elif want and got % want == 0:
            why = f" ({got // want}x too many)"
        raise CheckFailed(f"{args} returned {got:,}, expected {want:,}{why}")


@ex11.check("SmolLM2-135M in bf16: 23,040 bytes")
def _smollm2(learner: Learner) -> None:
    fn = learner.get("kv_bytes_per_token")
    _expect_bytes(fn, 30, 3, 64, 2)
    if 2 * 30 * 3 * 64 * 2 != bytes_per_token(30, 3, 64, torch.bfloat16):  # keep the check tied to minikv
        raise AssertionError("minikv.kv.bytes_per_token disagrees with the exercise's formula")


@ex11.check("Llama-3-8B in bf16 and tiny-llama in fp32")
def _two_models(learner: Learner) -> None:
    fn = learner.get("kv_bytes_per_token")
    _expect_bytes(fn, 32, 8, 128, 2)
    _expect_bytes(fn, 2, 2, 16, 4)


@ex11.check("random sizes vs minikv.kv.bytes_per_token")
def _random_sizes(learner: Learner) -> None:
    fn = learner.get("kv_bytes_per_token")
    dtypes = st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int8])

    @forall(st.integers(1, 128), st.integers(1, 64), st.integers(1, 257), dtypes, max_examples=40)
    def prop(layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> None:
        want = bytes_per_token(layers, kv_heads, head_dim, dtype)
        _expect_bytes(fn, layers, kv_heads, head_dim, dtype.itemsize)
        assert want == 2 * layers * kv_heads * head_dim * dtype.itemsize

    prop()


# ---- 1.2 contiguous KV cache -----------------------------------------------------------------------

ex12 = register(Exercise(
    "1.2", "contiguous KV cache", MODULE, ("KVCache",),
    hint="write the T new tokens at positions lengths[layer] .. lengths[layer] + T - 1 of that layer, "
         "transposed to [heads, T, dim]; return the buffer up to the new length (old and new tokens), "
         "and raise KVCacheFull before writing anything if it would pass max_len",
))


def _layout_guess(got: Any, new: torch.Tensor, start: int) -> str:
    """Name a known mistake in the keys an append returned (``new``: its [T, heads, dim] keys), if any."""
    t, heads, dim = new.shape
    if not isinstance(got, torch.Tensor) or got.dim() != 3:
        return ""
    return (looks_like(got, [("only the new tokens were returned; return the layer's buffer up to the new "
                              "length, the old tokens and the new", lambda: new.transpose(0, 1))])
            or looks_like(got[:, start:], [("the new tokens were reshaped to [heads, T, dim], which scrambles "
                                            "them; transpose [T, heads, dim] instead", lambda: new.reshape(heads, t, dim))])
            or (t > 1 and looks_like(got[:, start + 1:], [("the new tokens were written one position too far "
                                                          "(from lengths[layer] + 1 on)", lambda: new.transpose(0, 1)[:, :-1])]))
            or "")


def _replay(cls: type, layers: int, heads: int, dim: int, max_len: int, steps: list[tuple[int, int]],
            seed: int, dtype: torch.dtype = torch.float32) -> None:
    """Run the same appends on the learner's cache and minikv's; raise at the first difference."""
    desc = f"KVCache(num_layers={layers}, num_kv_heads={heads}, head_dim={dim}, max_len={max_len}"
    desc += ")" if dtype == torch.float32 else f", dtype={dtype})"
    mine = call(cls, layers, heads, dim, max_len, dtype=dtype, device="cpu", context=desc)
    ref = ContiguousKVCache(layers, heads, dim, max_len, dtype=dtype)
    trace = Trace(desc)
    for n, (layer, t) in enumerate(steps):
        k = _randn(t, heads, dim, seed=seed * 1000 + 2 * n, dtype=dtype)
        v = _randn(t, heads, dim, seed=seed * 1000 + 2 * n + 1, dtype=dtype)
        start = ref.lengths[layer]
        trace.step(f"append(layer={layer}, {t} new token{'s' * (t != 1)})")
        pair = trace.mirror(lambda: ref.append(layer, k, v), lambda: mine.append(layer, k, v), KVCacheFull,
                            lambda: f"it needs {start + t} positions of max_len={max_len}")
        if pair is not None:
            want, got = pair
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                trace.fail(f"append returned {type(got).__name__}, expected a (keys, values) pair")
            expect_tensor(got[0], want[0], "the returned keys tensor", KV_DIMS, trace.where(),
                          diagnose=lambda: _layout_guess(got[0], k, start))
            expect_tensor(got[1], want[1], "the returned values tensor", KV_DIMS, trace.where())
        lengths = getattr(mine, "lengths", None)
        if lengths is None:
            raise CheckFailed("the cache has no `lengths` attribute (tokens stored per layer)")
        trace.expect(list(lengths), ref.lengths, "cache.lengths",
                     " (a KVCacheFull append must store nothing)" if pair is None else "")
        trace.expect(call(len, mine, context="len(cache)"), len(ref), "len(cache) (tokens in the last layer)")


@ex12.check("one append: shapes, values, lengths")
def _one_append(learner: Learner) -> None:
    _replay(learner.get("KVCache"), 2, 3, 4, 8, [(0, 3)], seed=1)


@ex12.check("appends accumulate, each layer on its own")
def _accumulate(learner: Learner) -> None:
    _replay(learner.get("KVCache"), 2, 2, 5, 12, [(0, 3), (1, 2), (0, 1), (1, 4), (0, 2), (1, 1)], seed=2)


@ex12.check("KVCacheFull past max_len, storing nothing")
def _full(learner: Learner) -> None:
    _replay(learner.get("KVCache"), 2, 2, 3, 5, [(0, 4), (0, 2), (1, 6), (0, 1), (1, 5), (0, 1)], seed=3)


@ex12.check("dtype is honoured (float16, float64)")
def _dtype(learner: Learner) -> None:
    cls = learner.get("KVCache")
    _replay(cls, 1, 2, 3, 4, [(0, 2), (0, 1)], seed=4, dtype=torch.float16)
    _replay(cls, 1, 2, 3, 4, [(0, 1), (0, 3)], seed=5, dtype=torch.float64)


@ex12.check("random append traces vs minikv's ContiguousKVCache")
def _random_traces(learner: Learner) -> None:
    cls = learner.get("KVCache")

    @st.composite
    def traces(draw: Any) -> tuple:
        layers = draw(st.integers(1, 3))
        steps = draw(st.lists(st.tuples(st.integers(0, layers - 1), st.integers(1, 5)), min_size=1, max_size=8))
        return layers, draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 12)), steps

    @forall(traces(), st.integers(0, 999), max_examples=40)
    def prop(trace: tuple, seed: int) -> None:
        layers, heads, dim, max_len, steps = trace
        _replay(cls, layers, heads, dim, max_len, steps, seed)

    prop()


# ---- 1.3 decode attention ----------------------------------------------------------------------------

ex13 = register(Exercise(
    "1.3", "decode attention", MODULE, ("decode_attention",),
    hint="query head h reads KV head h // (num_heads // num_kv_heads); scores = scale * keys[g] @ q[h], "
         "softmax over the cached positions (the last axis), then weights @ values[g]",
))


def _attention_case(heads: int, kv_heads: int, length: int, dim: int, seed: int) -> tuple[torch.Tensor, ...]:
    return (_randn(heads, dim, seed=seed), _randn(kv_heads, length, dim, seed=seed + 1),
            _randn(kv_heads, length, dim, seed=seed + 2))


def _diagnose(got: torch.Tensor, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> str:
    """Name a known mistake that ``got`` matches, if any."""
    heads, kv_heads = q.shape[0], keys.shape[0]
    group = heads // kv_heads
    k, v = keys.repeat_interleave(group, dim=0), values.repeat_interleave(group, dim=0)
    guesses: list[tuple[str, Callable[[], torch.Tensor]]] = [
        ("the scale is missing", lambda: ref_decode_attention(q, keys, values, 1.0)),
        ("the scale is applied twice", lambda: ref_decode_attention(q, keys, values, scale * scale)),
        ("the softmax runs over the query heads (dim 0); it should run over the cached positions (the last axis)",
         lambda: torch.einsum("hl,hld->hd", (torch.einsum("hd,hld->hl", q, k) * scale).softmax(dim=0), v)),
    ]
    if 1 < kv_heads < heads:
        modulo = torch.arange(heads) % kv_heads
        guesses.append((f"query head h reads KV head h % {kv_heads}; it should read h // {group}",
                        lambda: ref_decode_attention(q, keys[modulo], values[modulo], scale)))
    return looks_like(got, guesses)


def _expect_attention(fn: Callable[..., Any], q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      scale: float, want: torch.Tensor | None = None) -> None:
    heads, dim = q.shape
    kv_heads, length, _ = keys.shape
    desc = (f"for num_heads={heads}, num_kv_heads={kv_heads}, length={length}, head_dim={dim}, scale={scale:.3g}")
    got = call(fn, q.clone(), keys.clone(), values.clone(), scale, context=f"decode_attention {desc}")
    want = ref_decode_attention(q, keys, values, scale) if want is None else want
    expect_tensor(got, want, "decode_attention's output", ("head", "dim"), desc,
                  diagnose=lambda: _diagnose(got, q, keys, values, scale))


@ex13.check("one cached token: the output is its value")
def _one_token(learner: Learner) -> None:
    q, keys, values = _attention_case(4, 2, 1, 8, seed=10)
    _expect_attention(learner.get("decode_attention"), q, keys, values, 8 ** -0.5,
                      want=values.repeat_interleave(2, dim=0)[:, 0])


@ex13.check("equal keys: the output is the mean of the values")
def _equal_keys(learner: Learner) -> None:
    q, _, values = _attention_case(2, 2, 5, 4, seed=20)
    keys = _randn(2, 1, 4, seed=21).expand(2, 5, 4).contiguous()
    _expect_attention(learner.get("decode_attention"), q, keys, values, 0.5, want=values.mean(dim=1))


@ex13.check("multi-head (4 heads), scale 0.3, vs minikv's")
def _mha(learner: Learner) -> None:
    q, keys, values = _attention_case(4, 4, 7, 8, seed=30)
    _expect_attention(learner.get("decode_attention"), q * 3, keys, values, 0.3)


@ex13.check("grouped-query (6 heads on 2 KV heads) vs minikv's")
def _gqa(learner: Learner) -> None:
    q, keys, values = _attention_case(6, 2, 5, 5, seed=40)
    _expect_attention(learner.get("decode_attention"), q, keys, values, 5 ** -0.5)


@ex13.check("random shapes (MHA, GQA, MQA; lengths 1-40; odd head dims) vs minikv's")
def _random_shapes(learner: Learner) -> None:
    fn = learner.get("decode_attention")

    @forall(st.integers(1, 4), st.sampled_from([1, 2, 3, 4]), st.integers(1, 40), st.integers(1, 17),
            st.floats(0.05, 2.0), st.integers(0, 999), max_examples=50)
    def prop(kv_heads: int, group: int, length: int, dim: int, scale: float, seed: int) -> None:
        q, keys, values = _attention_case(kv_heads * group, kv_heads, length, dim, seed)
        _expect_attention(fn, q, keys, values, scale)

    prop()


def _cache_is_right(cls: Any) -> bool:
    """True when ``cls`` reproduces a fixed trace of minikv's cache (so it can serve in 1.3's engine check)."""
    if not isinstance(cls, type):
        return False
    try:
        _replay(cls, 2, 2, 3, 6, [(0, 3), (1, 3), (0, 1), (1, 1), (0, 3)], seed=6)
        return True
    except Exception:  # noqa: BLE001 - includes NotImplementedError: not written yet
        return False


@engine_check(ex12, "serves LLM('tiny-llama') like minikv's cache", WORKLOAD, REFERENCE)
def _engine_cache(learner: Learner) -> Plug:
    return Plug({"kv_cache_cls": learner.get("KVCache"), "decode_attention": ref_decode_attention}, "your KVCache")


@engine_check(ex13, "serves LLM('tiny-llama') like minikv's attention", WORKLOAD, REFERENCE)
def _engine_attention(learner: Learner) -> Plug:
    fn, cache = learner.get("decode_attention"), learner.find("KVCache")
    if _cache_is_right(cache):
        return Plug({"kv_cache_cls": cache, "decode_attention": fn}, "your decode_attention and your KVCache")
    return Plug({"kv_cache_cls": ContiguousKVCache, "decode_attention": fn},
                "your decode_attention (and minikv's cache: your KVCache is not done yet)")


__all__ = ["MAX_TOKENS", "PROMPTS", "REFERENCE", "WORKLOAD"]
