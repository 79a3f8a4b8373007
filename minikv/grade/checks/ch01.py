"""Chapter 01 (the KV cache): exercises 1.1 KV bytes per token, 1.2 contiguous KV cache, 1.3 decode attention.

References: :func:`minikv.kv.pool.bytes_per_token`, :class:`minikv.kv.contiguous.ContiguousKVCache`,
:func:`minikv.attention.reference.decode_attention`. The final checks plug the
learner's piece into ``LLM("tiny-llama")`` (on the CPU) and compare greedy
tokens with the same engine running minikv's own pieces.

Exercise 1.3's engine check uses the learner's ``KVCache`` too when it is
finished and right (it reproduces a fixed trace of minikv's cache); otherwise
minikv's ``ContiguousKVCache``, so 1.3's grade depends on 1.3's code alone.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from hypothesis import strategies as st

from minikv.attention.reference import decode_attention as ref_decode_attention
from minikv.errors import KVCacheFull
from minikv.grade.compare import CheckFailed, call, expect_equal, expect_tensor, forall, one_line
from minikv.grade.memo import shared
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.kv.contiguous import ContiguousKVCache
from minikv.kv.pool import bytes_per_token

MODULE = "ch01_kv_cache"
PROMPTS = ("The KV cache keeps", "hello hello hello", "0123456789 abc")
MAX_TOKENS = 16
KV_DIMS = ("kv head", "position", "dim")


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ---- the engine, shared by 1.2 and 1.3 ---------------------------------------------------------

def engine_tokens(kv_cache_cls: type, decode_attention: Callable[..., torch.Tensor]) -> list[list[int]]:
    """Greedy tokens of ``LLM("tiny-llama")`` (CPU) for PROMPTS with these pieces plugged in."""
    from minikv import LLM, SamplingParams

    llm = LLM("tiny-llama", device="cpu", kv_cache_cls=kv_cache_cls, decode_attention=decode_attention)
    outputs = llm.generate(list(PROMPTS), SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0))
    return [list(o.token_ids) for o in outputs]


@shared
def reference_tokens() -> tuple[tuple[int, ...], ...]:
    """What minikv's own ContiguousKVCache and decode_attention produce (computed once per grading session)."""
    return tuple(tuple(t) for t in engine_tokens(ContiguousKVCache, ref_decode_attention))


def _expect_same_tokens(got: list[list[int]], pieces: str) -> str:
    want = reference_tokens()
    for p, (g, w) in enumerate(zip(got, want)):
        if list(g) != list(w):
            same = next((i for i, (a, b) in enumerate(zip(g, w)) if a != b), min(len(g), len(w)))
            what = (f"token {same} is {g[same]}, minikv's gives {w[same]}" if same < min(len(g), len(w))
                    else f"{len(g)} tokens came out, minikv's gives {len(w)}")
            raise CheckFailed(one_line(
                f"with {pieces}, LLM('tiny-llama') generates differently for prompt {p} ({PROMPTS[p]!r}): "
                f"{what} (the first {same} agree)"
            ))
    return f"{len(PROMPTS)} prompts x {MAX_TOKENS} greedy tokens match minikv's, with {pieces}"


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


def _new_cache(cls: type, layers: int, heads: int, dim: int, max_len: int, dtype: torch.dtype = torch.float32) -> Any:
    desc = f"KVCache(num_layers={layers}, num_kv_heads={heads}, head_dim={dim}, max_len={max_len}"
    desc += ")" if dtype == torch.float32 else f", dtype={dtype})"
    return call(cls, layers, heads, dim, max_len, dtype=dtype, device="cpu", context=desc), desc


def _replay(cls: type, layers: int, heads: int, dim: int, max_len: int, steps: list[tuple[int, int]],
            seed: int, dtype: torch.dtype = torch.float32) -> None:
    """Run the same appends on the learner's cache and minikv's; raise at the first difference."""
    mine, desc = _new_cache(cls, layers, heads, dim, max_len, dtype)
    ref = ContiguousKVCache(layers, heads, dim, max_len, dtype=dtype)
    done: list[tuple[int, int]] = []
    for n, (layer, t) in enumerate(steps):
        k = _randn(t, heads, dim, seed=seed * 1000 + 2 * n, dtype=dtype)
        v = _randn(t, heads, dim, seed=seed * 1000 + 2 * n + 1, dtype=dtype)
        step = (f"append #{n + 1} (layer {layer}, {t} new token{'s' * (t != 1)}; "
                f"earlier (layer, tokens): {done or 'none'}) on {desc}")
        where = f"at {step}"
        try:
            want = ref.append(layer, k, v)
        except KVCacheFull:
            want = None
        if want is None:
            try:
                mine.append(layer, k, v)
            except KVCacheFull:
                pass
            except NotImplementedError:
                raise
            except Exception as exc:
                raise CheckFailed(one_line(f"{step}: append raised {type(exc).__name__} instead of KVCacheFull: {exc}")) from exc
            else:
                raise CheckFailed(one_line(f"append did not raise KVCacheFull {where}, which needs "
                                           f"{ref.lengths[layer] + t} > max_len={max_len} positions"))
        else:
            got = call(mine.append, layer, k, v, context=step)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise CheckFailed(one_line(f"append returned {type(got).__name__}, expected a (keys, values) pair {where}"))
            expect_tensor(got[0], want[0], "the returned keys tensor", KV_DIMS, where)
            expect_tensor(got[1], want[1], "the returned values tensor", KV_DIMS, where)
            done.append((layer, t))
        lengths = getattr(mine, "lengths", None)
        if lengths is None:
            raise CheckFailed("the cache has no `lengths` attribute (tokens stored per layer)")
        expect_equal(list(lengths), ref.lengths, "cache.lengths", where + (" (KVCacheFull must store nothing)" if want is None else ""))
        expect_equal(call(len, mine, context="len(cache)"), len(ref), "len(cache)", f"(tokens in the last layer) {where}")


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


@ex12.check("serves LLM('tiny-llama') like minikv's cache", final=True)
def _engine_cache(learner: Learner) -> str:
    return _expect_same_tokens(engine_tokens(learner.get("KVCache"), ref_decode_attention), "your KVCache")


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
    guesses: list[tuple[str, Callable[[], torch.Tensor]]] = [
        ("the scale is missing", lambda: ref_decode_attention(q, keys, values, 1.0)),
        ("the scale is applied twice", lambda: ref_decode_attention(q, keys, values, scale * scale)),
    ]
    if 1 < kv_heads < heads:
        modulo = torch.arange(heads) % kv_heads
        guesses.append((f"query head h reads KV head h % {kv_heads}; it should read h // {heads // kv_heads}",
                        lambda: torch.stack([ref_decode_attention(q[h:h + 1], keys[g:g + 1], values[g:g + 1], scale)[0]
                                             for h, g in enumerate(modulo.tolist())])))
    for text, make in guesses:
        try:
            if isinstance(got, torch.Tensor) and got.shape == q.shape and torch.allclose(got.float(), make(), atol=1e-5, rtol=1e-4):
                return f"; looks like {text}"
        except Exception:  # noqa: BLE001 - a diagnosis is best effort
            continue
    return ""


def _expect_attention(fn: Callable[..., Any], q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      scale: float, want: torch.Tensor | None = None) -> None:
    heads, dim = q.shape
    kv_heads, length, _ = keys.shape
    desc = (f"for num_heads={heads}, num_kv_heads={kv_heads}, length={length}, head_dim={dim}, scale={scale:.3g}")
    got = call(fn, q.clone(), keys.clone(), values.clone(), scale, context=f"decode_attention {desc}")
    want = ref_decode_attention(q, keys, values, scale) if want is None else want
    try:
        expect_tensor(got, want, "decode_attention's output", ("head", "dim"), desc)
    except CheckFailed as exc:
        raise CheckFailed(str(exc) + _diagnose(got, q, keys, values, scale)) from None


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


@ex13.check("serves LLM('tiny-llama') like minikv's attention", final=True)
def _engine_attention(learner: Learner) -> str:
    fn = learner.get("decode_attention")
    cache = learner.find("KVCache")
    if _cache_is_right(cache):
        return _expect_same_tokens(engine_tokens(cache, fn), "your decode_attention and your KVCache")
    return _expect_same_tokens(engine_tokens(ContiguousKVCache, fn),
                               "your decode_attention (and minikv's cache: your KVCache is not done yet)")


__all__ = ["PROMPTS", "engine_tokens", "reference_tokens"]
