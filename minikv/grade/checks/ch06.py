"""Chapter 06 (Triton paged attention): exercises 6.1 block-table gather, 6.2 online-softmax decode, 6.3 prefix mask.

The learner writes ``@triton.jit`` kernels; these checks launch them (the
grid and arguments their docstrings promise) on seeded pools full of
distinct random junk, with shuffled block tables, and compare with
:mod:`minikv.attention.torch_ref`. Without a CUDA GPU the kernels run in
Triton's CPU interpreter: this module sets ``TRITON_INTERPRET=1`` (when it
is unset) before the learner's file is imported, and keeps every shape
small because the interpreter is slow. 6.2's final check plugs the kernel
into ``LLM("tiny-llama", paged_decode_attention=...)`` and compares greedy tokens.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from minikv.attention import torch_ref  # noqa: E402
from minikv.grade.compare import CheckFailed, describe_exception, expect_tensor, one_line  # noqa: E402
from minikv.grade.engine import Plug, Workload, engine_check  # noqa: E402
from minikv.grade.registry import Exercise, register  # noqa: E402
from minikv.grade.runner import Learner  # noqa: E402

MODULE = "ch06_triton_attention"
DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1" else "cpu"
PROMPTS = ("Paged blocks", "a block table maps positions to slots", "0123456789")
MAX_TOKENS, ENGINE_BLOCK_SIZE = 10, 4
GUARD = 1234.5  # what out holds past the rows a kernel may write


def _p2(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())  # a power of two >= n and >= 16


def _launch(kernel: Any, grid: tuple[int, ...], what: str, *args: Any, **meta: Any) -> None:
    """``kernel[grid](*args, **meta)``; a stub's NotImplementedError comes through as TODO, any other error as a FAIL."""
    try:
        kernel[grid](*args, **meta)
    except NotImplementedError:
        raise
    except TypeError as exc:
        if "not subscriptable" in str(exc):
            raise CheckFailed(f"{what}: the kernel is not a @triton.jit function ({exc})") from None
        raise CheckFailed(one_line(f"launching {what} raised {describe_exception(exc)}")) from exc
    except Exception as exc:  # noqa: BLE001 - the interpreter wraps the learner's error: show the original
        cause = exc
        while cause.__cause__ is not None and type(cause).__name__ in ("InterpreterError", "CompilationError"):
            cause = cause.__cause__
        if isinstance(cause, NotImplementedError) or "NotImplementedError" in str(exc):
            raise (cause if isinstance(cause, NotImplementedError) else NotImplementedError(str(exc))) from None
        raise CheckFailed(one_line(f"launching {what} raised {describe_exception(cause)}")) from exc


class Case:
    """One layer of a paged pool (distinct random values everywhere) and shuffled tables for ``lens`` tokens."""

    def __init__(self, lens: list[int], bs: int, kv_heads: int, dim: int, seed: int, pad: int | str = -1) -> None:
        gen = torch.Generator().manual_seed(seed)
        need = [-(-n // bs) for n in lens]
        self.num_blocks = sum(need) + 3  # blocks no sequence owns
        order = torch.randperm(self.num_blocks, generator=gen).tolist()
        self.spare = order[sum(need):]
        width = max(need) + 2
        rows, at = [], 0
        for k in need:
            fill = self.spare[0] if pad == "spare" else pad
            rows.append(order[at:at + k] + [fill] * (width - k))
            at += k
        shape = (self.num_blocks, bs, kv_heads, dim)
        self.k = torch.randn(shape, generator=gen).to(DEVICE)
        self.v = (torch.randn(shape, generator=gen) + 1).to(DEVICE)
        self.tables = torch.tensor(rows, dtype=torch.long, device=DEVICE)
        self.lens, self.bs, self.kv_heads, self.dim, self.gen = list(lens), bs, kv_heads, dim, gen

    def queries(self, n: int, heads: int, mult: float = 1.0) -> torch.Tensor:
        return (torch.randn(n, heads, self.dim, generator=self.gen) * mult).to(DEVICE)

    def desc(self) -> str:
        return (f"(context_lens={self.lens}, block_size={self.bs}, kv heads={self.kv_heads}, head_dim={self.dim}, "
                f"block_tables={self.tables[:, :6].tolist()})")


# ---- 6.1 block-table gather -------------------------------------------------------------------

ex61 = register(Exercise(
    "6.1", "block-table gather", MODULE, ("gather_kv_kernel",), needs_packages=("triton",),
    hint="pos = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T); block = tl.load(block_table_ptr + pos // BLOCK_SIZE, "
         "mask=pos < length); address = block * stride_cb + (pos % BLOCK_SIZE) * stride_co + head * stride_ch + d; "
         "one mask (pos < length) & (d < HEAD_DIM) for the load and the store",
))


def _where_from(c: Case, got_row: torch.Tensor, head: int) -> tuple[int, int] | None:
    """The (block, offset) of the pool whose values for ``head`` are ``got_row``, if any."""
    hits = (c.k[:, :, head] == got_row).all(-1).nonzero().tolist()
    return tuple(hits[0]) if hits else None


def _expect_gather(learner: Learner, c: Case, seq: int = 0, block_t: int = 16) -> None:
    kernel = learner.get("gather_kv_kernel")
    length, table = c.lens[seq], c.tables[seq]
    out = torch.full((length + block_t, c.kv_heads, c.dim), GUARD, device=DEVICE)  # rows >= length: must stay GUARD
    grid = (-(-length // block_t), c.kv_heads)
    _launch(kernel, grid, "gather_kv_kernel", c.k, table, out, length, c.k.stride(0), c.k.stride(1), c.k.stride(2),
            out.stride(0), out.stride(1), BLOCK_SIZE=c.bs, HEAD_DIM=c.dim, BLOCK_T=block_t, DIM_P=_p2(c.dim))
    desc = f"for length={length}, block_size={c.bs}, kv heads={c.kv_heads}, head_dim={c.dim}, table={table.tolist()}"
    if not bool((out[length:] == GUARD).all()):
        row = length + int((out[length:] != GUARD).flatten(1).any(1).nonzero()[0])
        raise CheckFailed(f"row {row} of out was written, but out has only {length} rows (positions >= length must be "
                          f"masked off in tl.store) {desc}")
    want = torch_ref.gather_kv(c.k, table, length)
    bad = ~(out[:length] == want).all(-1)  # [length, heads]
    if not bool(bad.any()):
        return
    pos, head = (int(i) for i in bad.nonzero()[0])
    b_i, off = pos // c.bs, pos % c.bs
    found = _where_from(c, out[pos, head], head)
    if found is None:
        expect_tensor(out[:length], want, "out", ("position", "kv head", "dim"), desc, atol=0, rtol=0)
    blk, o = found
    why = ""
    if o == off and blk == int(table[b_i + 1]):
        why = f"; that is table entry {b_i + 1}'s block: off by one in the block index (entry pos // BLOCK_SIZE)"
    elif o == off and blk == b_i:
        why = f"; {b_i} is the table entry's index, not its value: load block_table[pos // BLOCK_SIZE]"
    elif blk == int(table[b_i]):
        why = "; the right block, the wrong offset (pos % BLOCK_SIZE)"
    raise CheckFailed(one_line(f"out[{pos}] (kv head {head}) holds block {blk}, offset {o} of the cache; position {pos} "
                               f"lives in block {int(table[b_i])} (table entry {b_i}), offset {off}{why} {desc}"))


@ex61.check("one block of 4 tokens, one kv head")
def _one_block(learner: Learner) -> None:
    _expect_gather(learner, Case([4], 4, 1, 16, seed=1, pad="spare"))


@ex61.check("three scattered blocks, the last one partly filled; 2 kv heads, head_dim 24 (masked lanes)")
def _scattered(learner: Learner) -> None:
    _expect_gather(learner, Case([10], 4, 2, 24, seed=2, pad="spare"))


@ex61.check("block sizes 1, 2, 16 and 32, lengths at and around block boundaries, several programs")
def _boundaries(learner: Learner) -> None:
    for bs, n, seed in ((1, 5, 3), (2, 17, 4), (16, 32, 5), (16, 33, 6), (32, 31, 7)):
        _expect_gather(learner, Case([n], bs, 2, 16, seed=seed, pad="spare"))


@ex61.check("random lengths and tables (seeded) vs torch_ref.gather_kv")
def _random_gather(learner: Learner) -> None:
    gen = torch.Generator().manual_seed(61)
    for seed in range(6):
        bs = [1, 2, 4, 8, 16][int(torch.randint(5, (1,), generator=gen))]
        n, heads = int(torch.randint(1, 40, (1,), generator=gen)), int(torch.randint(1, 4, (1,), generator=gen))
        _expect_gather(learner, Case([n], bs, heads, [8, 16, 20][seed % 3], seed=100 + seed, pad="spare"))


# ---- 6.2 online-softmax decode ----------------------------------------------------------------

ex62 = register(Exercise(
    "6.2", "online-softmax decode", MODULE, ("decode_kernel",), needs_packages=("triton",),
    hint="per tile: m_new = max(m, rowmax(s)); alpha = exp(m - m_new); p = exp(s - m_new); l = l * alpha + sum(p); "
         "acc = acc * alpha + p @ v; m = m_new; scores at positions >= context_len are -inf; out = acc / l",
))


def launch_decode(kernel: Any, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  block_tables: torch.Tensor, context_lens: Any, scale: float | None = None) -> torch.Tensor:
    """Run the learner's ``decode_kernel`` as the solution's ``paged_decode_attention`` does (grid (batch, Hkv))."""
    batch, hq, dim = q.shape
    _, bs, hkv, _ = k_cache.shape
    out = torch.full_like(q, GUARD)
    q = q.contiguous()
    lens = torch.as_tensor(context_lens, device=q.device)
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    _launch(kernel, (batch, hkv), "decode_kernel", q, k_cache, v_cache, block_tables, lens, out, scale,
            q.stride(0), q.stride(1), block_tables.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            out.stride(0), out.stride(1), GROUP=hq // hkv, HEAD_DIM=dim, BLOCK_SIZE=bs, GROUP_P=_p2(hq // hkv),
            DIM_P=_p2(dim), BLOCK_N=max(16, bs))
    return out


def _tiled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n: int, scale: float, block_n: int,
           rescale: bool = True, tail_mask: bool = True, divide: bool = True) -> torch.Tensor:
    """One sequence's decode [Hq, D] over gathered k, v [n, Hq, D], tile by tile, with one mistake switched on."""
    hq, dim = q.shape
    m = torch.full((hq,), -math.inf, dtype=torch.float64)
    l_sum, acc = torch.zeros(hq, dtype=torch.float64), torch.zeros(hq, dim, dtype=torch.float64)
    for start in range(0, n, block_n):
        kt = torch.zeros(block_n, hq, dim, dtype=torch.float64)
        vt = torch.zeros_like(kt)
        stop = min(n, start + block_n)
        kt[:stop - start], vt[:stop - start] = k[start:stop], v[start:stop]
        s = torch.einsum("hd,nhd->hn", q.double(), kt) * scale
        if tail_mask:
            s[:, stop - start:] = -math.inf
        m_new = torch.maximum(m, s.max(1).values)
        p = torch.exp(s - m_new[:, None])
        alpha = torch.exp(m - m_new) if rescale else torch.ones(hq, dtype=torch.float64)
        l_sum = l_sum * alpha + p.sum(1)
        acc = acc * alpha[:, None] + torch.einsum("hn,nhd->hd", p, vt)
        m = m_new
    return (acc / l_sum[:, None] if divide else acc).float()


def _diagnose_decode(got: torch.Tensor, c: Case, q: torch.Tensor, scale: float) -> str:
    group = q.shape[1] // c.kv_heads
    guesses = (("the old l and acc are not rescaled by exp(m_old - m_new) when a tile raises the running max",
                dict(rescale=False)),
               ("the scores at positions >= context_len in the last tile are not set to -inf", dict(tail_mask=False)),
               ("acc is not divided by l at the end", dict(divide=False)))
    for text, flags in guesses:
        want = torch.empty_like(got)
        for b, n in enumerate(c.lens):
            k = torch_ref.gather_kv(c.k, c.tables[b, :-(-n // c.bs)], n).repeat_interleave(group, 1).cpu()
            v = torch_ref.gather_kv(c.v, c.tables[b, :-(-n // c.bs)], n).repeat_interleave(group, 1).cpu()
            want[b] = _tiled(q[b].cpu(), k, v, n, scale, max(16, c.bs), **flags).to(got.device)
        if torch.allclose(got, want, atol=1e-4, rtol=1e-4):
            return f"; looks like {text}"
    return ""


def _expect_decode(learner: Learner, c: Case, group: int, scale: float | None = None, mult: float = 1.0) -> None:
    q = c.queries(len(c.lens), c.kv_heads * group, mult)
    lens = torch.tensor(c.lens, device=DEVICE)
    got = launch_decode(learner.get("decode_kernel"), q, c.k, c.v, c.tables, lens, scale)
    want = torch_ref.paged_decode_attention(q, c.k, c.v, c.tables, lens, scale)
    desc = f"for {c.kv_heads * group} query heads on {c.kv_heads} kv heads {c.desc()}"
    never = (got == GUARD).all(-1)  # [batch, heads]
    if bool(never.any()):
        b, h = never.nonzero()[0].tolist()
        raise CheckFailed(f"out[{b}, {h}] was never written (every query head of every sequence must be stored) {desc}")
    try:
        expect_tensor(got, want, "the output", ("sequence", "head", "dim"), desc, atol=2e-5, rtol=2e-5)
    except CheckFailed as exc:
        used = 1 / math.sqrt(c.dim) if scale is None else scale
        raise CheckFailed(one_line(str(exc) + _diagnose_decode(got, c, q, used))) from None


@ex62.check("one sequence whose keys fit in one tile (no rescale needed yet)")
def _one_tile(learner: Learner) -> None:
    _expect_decode(learner, Case([7], 4, 1, 16, seed=11), group=2, scale=0.3)


@ex62.check("one sequence over three tiles, the running max rising from tile to tile")
def _three_tiles(learner: Learner) -> None:
    c = Case([44], 4, 1, 16, seed=12)
    c.k[c.tables[0, 4:11]] *= 3  # keys of positions 16..43 are larger: the max rises in the later tiles
    _expect_decode(learner, c, group=2, scale=0.5, mult=2.0)


@ex62.check("a batch of different lengths, 8 query heads on 2 kv heads, tables padded with -1, default scale")
def _batch(learner: Learner) -> None:
    _expect_decode(learner, Case([9, 1, 33, 16], 4, 2, 24, seed=13), group=4)


@ex62.check("block sizes 1, 16 and 32, lengths on block boundaries, one query head per kv head (MHA)")
def _block_sizes(learner: Learner) -> None:
    for bs, lens, seed in ((1, [3, 17], 14), (16, [16, 32, 17], 15), (32, [32, 1, 33], 16)):
        _expect_decode(learner, Case(lens, bs, 2, 16, seed=seed), group=1, scale=0.4)


@ex62.check("random batches (seeded): GQA and MQA, block sizes 2 to 16")
def _random_decode(learner: Learner) -> None:
    gen = torch.Generator().manual_seed(62)
    for seed in range(4):
        bs = [2, 4, 8, 16][seed]
        lens = torch.randint(1, 50, (int(torch.randint(1, 4, (1,), generator=gen)),), generator=gen).tolist()
        kv = int(torch.randint(1, 3, (1,), generator=gen))
        _expect_decode(learner, Case(lens, bs, kv, [8, 16, 32, 20][seed], seed=200 + seed), group=[1, 3, 4, 6][seed])


WORKLOAD = Workload("ch06", rounds=(PROMPTS,), max_tokens=MAX_TOKENS, ignore_eos=True,
                    options={"device": DEVICE, "dtype": torch.float32, "block_size": ENGINE_BLOCK_SIZE},
                    about=f"batched, blocks of {ENGINE_BLOCK_SIZE}")


@engine_check(ex62, "serves LLM('tiny-llama') like minikv's paged attention", WORKLOAD, {})
def _engine(learner: Learner) -> Plug:
    kernel = learner.get("decode_kernel")

    def decode(*args: Any) -> torch.Tensor:  # the learner's kernel behind torch_ref.paged_decode_attention's signature
        return launch_decode(kernel, *args)

    where = " in the interpreter" if DEVICE == "cpu" else ""
    return Plug({"paged_decode_attention": decode}, "your decode_kernel", note=f" (launched{where})")


# ---- 6.3 prefix and causal mask ---------------------------------------------------------------

ex63 = register(Exercise(
    "6.3", "prefix and causal mask", MODULE, ("prefill_kernel",), needs_packages=("triton",),
    hint="new token i of a sequence sits at position p = (context_len - q_len) + i; key k is visible iff k <= p: "
         "s = tl.where((pos < kv_end)[None, :] & (pos[None, :] <= q_pos[:, None]), s, -inf), then 6.2's online softmax",
))

MASKS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    # (key positions [1, n], new-token indices [q_len, 1], prefix_len) -> visible [q_len, n]
    "new tokens see the future (k < context_len alone is not the mask: also k <= the token's position)":
        lambda k, i, pre: torch.ones_like(k + i, dtype=torch.bool),
    "a new token sees only keys 0..i: its position is prefix_len + i, and the whole cached prefix is visible":
        lambda k, i, pre: k <= i,
    "a token does not see itself (k < p instead of k <= p)": lambda k, i, pre: k < pre + i,
}


def _masked_prefill(q: torch.Tensor, c: Case, starts: list[int], scale: float, visible: Callable[..., Any]) -> torch.Tensor:
    group = q.shape[1] // c.kv_heads
    out = torch.empty_like(q)
    for b, n in enumerate(c.lens):
        k = torch_ref.gather_kv(c.k, c.tables[b, :-(-n // c.bs)], n).repeat_interleave(group, 1)
        v = torch_ref.gather_kv(c.v, c.tables[b, :-(-n // c.bs)], n).repeat_interleave(group, 1)
        qb = q[starts[b]:starts[b + 1]]
        ok = visible(torch.arange(n, device=q.device)[None, :], torch.arange(len(qb), device=q.device)[:, None], n - len(qb))
        s = torch.einsum("qhd,khd->hqk", qb, k) * scale
        out[starts[b]:starts[b + 1]] = torch.einsum("hqk,khd->qhd", s.masked_fill(~ok, -math.inf).softmax(-1), v)
    return out


def _expect_prefill(learner: Learner, c: Case, q_lens: list[int], group: int, scale: float = 0.35) -> None:
    starts = [0]
    for n in q_lens:
        starts.append(starts[-1] + n)
    q = c.queries(starts[-1], c.kv_heads * group)
    out = torch.full_like(q, GUARD)
    st, lens = torch.tensor(starts, device=DEVICE), torch.tensor(c.lens, device=DEVICE)
    grid = (len(c.lens), q.shape[1], -(-max(q_lens) // 16))
    _launch(learner.get("prefill_kernel"), grid, "prefill_kernel", q, c.k, c.v, c.tables, st, lens, out, scale,
            q.stride(0), q.stride(1), c.tables.stride(0), c.k.stride(0), c.k.stride(1), c.k.stride(2),
            out.stride(0), out.stride(1), GROUP=group, HEAD_DIM=c.dim, BLOCK_SIZE=c.bs, BLOCK_Q=16,
            DIM_P=_p2(c.dim), BLOCK_N=max(16, c.bs))
    want = torch_ref.paged_attention(q, c.k, c.v, c.tables, starts, c.lens, scale)
    prefixes = [n - m for n, m in zip(c.lens, q_lens)]
    desc = f"for new tokens {q_lens} after cached prefixes of {prefixes} tokens, {q.shape[1]} query heads {c.desc()}"
    try:
        expect_tensor(out, want, "the output", ("token", "head", "dim"), desc, atol=2e-5, rtol=2e-5)
    except CheckFailed as exc:
        for text, visible in MASKS.items():
            if torch.allclose(out, _masked_prefill(q, c, starts, scale, visible), atol=1e-4, rtol=1e-4, equal_nan=True):
                raise CheckFailed(one_line(f"{exc}; looks like {text}")) from None
        raise


@ex63.check("no prefix: causal prefill of one 20-token sequence")
def _causal(learner: Learner) -> None:
    _expect_prefill(learner, Case([20], 4, 1, 16, seed=21), [20], group=1)


@ex63.check("a prefix hit: 5 new tokens after 27 cached ones, 2 query heads per kv head")
def _prefix_hit(learner: Learner) -> None:
    _expect_prefill(learner, Case([32], 4, 1, 16, seed=22), [5], group=2)


@ex63.check("one launch for a mixed batch: a prefill, a prefix hit, a chunk of 18 after 16, a decode token")
def _mixed(learner: Learner) -> None:
    _expect_prefill(learner, Case([12, 21, 34, 9], 4, 2, 16, seed=23), [12, 3, 18, 1], group=2)


@ex63.check("random batches (seeded): block sizes 1 to 16, prefixes on and off block boundaries")
def _random_prefill(learner: Learner) -> None:
    gen = torch.Generator().manual_seed(63)
    for seed in range(3):
        q_lens = torch.randint(1, 20, (2,), generator=gen).tolist()
        lens = [m + int(torch.randint(0, 25, (1,), generator=gen)) for m in q_lens]
        _expect_prefill(learner, Case(lens, [1, 8, 16][seed], 1, 16, seed=300 + seed), q_lens, group=[1, 2, 3][seed])


__all__ = ["PROMPTS", "engine_tokens", "launch_decode", "reference_tokens"]
