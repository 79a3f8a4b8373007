"""Chapter 06: paged attention in Triton. Edit here, then run ``python tools/make_notebooks/build.py``."""

from nbtools import code, md

PATH = "chapters/06_triton_attention.ipynb"

CELLS = [
    md(r"""
    # Chapter 06 · Paged attention in Triton: read the blocks where they lie

    Chapter 02's paged attention, and minikv's engine until now, *gather* first: every decode step
    copies each sequence's blocks into one contiguous tensor, then runs ordinary attention on the
    copy. The copy reads every cached key and value and writes it out again before attention reads it
    a second time, in every layer of every step. It also undoes the gift of chapters 03 and 04: a prefix-cache hit saves the
    prefill's compute, then pays to copy the whole cached prefix around. Measured for this project on
    an H200, with a model of SmolLM2's shape on that PyTorch path, a hit of 1,024 cached + 64 new
    tokens took **37.7 ms**, a miss **26.7 ms**.

    The cure is a kernel that walks the block table itself and reads every key and value in place, in
    the pool. vLLM's PagedAttention kernels, FlashAttention's and FlashInfer's paged modes and SGLang's
    Triton backend all do this. We write one in **Triton**, a Python language for GPU kernels. Triton
    also has an *interpreter* that runs the same kernels on a CPU, slowly, with numpy underneath, and
    that is how this chapter runs on a laptop.

    In this chapter you will

    * learn Triton's model on a vector add: **programs**, **blocks** of lanes, **masks**, pointer arithmetic;
    * build paged decode attention in three steps: gather a block through the table, an **online
      softmax** across blocks, the query heads of one KV head as the rows of one tile;
    * see that prefill over a cached prefix is the same loop with one mask, `key <= position`;
    * write the three pieces yourself (6.1 the block-table gather, 6.2 the online-softmax decode
      kernel, 6.3 the prefix and causal mask) and run your kernel inside minikv's engine;
    * reason about what changes on a real GPU: tensor cores, split-K, launches, CUDA graphs, and how
      many bytes a decode step must read.

    Everything here is checked against `minikv.attention.torch_ref`, the plain PyTorch spec of
    every attention path in minikv.
    """),
    code(r"""
    %matplotlib inline
    import math
    import os

    import torch

    # Without a GPU, Triton kernels run in its CPU interpreter. The variable must be set before triton is
    # imported (it is read when a kernel is defined). The interpreter computes in numpy: use fp32 there.
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")

    import matplotlib.pyplot as plt
    import triton
    import triton.language as tl
    from matplotlib.patches import Rectangle

    import minikv.grade
    from minikv.attention import torch_ref
    from minikv.attention.triton_decode import triton_paged_decode_attention
    from minikv.attention.triton_prefill import triton_paged_attention

    # CI runs the notebooks against the reference solutions (MINIKV_IMPL=solutions); you run them against your own code.
    SOLUTIONS = os.environ.get("MINIKV_IMPL") == "solutions"
    # One CPU thread for the whole chapter: steady timings on a busy machine. (On a GPU it does not matter.)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    torch.set_printoptions(precision=3, sci_mode=False)
    DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
    print(f"Triton {triton.__version__}, kernels run {'in the CPU interpreter' if DEVICE == 'cpu' else 'on the GPU'}")
    """),
    md(r"""
    ## 1 · Triton's model, on a vector add

    A Triton kernel is a Python function under `@triton.jit`. It is launched over a **grid** of
    independent **programs** (`kernel[grid](...)`); each asks `tl.program_id(0)` which one it is. A
    program does not work on one number, like a CUDA thread, but on a whole **block** of them:
    `tl.arange(0, BLOCK)` is the vector `0 .. BLOCK-1`, and `BLOCK` must be a power of two, fixed when
    the kernel is compiled (`tl.constexpr`). Tensors arrive as **pointers**; `x_ptr + offs` is a block
    of addresses, and `tl.load` / `tl.store` read or write all of them at once. When `n` is not a
    multiple of `BLOCK`, the last program's block runs past the end: a **mask** turns those lanes off,
    so they are neither read nor written.

    The kernel below adds two vectors, and also records which program wrote each element.
    """),
    code(r"""
    @triton.jit
    def add_kernel(x_ptr, y_ptr, out_ptr, who_ptr, n, BLOCK: tl.constexpr):
        pid = tl.program_id(0)                   # which program am I?
        offs = pid * BLOCK + tl.arange(0, BLOCK)  # the BLOCK elements this program owns
        mask = offs < n                           # the last program's tail is switched off
        x = tl.load(x_ptr + offs, mask=mask)
        y = tl.load(y_ptr + offs, mask=mask)
        tl.store(out_ptr + offs, x + y, mask=mask)
        tl.store(who_ptr + offs, pid, mask=mask)  # for the picture below

    n, BLOCK = 10, 4
    x, y = torch.arange(n, dtype=torch.float32, device=DEVICE), torch.full((n,), 100.0, device=DEVICE)
    out, who = torch.empty(n, device=DEVICE), torch.full((n,), -1, dtype=torch.int32, device=DEVICE)
    grid = (triton.cdiv(n, BLOCK),)               # 3 programs of 4 lanes for 10 elements
    add_kernel[grid](x, y, out, who, n, BLOCK=BLOCK)
    assert torch.equal(out, x + y)
    print("out:", out.tolist())
    print("program that wrote each element:", who.tolist())
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(9, 1.6))
    colors = plt.get_cmap("tab10").colors
    for pid in range(grid[0]):
        for lane in range(BLOCK):
            i = pid * BLOCK + lane
            masked = i >= n
            ax.add_patch(Rectangle((i + 0.3 * pid, 0), 1, 1, facecolor="white" if masked else colors[pid],
                                   edgecolor="#555555", hatch="///" if masked else None, alpha=1 if masked else 0.75))
            ax.text(i + 0.3 * pid + 0.5, 0.5, "masked" if masked else f"{i}", ha="center", va="center", fontsize=7)
        ax.text(pid * BLOCK + 0.3 * pid + BLOCK / 2, 1.25, f"program {pid}: offs = {pid}*{BLOCK} + [0..{BLOCK - 1}]",
                ha="center", fontsize=8)
    ax.set_xlim(-0.2, grid[0] * (BLOCK + 0.3)); ax.set_ylim(-0.1, 1.6); ax.axis("off")
    ax.set_title(f"n = {n}, BLOCK = {BLOCK}: {grid[0]} programs; the last one's 2 lanes past n are masked", fontsize=9)
    plt.show()
    """),
    md(r"""
    On a GPU the three programs run at the same time on different streaming multiprocessors, and each
    block's lanes are spread over the threads of one program. The interpreter simply runs the programs
    one after the other, with numpy arrays for the blocks. The results are the same, but every `tl.`
    call is a numpy operation wrapped in Python, thousands of times slower than on a GPU: that is why
    every shape in this chapter is small.

    ## 2 · Paged decode attention, in three steps

    The layout is chapter 02's: one layer of the pool is `k_cache[num_blocks, block_size, num_kv_heads, head_dim]`,
    and position `pos` of a sequence lives in block `table[pos // block_size]`, offset `pos % block_size`.
    In memory, value `d` of KV head `h` there is at

    `k_cache_ptr + block * stride(0) + offset * stride(1) + h * stride(2) + d`.

    A small pool to work with: three sequences in shuffled blocks of 16, everything else random junk.
    """),
    code(r"""
    BS, HKV, D = 16, 2, 32
    gen = torch.Generator().manual_seed(0)
    lens = [40, 7, 64]                                   # context lengths, the new token included
    num_blocks = 14
    order = torch.randperm(num_blocks, generator=gen).tolist()
    tables, at = [], 0
    for L in lens:
        k = -(-L // BS)
        tables.append(order[at:at + k] + [-1] * (4 - k))  # rows padded with -1
        at += k
    block_tables = torch.tensor(tables, device=DEVICE)
    k_cache = torch.randn(num_blocks, BS, HKV, D, generator=gen).to(DEVICE)   # fp32: the interpreter's dtype
    v_cache = torch.randn(num_blocks, BS, HKV, D, generator=gen).to(DEVICE)
    context_lens = torch.tensor(lens, device=DEVICE)
    print("block_tables:", block_tables.tolist())
    print("k_cache strides (block, offset, head, dim):", k_cache.stride())
    """),
    md(r"""
    ### Step 1 · Gather one block through the table

    One program per KV head copies block `j` of sequence `b`: it loads the table entry, turns it into a
    base address, and reads a `[BLOCK_SIZE, HEAD_DIM]` tile, all offsets and dims at once. The two
    `[:, None]` / `[None, :]` make the tile's addresses out of a column of offsets and a row of dims.
    """),
    code(r"""
    @triton.jit
    def gather_block_kernel(k_cache_ptr, table_ptr, out_ptr, j, stride_cb, stride_co, stride_ch,
                            BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr):
        head = tl.program_id(0)
        block = tl.load(table_ptr + j)                         # the table says where block j of the sequence is
        offsets = tl.arange(0, BLOCK_SIZE)
        dims = tl.arange(0, HEAD_DIM)
        src = block * stride_cb + offsets[:, None] * stride_co + head * stride_ch + dims[None, :]
        tile = tl.load(k_cache_ptr + src)                      # [BLOCK_SIZE, HEAD_DIM]
        tl.store(out_ptr + head * BLOCK_SIZE * HEAD_DIM + offsets[:, None] * HEAD_DIM + dims[None, :], tile)

    b, j = 0, 1                                                # sequence 0's second block: positions 16..31
    out = torch.empty(HKV, BS, D, device=DEVICE)
    gather_block_kernel[(HKV,)](k_cache, block_tables[b], out, j, *k_cache.stride()[:3], BLOCK_SIZE=BS, HEAD_DIM=D)
    want = torch_ref.gather_kv(k_cache, block_tables[b], lens[b])[j * BS:(j + 1) * BS].transpose(0, 1)
    assert torch.equal(out, want)
    print(f"sequence {b}, block {j} -> pool block {int(block_tables[b, j])}: the kernel's copy equals torch_ref.gather_kv's")
    """),
    md(r"""
    Exercise 6.1 makes this general: a tile of positions that may span several blocks (each position
    reads its own table entry), a length that ends inside a block (mask), a head dim that is not a
    power of two (mask again). For attention we do not copy at all: the loaded tile goes straight into
    the arithmetic.

    ### Step 2 · Online softmax across blocks

    Attention for one query row is `softmax(s) @ V` with scores `s = scale * K q`. A kernel that reads
    K block by block never holds the whole row of scores, so it keeps three running values instead
    (Milakov & Gimelshein, 2018; the heart of FlashAttention):

    * `m`, the largest score so far,
    * `l`, the sum of `exp(s - m)` so far,
    * `acc`, the sum of `exp(s - m) * v` so far.

    When a new block raises the max from `m` to `m_new`, every term summed so far was computed against
    the old max, so `l` and `acc` are multiplied by `alpha = exp(m - m_new)` before the block's own terms
    are added. At the end, `out = acc / l`. First in plain PyTorch, watching the numbers:
    """),
    code(r"""
    q1 = torch.randn(D, generator=gen).to(DEVICE)
    keys = torch_ref.gather_kv(k_cache, block_tables[2], lens[2])[:, 0]    # sequence 2, kv head 0: [64, D]
    vals = torch_ref.gather_kv(v_cache, block_tables[2], lens[2])[:, 0]
    scale = D ** -0.5
    m, l, acc, trace = torch.tensor(-math.inf, device=DEVICE), torch.tensor(0.0, device=DEVICE), torch.zeros(D, device=DEVICE), []
    for start in range(0, lens[2], BS):
        s = keys[start:start + BS] @ q1 * scale
        m_new = torch.maximum(m, s.max())
        alpha = torch.exp(m - m_new)                # how much the old terms shrink under the new max
        p = torch.exp(s - m_new)
        l = l * alpha + p.sum()
        acc = acc * alpha + p @ vals[start:start + BS]
        trace.append((start, float(s.max()), float(m_new), float(alpha)))
        m = m_new
    exact = torch.softmax(keys @ q1 * scale, 0) @ vals
    print(" block  max of block  running max   alpha")
    for start, smax, mm, a in trace:
        print(f"{start // BS:6}  {smax:12.3f}  {mm:11.3f}  {a:6.3f}")
    print("online == softmax over the whole row:", torch.allclose(acc / l, exact, atol=1e-6))
    """),
    md(r"""
    `alpha` is 0 for the first block (nothing summed yet), 1 when a block does not raise the max, and
    below 1 when it does. Forget it, and the answer is silently wrong the moment a later block holds the
    largest score (one of exercise 6.2's checks is built exactly so).

    Now the same loop as a kernel: one program per (sequence, query head), one pool block per
    iteration. With a single query row, `K q` is a sum over `d` of a broadcast product.
    """),
    code(r"""
    @triton.jit
    def decode_one_head_kernel(q_ptr, k_cache_ptr, v_cache_ptr, tables_ptr, lens_ptr, out_ptr, scale,
                               stride_bt, stride_cb, stride_co, stride_ch,
                               NUM_HEADS: tl.constexpr, GROUP: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                               HEAD_DIM: tl.constexpr):
        seq, head = tl.program_id(0), tl.program_id(1)
        kv_head = head // GROUP
        context_len = tl.load(lens_ptr + seq)
        dims = tl.arange(0, HEAD_DIM)
        offsets = tl.arange(0, BLOCK_SIZE)
        q = tl.load(q_ptr + (seq * NUM_HEADS + head) * HEAD_DIM + dims)           # [HEAD_DIM]
        m = -float("inf")
        l = 0.0
        acc = tl.zeros([HEAD_DIM], tl.float32)
        for j in range(0, tl.cdiv(context_len, BLOCK_SIZE)):
            block = tl.load(tables_ptr + seq * stride_bt + j)                       # step 1
            pos_ok = j * BLOCK_SIZE + offsets < context_len                         # the last block may be partial
            addr = block * stride_cb + offsets[:, None] * stride_co + kv_head * stride_ch + dims[None, :]
            k = tl.load(k_cache_ptr + addr, mask=pos_ok[:, None], other=0.0)        # [BLOCK_SIZE, HEAD_DIM]
            v = tl.load(v_cache_ptr + addr, mask=pos_ok[:, None], other=0.0)
            s = tl.sum(k * q[None, :], 1) * scale                                  # [BLOCK_SIZE]
            s = tl.where(pos_ok, s, -float("inf"))
            m_new = tl.maximum(m, tl.max(s, 0))                                     # step 2
            alpha = tl.exp(m - m_new)
            p = tl.exp(s - m_new)
            l = l * alpha + tl.sum(p, 0)
            acc = acc * alpha + tl.sum(p[:, None] * v, 0)
            m = m_new
        tl.store(out_ptr + (seq * NUM_HEADS + head) * HEAD_DIM + dims, acc / l)

    HQ = 8                                                   # 4 query heads per KV head
    q = torch.randn(len(lens), HQ, D, generator=gen).to(DEVICE)
    out = torch.empty_like(q)
    decode_one_head_kernel[(len(lens), HQ)](q, k_cache, v_cache, block_tables, context_lens, out, scale,
                                            block_tables.stride(0), *k_cache.stride()[:3],
                                            NUM_HEADS=HQ, GROUP=HQ // HKV, BLOCK_SIZE=BS, HEAD_DIM=D)
    want = torch_ref.paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)
    print("max abs difference from torch_ref.paged_decode_attention:", f"{(out - want).abs().max():.2e}")
    assert torch.allclose(out, want, atol=2e-5)
    """),
    md(r"""
    ### Step 3 · Grouped heads: one tile for the query heads of a KV head

    With grouped-query attention, `HQ // HKV` query heads read the same K and V. The kernel above runs
    one program per *query* head, so each KV block is read 4 times, and each program does a
    matrix-*vector* product, which wastes a GPU's tensor cores (they multiply tiles, at least 16 rows).

    minikv's decode kernel (`minikv/attention/triton_decode.py`) runs one program per (sequence, **KV
    head**) instead. Its `q` tile holds the group's query heads as rows, `[GROUP_P, D]` (padded to at
    least 16 rows, the padding masked), so every K/V tile is loaded once for the whole group and the
    scores are one `tl.dot(q, tl.trans(k))` even with a single new token per sequence. It also takes
    tiles of `BLOCK_N` positions instead of whole pool blocks (block size 1 means 16 blocks per tile),
    and keeps the softmax in base 2 (`exp2` is the cheap instruction). Same answer, a quarter of the K/V
    reads here:
    """),
    code(r"""
    grouped = triton_paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale, num_splits=1)
    assert torch.allclose(grouped, want, atol=2e-5)
    kv_bytes = sum(lens) * 2 * D * 4                         # K and V of one kv head, fp32, per sequence token
    print(f"per query head: {HQ * kv_bytes / 1e3:.0f} kB of K/V read; per kv head (grouped): {HKV * kv_bytes / 1e3:.0f} kB")
    print("grouped kernel == torch_ref, max abs difference:", f"{(grouped - want).abs().max():.2e}")
    """),
    md(r"""
    ## 3 · Prefill over a cached prefix: the same loop, one mask

    After a prefix-cache hit (chapters 03 and 04), a sequence's first `prefix_len` tokens already have
    K/V in the pool, and only `q_len` new tokens are computed. They are the last `q_len` of its
    `context_len` tokens, so new token `i` sits at position `p = prefix_len + i`, and it may see key `k` iff

    `k <= p`

    which is the whole prefix, the new tokens before it, and itself. With `prefix_len = 0` that is plain
    causal prefill; with `q_len = 1` it is a decode step; a chunk of a chunked prefill is "new tokens
    after a prefix" too. One kernel serves them all, in one launch for a batch that mixes them
    (`minikv/attention/triton_prefill.py`): the rows of its `q` tile are new tokens, and the loop over
    key tiles is step 2's with that mask added. Here are the masks of three such sequences:
    """),
    code(r"""
    cases = [("prefill, no prefix", 0, 8), ("prefix hit: 10 cached, 4 new", 10, 4), ("chunk: 8 new after 6", 6, 8)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.0))
    for ax, (title, prefix_len, q_len) in zip(axes, cases):
        p = prefix_len + torch.arange(q_len)[:, None]          # absolute position of each new token
        k = torch.arange(prefix_len + q_len)[None, :]          # key positions
        visible = (k <= p).float()
        visible[:, :prefix_len] *= 0.6                         # the cached prefix, drawn paler
        ax.imshow(visible, cmap="Blues", vmin=0, vmax=1)
        if prefix_len:
            ax.axvline(prefix_len - 0.5, color="tab:red", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key position k"); ax.set_ylabel("new token i")
    plt.suptitle("visible(i, k) = k <= prefix_len + i (left of the red line: the cached prefix)", fontsize=10)
    plt.tight_layout()
    plt.show()
    """),
    code(r"""
    # One launch for a batch mixing the three kinds; the pool of section 2 holds their K/V.
    q_lens = [40, 3, 12]                                       # seq 0: plain prefill; 1: 4 cached + 3 new; 2: a chunk of 12 after 52
    starts = torch.tensor([0, 40, 43, 55], device=DEVICE)
    qp = torch.randn(55, HQ, D, generator=gen).to(DEVICE)
    got_pf = triton_paged_attention(qp, k_cache, v_cache, block_tables, starts, context_lens, scale)
    want_pf = torch_ref.paged_attention(qp, k_cache, v_cache, block_tables, starts, context_lens, scale)
    assert torch.allclose(got_pf, want_pf, atol=2e-5)
    print(f"prefill over prefixes in one launch == torch_ref.paged_attention (max abs difference {(got_pf - want_pf).abs().max():.2e})")
    """),
    md(r"""
    ## 4 · Your turn: exercises 6.1 – 6.3

    Open **`exercises/ch06_triton_attention.py`**. Each kernel's docstring is its spec: replace each
    `raise NotImplementedError` with your code, save, and run the check cell under it. The checks
    launch your kernel (under the interpreter here) on pools of random junk with shuffled block tables
    and compare with `torch_ref`; a failure names the first wrong value and, for the usual mistakes, what
    it looks like. `minikv grade --chapter 6` grades all three from a terminal. Under the functions that
    launch each kernel (given, not exercises) you can call yours by hand, e.g.
    `ex.gather_kv(k_cache, block_tables[0], 40)`.

    ### Exercise 6.1 · `gather_kv_kernel`: the block-table gather

    Copy the first `length` tokens of one sequence out of the pool into a contiguous `[length, Hkv, D]`
    buffer, `BLOCK_T` positions per program, each position through its own table entry. Two masks:
    positions `>= length` (the last program's tail) and dims `>= HEAD_DIM`.
    """),
    code(r"""
    minikv.grade.check("6.1")
    """),
    md(r"""
    ### Exercise 6.2 · `decode_kernel`: the online-softmax loop

    One program per (sequence, KV head); the given code loads the group's queries as the rows of a
    `[GROUP_P, DIM_P]` tile. You write the loop over key tiles of `BLOCK_N` positions: addresses through
    the table (6.1), masked loads, scores with `tl.dot`, `-inf` past `context_len`, the online softmax,
    and the store. The checks start with a sequence that fits in one tile (where forgetting `alpha` does
    not show) and then one whose running max rises. The last check plugs your kernel into
    `LLM("tiny-llama", paged_decode_attention=...)` for every decode step of every layer and compares
    the greedy tokens with minikv's.
    """),
    code(r"""
    minikv.grade.check("6.2")
    """),
    md(r"""
    ### Exercise 6.3 · `prefill_kernel`: the prefix and causal mask

    One program per (sequence, query head, tile of 16 new tokens). Write 6.2's loop again for these
    rows, with the mask of section 3: key `k` is visible to new token `i` iff `k <= prefix_len + i`. A
    mask of `k < context_len` alone lets a token see the future; `k <= i` forgets the prefix.
    """),
    code(r"""
    minikv.grade.check("6.3")
    """),
    md(r"""
    Your decode kernel through its launcher, on section 2's pool (it needs 6.2 done):
    """),
    code(r"""
    ex = minikv.grade.learner_module("ch06_triton_attention")   # exercises/ (solutions/ under MINIKV_IMPL=solutions)
    try:
        mine = ex.paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)
    except Exception as exc:                                    # the interpreter wraps the stub's NotImplementedError
        if SOLUTIONS:
            raise
        print(f"not done yet ({type(exc).__name__}): finish exercise 6.2; minikv.grade.check(\"6.2\") shows how far along you are.")
    else:
        print("your decode kernel vs torch_ref, max abs difference:", f"{(mine - want).abs().max():.2e}")
        if SOLUTIONS:
            assert torch.allclose(mine, want, atol=2e-5)
    """),
    md(r"""
    ## 5 · What changes on a real GPU

    The kernels above are the real ones; the interpreter only hides what makes them fast.

    * **Tiles and tensor cores.** A program's blocks live in registers and shared memory, and
      `tl.dot` on tiles of 16 or more rows runs on tensor cores, in bf16 or fp16 with fp32
      accumulation. That is why the query heads of a KV head share one tile (step 3): at one token per
      sequence it is the only way to get 16 rows.
    * **Split-K (flash-decoding).** One program per (sequence, KV head) is 8 programs for a batch of 1
      with 8 KV heads, on a GPU with 132 multiprocessors: most of the chip idles while a long context
      streams through a few of them. Cut each context into `num_splits` ranges, give each its own
      program, and have each write its normalized partial output with its log-sum-exp
      `lse = m + log(l)`. A second small kernel merges: with `w_s = exp(lse_s - max lse)`,
      `out = sum w_s * out_s / sum w_s`, exact, not an approximation. minikv's kernel has this path:
    """),
    code(r"""
    one = triton_paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale, num_splits=1, block_n=16)
    four = triton_paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale, num_splits=4, block_n=16)
    print("4 splits merged by log-sum-exp vs one pass, max abs difference:", f"{(four - one).abs().max():.2e}")
    assert torch.allclose(four, one, atol=2e-5)
    """),
    md(r"""
    * **Launches and CUDA graphs.** Each kernel launch costs the CPU a few microseconds. A decode step
      of a 30-layer model is hundreds of launches (norms, projections, rotary, attention, MLP), so at
      batch 1 the GPU mostly waits for the CPU: on the PyTorch path, with a model of SmolLM2's shape,
      this project measured **51 tokens/s** on an H200. Engines record a whole decode step once as a
      CUDA graph per batch size (with static buffers for the block tables and slot mappings) and
      replay it with a single launch; vLLM, SGLang and nano-vllm all do.
    * **How many bytes.** Decode attention does about one FLOP per byte of K/V it reads for each query
      head sharing the KV head, while an H200 needs some 200 FLOPs per byte of HBM traffic to be busy
      computing: its speed is the memory bandwidth. So the useful model is bytes
      read per step divided by the card's bandwidth. For SmolLM2-135M (30 layers, 3 KV heads of 64, bf16:
      23,040 bytes of K and V per token, chapter 01), at an H200's ~4.8 TB/s peak:
    """),
    code(r"""
    BYTES_PER_TOKEN = 2 * 30 * 3 * 64 * 2                      # K and V, 30 layers, 3 kv heads, head_dim 64, bf16
    PEAK = 4.8e12                                              # H200 HBM3e peak, bytes/s (a datasheet number)
    contexts = [2 ** i for i in range(8, 16)]                  # 256 .. 32k tokens per sequence
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.6))
    for batch in (1, 16, 64):
        nbytes = [batch * c * BYTES_PER_TOKEN for c in contexts]
        ax1.plot(contexts, [b / 1e9 for b in nbytes], "o-", label=f"batch {batch}")
        ax2.plot(contexts, [b / PEAK * 1e6 for b in nbytes], "o-", label=f"batch {batch}")
    ax2.axhspan(3, 10, color="#dddddd", label="one kernel launch, a few µs (order of magnitude)")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2); ax.set_yscale("log"); ax.set_xlabel("context length (tokens)"); ax.legend(fontsize=8)
    ax1.set_ylabel("GB of K/V read per decode step"); ax1.set_title("bytes read (all 30 layers)", fontsize=10)
    ax2.set_ylabel("µs at 4.8 TB/s"); ax2.set_title("MODEL, not a measurement: bytes / peak bandwidth", fontsize=10)
    plt.tight_layout()
    plt.show()
    b1 = 1024 * BYTES_PER_TOKEN
    print(f"batch 1, 1k context: {b1 / 1e6:.1f} MB per step -> {b1 / PEAK * 1e6:.1f} µs at peak, "
          f"against {1e6 / 51:.0f} µs per step measured at 51 tokens/s on the PyTorch path")
    """),
    md(r"""
    At batch 1 and a 1k context, the attention reads of all 30 layers take about 5 µs at peak, less
    than the 30 launches of the attention kernel alone; the measured 19.6 ms per step is launches and
    framework overhead, not attention. At batch 64 and long contexts the reads reach milliseconds, and the kernel's job is to
    come close to the peak. `minikv bench attention` measures exactly that on a GPU (decode latency,
    achieved bandwidth and its % of peak, beside SDPA on contiguous K/V and the PyTorch paged
    reference). **No GPU was lent when this chapter was written, so it has no measured numbers yet**;
    on a CPU the command says it needs a GPU. Run it on one, and compare with the model above.

    ### How vLLM and SGLang organise the same kernels

    * **vLLM** began with hand-written CUDA PagedAttention kernels (`csrc/attention/`): *v1* one pass
      per (sequence, head), *v2* split into partitions with a reduce kernel, the flash-decoding idea.
      Its Triton path, `triton_unified_attention`, is one kernel for every request in a step, prefill
      chunks and decode tokens alike, over the paged cache with the query heads of a KV head packed
      together, much like sections 2 and 3 joined. For most models on NVIDIA GPUs vLLM defaults to
      FlashAttention's or FlashInfer's paged kernels.
    * **SGLang**'s Triton backend (`python/sglang/srt/layers/attention/triton_ops/`) keeps two
      families: `decode_attention` (a split-K first stage, with a grouped variant that packs the query
      heads of a KV head, then a reduce stage) and `extend_attention` for prefill after a prefix, which
      attends to the cached prefix through the token-level index (its blocks are one token, chapter 04)
      and to the new tokens causally, merging the two online.
    * **FlashInfer** adds *cascade* attention: a prefix shared by many sequences (a system prompt) is
      attended once for all their queries and merged with each sequence's own part by log-sum-exp,
      the same merge as split-K.

    ## 6 · Summary

    * A Triton program works on blocks of lanes; pointer arithmetic makes a block of addresses; masks
      switch off the lanes past an edge. The interpreter runs the same kernel on a CPU.
    * Paged attention in place: each position's address comes from the block table
      (`table[pos // bs] * stride + (pos % bs) * stride + ...`), no copy of the cache.
    * The online softmax carries `m`, `l`, `acc` across tiles and rescales by `exp(m_old - m_new)`
      whenever the max rises; `out = acc / l`.
    * Packing the query heads of a KV head as the rows of one tile reads each K/V tile once per group
      and makes the scores a real matrix product.
    * Prefill over a cached prefix, chunked prefill and decode are one kernel with one mask,
      `k <= prefix_len + i`.
    * On a GPU, decode attention is bound by memory bandwidth; split-K fills the chip for few long
      sequences, CUDA graphs remove launch overhead at small batches.

    ## Further reading

    * Tillet, Kung & Cox, *Triton: an intermediate language and compiler for tiled neural network computations* (MAPL 2019), and the [Triton tutorials](https://triton-lang.org/main/getting-started/tutorials/index.html) (vector add, fused softmax, matrix multiply, fused attention).
    * Milakov & Gimelshein, *Online normalizer calculation for softmax* (2018), [arXiv:1805.02867](https://arxiv.org/abs/1805.02867): the running max and sum.
    * Dao et al., *FlashAttention* (2022), [arXiv:2205.14135](https://arxiv.org/abs/2205.14135), and Dao, *FlashAttention-2* (2023), [arXiv:2307.08691](https://arxiv.org/abs/2307.08691): tiled attention with the online softmax.
    * Dao, Haziza, Massa & Sizov, [*Flash-Decoding for long-context inference*](https://crfm.stanford.edu/2023/10/12/flashdecoding.html) (2023): split-K for decode.
    * Kwon et al., *PagedAttention* (SOSP 2023), [arXiv:2309.06180](https://arxiv.org/abs/2309.06180), and vLLM's [paged attention design notes](https://docs.vllm.ai/en/latest/design/paged_attention.html).
    * Ye et al., *FlashInfer* (2025), [arXiv:2501.01005](https://arxiv.org/abs/2501.01005), and Juravsky et al., *Hydragen* (2024), [arXiv:2402.05099](https://arxiv.org/abs/2402.05099): shared-prefix (cascade) attention.
    * minikv's own kernels: `minikv/attention/triton_store.py`, `triton_decode.py`, `triton_prefill.py`, each beside its spec in `torch_ref.py`.
    """),
]
