"""Exercise 2.4, paged decode attention. Its final check plugs the learner's function into
``LLM("tiny-llama", paged_decode_attention=...)`` (CPU, blocks of 4 tokens) and compares greedy
tokens with the engine's own paged attention."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from hypothesis import strategies as st

from minikv.attention.torch_ref import paged_decode_attention as ref_paged_decode_attention
from minikv.grade.compare import call, expect_tensor, forall, looks_like, short
from minikv.grade.engine import Plug, Workload, engine_check
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.kv.block_table import cdiv

MODULE = "ch02_paged_kv"
PROMPTS = ("Paged blocks", "hello hello hello hello", "a block table maps positions to slots", "0123456789")
MAX_TOKENS = 16
ENGINE_BLOCK_SIZE = 4

ex24 = register(Exercise(
    "2.4", "paged decode attention", MODULE, ("paged_decode_attention",),
    hint="for each sequence b take its first ceil(context_lens[b] / block_size) blocks from block_tables[b], "
         "k_cache[blocks] -> [n_blocks, block_size, Hkv, D], flatten to tokens and keep the first context_lens[b]; "
         "query head h reads KV head h // (Hq // Hkv); softmax(scale * K @ q) @ V",
))

OUT_DIMS = ("sequence", "head", "dim")


def _paged_case(lens: list[int], bs: int, kv_heads: int, group: int, dim: int, seed: int,
                pad: int = -1, spare: int = 3) -> tuple[torch.Tensor, ...]:
    """q, k_cache, v_cache, block_tables, context_lens: sequences in shuffled blocks, junk everywhere else."""
    gen = torch.Generator().manual_seed(seed)
    need = [cdiv(n, bs) for n in lens]
    num_blocks = sum(need) + spare
    order = torch.randperm(num_blocks, generator=gen).tolist()
    tables, at = [], 0
    for k in need:
        tables.append(order[at:at + k])
        at += k
    width = max(need) + 1
    pad_value = num_blocks - 1 if pad == "last" else pad
    block_tables = torch.full((len(lens), width), pad_value, dtype=torch.long)
    for b, t in enumerate(tables):
        block_tables[b, :len(t)] = torch.tensor(t, dtype=torch.long)
    # the slots no sequence owns, and those past a sequence's length, hold large junk: reading them shows
    k_cache = torch.randn(num_blocks, bs, kv_heads, dim, generator=gen) * 4
    v_cache = torch.randn(num_blocks, bs, kv_heads, dim, generator=gen) * 4 + 3
    for t, n in zip(tables, lens):
        flat_k, flat_v = k_cache[t].flatten(0, 1), v_cache[t].flatten(0, 1)
        flat_k[:n] = torch.randn(n, kv_heads, dim, generator=gen)
        flat_v[:n] = torch.randn(n, kv_heads, dim, generator=gen)
        k_cache[t] = flat_k.view(len(t), bs, kv_heads, dim)
        v_cache[t] = flat_v.view(len(t), bs, kv_heads, dim)
    q = torch.randn(len(lens), kv_heads * group, dim, generator=gen)
    return q, k_cache, v_cache, block_tables, torch.tensor(lens, dtype=torch.long)


def _diagnose(got: Any, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
              lens: list[int], scale: float) -> str:
    """Name a known mistake that ``got`` matches: minikv's attention on inputs that make the same mistake."""
    heads, kv_heads, bs = q.shape[1], k_cache.shape[2], k_cache.shape[1]

    def ref(k: torch.Tensor = k_cache, v: torch.Tensor = v_cache, t: torch.Tensor = tables, n: list[int] = lens,
            s: float = scale) -> torch.Tensor:
        return ref_paged_decode_attention(q, k, v, t, torch.tensor(n, dtype=torch.long), s)

    modulo = torch.arange(heads) % kv_heads
    in_order = torch.arange(tables.shape[1]).expand_as(tables).contiguous()
    guesses: list[tuple[str, Callable[[], torch.Tensor]]] = []
    if any(n % bs for n in lens):
        guesses.append(("positions >= context_lens[b] in the last block are not masked out (read exactly "
                        "context_lens[b] tokens)", lambda: ref(n=[cdiv(n, bs) * bs for n in lens])))
    if 1 < kv_heads < heads:
        guesses.append((f"query head h reads KV head h % {kv_heads}; it should read h // {heads // kv_heads}",
                        lambda: ref(k=k_cache[:, :, modulo], v=v_cache[:, :, modulo])))
    guesses += [("the block table is ignored (blocks 0, 1, 2, ... read in order)", lambda: ref(t=in_order)),
                ("the scale is missing", lambda: ref(s=1.0))]
    if all(n > 1 for n in lens):
        guesses.append(("the last token (the new one) is left out: read context_lens[b] tokens, not context_lens[b] - 1",
                        lambda: ref(n=[n - 1 for n in lens])))
    return looks_like(got, guesses, atol=1e-4)


def _expect_paged(fn: Callable[..., Any], q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  tables: torch.Tensor, lens: torch.Tensor, scale: float | None, want: torch.Tensor | None = None,
                  lens_as_list: bool = False) -> None:
    batch, heads, dim = q.shape
    _, bs, kv_heads, _ = k_cache.shape
    lens_list = lens.tolist()
    desc = (f"for context_lens={short(lens_list, 8)}, block_size={bs}, num_heads={heads}, num_kv_heads={kv_heads}, "
            f"head_dim={dim}, scale={'None' if scale is None else f'{scale:.3g}'}, block_tables={short(tables.tolist(), 3)}")
    args = (q.clone(), k_cache.clone(), v_cache.clone(), tables.clone(), lens_list if lens_as_list else lens.clone())
    got = call(fn, *args, scale, context=f"paged_decode_attention {desc}")
    if want is None:
        want = ref_paged_decode_attention(q, k_cache, v_cache, tables, lens, scale)
    def diagnose() -> str:
        extra = _diagnose(got, q, k_cache, v_cache, tables, lens_list, 1 / math.sqrt(dim) if scale is None else scale)
        if not extra and scale is None and isinstance(got, torch.Tensor) and got.shape == q.shape:
            if torch.allclose(got, ref_paged_decode_attention(q, k_cache, v_cache, tables, lens, 1.0), atol=1e-4):
                extra = "; looks like scale=None was taken as 1: the default is 1 / sqrt(head_dim)"
        return extra

    expect_tensor(got, want, "the output", OUT_DIMS, desc, diagnose=diagnose)


@ex24.check("one sequence, one cached token: the output is its value")
def _one_token(learner: Learner) -> None:
    q, kc, vc, tables, lens = _paged_case([1], 4, kv_heads=2, group=2, dim=8, seed=1)
    want = vc[tables[0, 0], 0].repeat_interleave(2, dim=0)[None]  # [1, 4, 8]: heads 0,1 read KV head 0
    _expect_paged(learner.get("paged_decode_attention"), q, kc, vc, tables, lens, 8 ** -0.5, want=want)


@ex24.check("one sequence in three scattered blocks, the last one partly filled")
def _scattered_blocks(learner: Learner) -> None:
    q, kc, vc, tables, lens = _paged_case([10], 4, kv_heads=2, group=1, dim=8, seed=2)
    _expect_paged(learner.get("paged_decode_attention"), q, kc, vc, tables, lens, 0.3)


@ex24.check("a batch of different lengths, tables padded with -1 and 0, context_lens as a list")
def _batch(learner: Learner) -> None:
    fn = learner.get("paged_decode_attention")
    q, kc, vc, tables, lens = _paged_case([5, 1, 13, 8], 4, kv_heads=2, group=2, dim=6, seed=3)
    _expect_paged(fn, q, kc, vc, tables, lens, 0.4)
    q, kc, vc, tables, lens = _paged_case([3, 9, 2], 4, kv_heads=1, group=3, dim=4, seed=4, pad=0)
    _expect_paged(fn, q, kc, vc, tables, lens, 0.5, lens_as_list=True)


@ex24.check("grouped-query (6 heads on 2 KV heads) and the default scale")
def _gqa(learner: Learner) -> None:
    fn = learner.get("paged_decode_attention")
    q, kc, vc, tables, lens = _paged_case([7, 12], 4, kv_heads=2, group=3, dim=5, seed=5)
    _expect_paged(fn, q, kc, vc, tables, lens, 5 ** -0.5)
    q, kc, vc, tables, lens = _paged_case([6, 3], 2, kv_heads=3, group=3, dim=16, seed=6, pad="last")
    _expect_paged(fn, q * 2, kc, vc, tables, lens, None)


@ex24.check("block sizes 1, 16 and 32, lengths on block boundaries")
def _boundary_lengths(learner: Learner) -> None:
    fn = learner.get("paged_decode_attention")
    for bs, lens, seed in ((1, [1, 4, 2], 7), (16, [16, 32, 15, 17], 8), (32, [32, 64, 1, 33], 9)):
        q, kc, vc, tables, lens_t = _paged_case(lens, bs, kv_heads=2, group=2, dim=8, seed=seed)
        _expect_paged(fn, q, kc, vc, tables, lens_t, 8 ** -0.5)


@ex24.check("random batches (MHA, GQA, MQA; block sizes 1/16/32 and others) vs minikv's")
def _random_paged(learner: Learner) -> None:
    fn = learner.get("paged_decode_attention")

    @st.composite
    def lengths(draw: Any) -> tuple[int, list[int]]:
        bs = draw(st.sampled_from([1, 16, 32, 2, 3, 8]))
        one = st.one_of(st.integers(1, 3 * bs + 2), st.integers(1, 3).map(lambda k: k * bs))  # on a boundary, often
        return bs, draw(st.lists(one, min_size=1, max_size=4))

    @forall(lengths(), st.integers(1, 3), st.sampled_from([1, 2, 3, 4]), st.integers(1, 12),
            st.floats(0.05, 1.5), st.sampled_from([-1, 0, "last"]), st.integers(0, 999), max_examples=40)
    def prop(case: tuple[int, list[int]], kv_heads: int, group: int, dim: int, scale: float, pad: Any, seed: int) -> None:
        bs, lens = case
        q, kc, vc, tables, lens_t = _paged_case(lens, bs, kv_heads, group, dim, seed, pad=pad)
        _expect_paged(fn, q, kc, vc, tables, lens_t, scale)

    prop()


WORKLOAD = Workload("ch02", rounds=(PROMPTS,), max_tokens=MAX_TOKENS, options={"block_size": ENGINE_BLOCK_SIZE},
                    ignore_eos=True)


@engine_check(ex24, "serves LLM('tiny-llama') like minikv's paged attention", WORKLOAD, {})
def _engine(learner: Learner) -> Plug:
    return Plug({"paged_decode_attention": learner.get("paged_decode_attention")}, "your paged_decode_attention")
