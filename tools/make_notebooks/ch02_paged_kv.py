"""Chapter 02: paged KV. Edit here, then run ``python tools/make_notebooks/build.py``."""

from nbtools import code, md

PATH = "chapters/02_paged_kv.ipynb"

CELLS = [
    md(r"""
    # Chapter 02 · Paged KV: blocks, block tables and paged attention

    Chapter 01's cache gave each sequence one buffer, allocated up front for the longest it might
    ever get. That is simple, and wasteful: a server does not know how long an answer will be, so it
    reserves memory for tokens that mostly never come, and memory reserved for one request cannot
    serve another. The PagedAttention paper (Kwon et al., 2023, [arXiv:2309.06180](https://arxiv.org/abs/2309.06180))
    measured that earlier serving systems stored actual token states in only **20.4–38.2%** of their
    KV-cache memory: **60–80% was lost** to reservation and fragmentation.

    The fix comes from operating systems. Virtual memory gives each process the illusion of one
    contiguous address space, while the physical memory behind it is handed out in fixed-size
    *pages*, found through a *page table*. vLLM does the same for the KV cache: one big pool of
    **blocks** of, say, 16 token slots; each sequence owns a **block table**, the list of its
    blocks in token order; blocks are taken when a sequence grows into them and returned the moment
    it finishes. Waste shrinks to the unfilled part of each sequence's last block.

    In this chapter you will

    * measure the waste of contiguous reservation against paging on a realistic mix of requests;
    * watch a pool hand out blocks as sequences grow and take them back when they end;
    * follow one decoding step of attention through block tables, by hand;
    * build the four pieces (2.1 a block allocator, 2.2 slot mapping, 2.3 a block table that grows,
      2.4 paged decode attention) and plug your attention into minikv's engine;
    * run a batch of SmolLM2 prompts through the engine's paged pool and look inside it.

    The picture below is the chapter in one glance: four sequences in contiguous rows sized for
    32 tokens (left), and the same tokens in blocks of 4 from one shared pool (right).
    """),
    code(r"""
    %matplotlib inline
    import math
    import os
    import random

    import matplotlib.pyplot as plt
    import torch
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    import minikv.grade
    from minikv import LLM, SamplingParams
    from minikv.attention.reference import decode_attention
    from minikv.attention.torch_ref import paged_decode_attention, write_kv
    from minikv.errors import KVCacheFull
    from minikv.kv import BlockAllocator, BlockTable, make_block_table_tensor, slot_mapping

    # CI runs the notebooks against the reference solutions (MINIKV_IMPL=solutions); you run them against your own code.
    SOLUTIONS = os.environ.get("MINIKV_IMPL") == "solutions"
    # One CPU thread for the whole chapter: timings stay steady even on a busy machine, and
    # SmolLM2 is small enough not to mind. (On a GPU this setting does not matter.)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    torch.set_printoptions(precision=3, sci_mode=False)
    """),
    code(r"""
    # Drawing helpers, used all through the chapter. A sequence is drawn in its own colour: a full
    # square is a stored token, a pale one a slot the sequence owns but has not filled, grey a free slot.
    COLORS = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]   # no grey: grey means free

    def color_of(name: str):
        # "A", "B", ... and "P0", "P1", ... each get their own colour
        last = name[-1]
        return COLORS[(ord(last) - (ord("0") if last.isdigit() else ord("A"))) % len(COLORS)]

    def draw_pool(ax, tables: dict, num_blocks: int, block_size: int, cols: int = 8, title: str = "",
                  reserved: set = frozenset()):
        # tables: sequence name -> (block table, tokens stored). Block b is drawn at row b // cols, column b % cols;
        # a block of more than 8 slots wraps onto several lines. reserved: blocks handed out that hold no token (hatched).
        owner, filled = {}, {}
        for name, (blocks, n) in tables.items():
            for i, b in enumerate(blocks):
                owner[b], filled[b] = name, min(block_size, max(0, n - i * block_size))
        width = min(block_size, 8)
        height = -(-block_size // width)
        for b in range(num_blocks):
            x0, y0 = (b % cols) * (width + 1), -(b // cols) * (height + 0.9)
            name = owner.get(b)
            if name is None and b in reserved:
                ax.add_patch(Rectangle((x0, y0), width, height, facecolor="#dcdcec", hatch="///", edgecolor="#9999bb", lw=0))
            else:
                for s in range(block_size):
                    face = "#eeeeee" if name is None else to_rgba(color_of(name), 1.0 if s < filled[b] else 0.22)
                    ax.add_patch(Rectangle((x0 + s % width, y0 + height - 1 - s // width), 1, 1,
                                           facecolor=face, edgecolor="white", lw=0.5))
            ax.add_patch(Rectangle((x0, y0), width, height, fill=False, edgecolor="#555555", lw=0.8))
            ax.text(x0, y0 + height + 0.05, str(b), fontsize=6, color="#555555", va="bottom")
            if name is not None:
                ax.text(x0 + width / 2, y0 + height / 2, name, fontsize=8, ha="center", va="center", weight="bold")
        rows = -(-num_blocks // cols)
        ax.set_xlim(-0.5, cols * (width + 1))
        ax.set_ylim(-(rows - 1) * (height + 0.9) - 0.3, height + 0.8)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title, fontsize=10)

    def draw_rows(ax, lengths: dict, max_len: int, title: str = ""):
        # One contiguous row of max_len slots per sequence.
        for r, (name, n) in enumerate(lengths.items()):
            for s in range(max_len):
                face = to_rgba(color_of(name), 1.0 if s < n else 0.22)
                ax.add_patch(Rectangle((s, -r * 1.7), 1, 1, facecolor=face, edgecolor="white", lw=0.5))
            ax.text(-0.8, -r * 1.7 + 0.5, name, ha="right", va="center", fontsize=8, weight="bold")
        ax.set_xlim(-2, max_len + 0.5)
        ax.set_ylim(-(len(lengths) - 1) * 1.7 - 0.3, 1.3)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title, fontsize=10)

    # The opening picture: four sequences, 32-token rows vs blocks of 4 from a 24-block pool.
    lengths = {"A": 7, "B": 21, "C": 3, "D": 12}
    pool, tables = BlockAllocator(24), {}
    for name, n in lengths.items():
        table = BlockTable(4)
        table.append_tokens(n, pool)
        tables[name] = (table.blocks, table.num_tokens)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [1.1, 1]})
    draw_rows(axes[0], lengths, 32, f"contiguous: 4 x 32 = 128 slots reserved for {sum(lengths.values())} tokens")
    draw_pool(axes[1], tables, 24, 4, cols=6,
              title=f"paged: {sum(len(b) for b, _ in tables.values())} blocks of 4 = "
                    f"{4 * sum(len(b) for b, _ in tables.values())} slots; the other blocks stay free for anyone")
    plt.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 1 · How much memory does reservation waste?

    A serving engine learns how long an answer is only when it ends. A contiguous cache must
    therefore reserve, when a request arrives, room for the longest it may become: the model's whole
    context, or at best the prompt plus the request's `max_tokens`. Paging stores what is there,
    rounded up to a whole block.

    Below is a synthetic but realistic mix of 1,000 requests (seeded, so it is the same every run):
    prompt and answer lengths drawn from log-normal distributions (many short, a long tail), answers
    capped at `max_tokens = 512`, a 2,048-token context. For each request we count the slots it holds
    at its longest, under three policies. Change the numbers and rerun.
    """),
    code(r"""
    N_REQUESTS, CONTEXT, MAX_TOKENS, BLOCK = 1000, 2048, 512, 16
    gen = torch.Generator().manual_seed(0)
    prompt_lens = torch.empty(N_REQUESTS).log_normal_(math.log(200), 0.9, generator=gen).clamp(4, CONTEXT - MAX_TOKENS).round().long()
    output_lens = torch.empty(N_REQUESTS).log_normal_(math.log(120), 1.0, generator=gen).clamp(1, MAX_TOKENS).round().long()
    used = prompt_lens + output_lens                                  # slots actually filled, per request

    policies = {
        "reserve the whole context": torch.full_like(used, CONTEXT),
        "reserve prompt + max_tokens": prompt_lens + MAX_TOKENS,
        f"paged, blocks of {BLOCK}": (used + BLOCK - 1) // BLOCK * BLOCK,
    }
    print(f"median prompt {int(prompt_lens.median())} tokens, median answer {int(output_lens.median())} tokens, "
          f"{int(used.sum()):,} tokens stored in all")
    waste = {}
    for name, held in policies.items():
        waste[name] = 1 - used.sum().item() / held.sum().item()
        print(f"{name:>28}: {held.sum().item():>10,} slots held, {waste[name]:6.1%} of them wasted")

    assert waste["reserve the whole context"] > 0.6 and waste[f"paged, blocks of {BLOCK}"] < 0.05
    """),
    code(r"""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1.3, 1]})
    show = 30                                                         # the first 30 requests, one bar each
    y = torch.arange(show)
    ax1.barh(y, policies["reserve prompt + max_tokens"][:show], color="#f3c3c3", label="reserved, never filled")
    ax1.barh(y, policies[f"paged, blocks of {BLOCK}"][:show], color="#9ecae1", label=f"paged: last block's empty slots")
    ax1.barh(y, used[:show], color="tab:blue", label="tokens stored")
    ax1.invert_yaxis()
    ax1.set_xlabel("KV slots held by the request at its longest")
    ax1.set_ylabel("request")
    ax1.set_title("reserving prompt + max_tokens, per request")
    ax1.legend(fontsize=8, loc="lower right")

    names = list(policies)
    held = [policies[n].sum().item() / 1e6 for n in names]
    ax2.barh(names, held, color="#f3c3c3")
    ax2.barh(names, [used.sum().item() / 1e6] * len(names), color="tab:blue")
    for i, n in enumerate(names):
        ax2.text(held[i], i, f" {waste[n]:.0%} wasted", va="center", fontsize=9)
    ax2.invert_yaxis()
    ax2.set_xlim(0, max(held) * 1.35)
    ax2.set_xlabel("millions of KV slots, all 1,000 requests")
    ax2.set_title("stored (blue) vs held (pink)")
    plt.tight_layout()
    plt.show()
    """),
    md(r"""
    Reserving the whole context wastes most of the memory; even reserving only `prompt + max_tokens`
    leaves a large share empty, because most answers stop long before their cap. With blocks of 16
    the only waste is the unfilled end of each request's last block, at most 15 slots per request.
    This is *internal* fragmentation, and paging bounds it by the block size.

    A contiguous cache also suffers *external* fragmentation: rows of different lengths come and
    go, and leave holes between them that are each too small for the next request, even when
    together they would hold it. Blocks all have the same size, and any free block can serve any
    sequence, so a paged pool has no such holes.

    Why not make blocks tiny, then? Each block is one entry of a block table, and attention reads
    the cache block by block: the smaller the blocks, the longer the tables and the more scattered
    the reads. vLLM's default is 16 tokens; SGLang, whose radix tree (chapter 04) wants
    token-granular sharing, uses blocks of 1 token. The curve below is the waste as the block size
    grows, for the same 1,000 requests.
    """),
    code(r"""
    sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    curve = [1 - used.sum().item() / ((used + b - 1) // b * b).sum().item() for b in sizes]
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.plot(sizes, [100 * c for c in curve], "o-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("block size (tokens)")
    ax.set_ylabel("slots wasted (%)")
    ax.set_title("waste of paging vs block size")
    plt.tight_layout()
    plt.show()
    print(", ".join(f"{s}: {c:.1%}" for s, c in zip(sizes, curve)))
    """),
    md(r"""
    ## 2 · Block tables: where each token lives

    Three objects do the bookkeeping (you will write all three):

    * an **allocator** owns the ids of the pool's blocks, `0 .. num_blocks - 1`, and hands out free
      ones (`allocate(n)`) and takes them back (`free(ids)`). It never touches a tensor;
    * each sequence has a **block table**: its blocks in token order. Token `pos` lives in block
      `table[pos // block_size]`, at offset `pos % block_size` inside it;
    * the **slot** of a token is its row in the pool seen as one long array of
      `num_blocks * block_size` slots: `table[pos // block_size] * block_size + pos % block_size`.
      The engine writes each new token's K and V at its slot.

    Here is minikv's version of each at work, in a pool of 8 blocks of 4. Three sequences arrive
    with prompts of 6, 9 and 3 tokens; A generates 3 tokens; B finishes; C grows by 6.
    """),
    code(r"""
    BS = 4
    alloc = BlockAllocator(8)
    A, B, C = BlockTable(BS), BlockTable(BS), BlockTable(BS)
    A.append_tokens(6, alloc)              # a table grows by whole blocks: 6 tokens take 2 blocks
    B.append_tokens(9, alloc)
    C.append_tokens(3, alloc)
    print("after the prompts:", {"A": A.blocks, "B": B.blocks, "C": C.blocks}, f"free blocks: {alloc.num_free}")
    new_slots = A.append_tokens(3, alloc)  # tokens 6, 7 fill A's second block; token 8 needs a new one
    print(f"A grows by 3 tokens -> slots {new_slots}; A's table is now {A.blocks}")
    b_blocks = list(B.blocks)
    B.free(alloc)                          # B is done: its blocks go back to the pool
    C.append_tokens(6, alloc)
    print("B finished, C grew:", {"A": A.blocks, "C": C.blocks}, f"free blocks: {alloc.num_free}")
    print(f"C now uses block(s) {sorted(set(C.blocks) & set(b_blocks))}, which B held a moment ago")

    fig, ax = plt.subplots(figsize=(8, 1.9))
    draw_pool(ax, {"A": (A.blocks, A.num_tokens), "C": (C.blocks, C.num_tokens)}, 8, BS, cols=8,
              title="A holds 9 tokens, C 9 tokens; C's blocks are not next to each other, and need not be")
    plt.show()

    print(" pos  block index  block  offset  slot   (sequence C)")
    for pos in range(C.num_tokens):
        print(f"{pos:4}  {pos // BS:11}  {C.blocks[pos // BS]:5}  {pos % BS:6}  {C.slot(pos):4}")
    assert slot_mapping(C.blocks, range(C.num_tokens), BS) == [C.slot(p) for p in range(C.num_tokens)]
    """),
    md(r"""
    C's tokens sit in blocks that are not neighbours, and it does not matter: the block table says
    where each one is. One of them was B's a moment ago; once B finished, it served C. That reuse is
    the whole point.

    **Watch a pool at work.** The next cell runs a small trace: ten requests arrive over time into a
    pool of 20 blocks of 4. At every step each running sequence generates one token, taking a new
    block whenever it crosses a block boundary; a request that finishes returns its blocks; a
    request is admitted when its prompt fits (leaving a spare block per running sequence, so that
    they can keep growing). Step through it with the slider, or press play.
    """),
    code(r"""
    def make_requests(n: int = 10, seed: int = 1) -> list[tuple[str, int, int, int]]:
        # (name, arrival step, prompt tokens, tokens to generate), seeded
        rng = random.Random(seed)
        reqs = [(chr(ord("A") + i), rng.randint(0, 24), rng.randint(2, 14), rng.randint(3, 16)) for i in range(n)]
        first = min(r[1] for r in reqs)
        return sorted([(name, t - first, p, o) for name, t, p, o in reqs], key=lambda r: r[1])

    def simulate(allocator, table_cls, requests, block_size: int = 4) -> list[dict]:
        # Run the trace with this allocator and block-table class; return one snapshot per step.
        waiting, running, snaps, step = list(requests), {}, [], 0
        while waiting or running:
            events = []
            for name in list(running):                     # decode: one new token each
                table, left = running[name]
                try:
                    table.append_tokens(1, allocator)
                except KVCacheFull:
                    events.append(f"{name} waits (no free block)")
                    continue
                running[name][1] = left - 1
                if left == 1:                              # that was its last token
                    allocator.free(table.blocks)
                    events.append(f"{name} done, returns {len(table.blocks)} blocks")
                    del running[name]
            while waiting and waiting[0][1] <= step:       # admit arrivals whose prompt fits
                name, _, prompt, out = waiting[0]
                table = table_cls(block_size)
                if table.blocks_needed(prompt) + len(running) > allocator.num_free:
                    break
                table.append_tokens(prompt, allocator)
                running[name] = [table, out]
                waiting.pop(0)
                events.append(f"{name} arrives ({prompt} tokens, {len(table.blocks)} block{'s' * (len(table.blocks) > 1)})")
            snaps.append({"step": step, "events": events, "free": allocator.num_free,
                          "tables": {n: (list(t.blocks), t.num_tokens) for n, (t, _) in running.items()}})
            step += 1
            assert step < 1000, "the trace does not finish"
        return snaps

    REQUESTS, POOL_BLOCKS = make_requests(), 20
    snaps = simulate(BlockAllocator(POOL_BLOCKS), BlockTable, REQUESTS)
    peak = max(POOL_BLOCKS - s["free"] for s in snaps)
    print(f"{len(REQUESTS)} requests, {len(snaps)} steps, at most {peak} of {POOL_BLOCKS} blocks in use at once")
    assert snaps[-1]["free"] == POOL_BLOCKS                  # every block came back
    """),
    code(r"""
    import ipywidgets as widgets
    from IPython.display import display

    def draw_snapshot(i: int):
        s = snaps[i]
        stored = sum(n for _, n in s["tables"].values())
        fig, ax = plt.subplots(figsize=(8, 3.4))
        draw_pool(ax, s["tables"], POOL_BLOCKS, 4, cols=5,
                  title=f"step {s['step']}: {POOL_BLOCKS - s['free']} blocks in use, {stored} tokens stored; "
                        + ("; ".join(s["events"]) or "everyone decodes"))
        plt.tight_layout()
        return fig

    plt.close(draw_snapshot(len(snaps) // 2))      # a quick self-test, so an error shows here and not inside the widget

    def pool_player():
        # The play button, the slider and the pool drawing they redraw. The callback keeps its own
        # Output (a local name), so a later cell that reuses a name cannot take the drawing away from it.
        step_slider = widgets.IntSlider(value=0, min=0, max=len(snaps) - 1, description="step")
        play = widgets.Play(value=0, min=0, max=len(snaps) - 1, interval=700)
        widgets.jslink((play, "value"), (step_slider, "value"))
        pool_view = widgets.Output()

        def show_step(_=None):
            with pool_view:
                pool_view.clear_output(wait=True)
                fig = draw_snapshot(step_slider.value)
                display(fig)
                plt.close(fig)

        step_slider.observe(show_step, names="value")
        show_step()
        return widgets.VBox([widgets.HBox([play, step_slider]), pool_view])

    display(pool_player())
    """),
    md(r"""
    As the trace runs, sequences end up with blocks scattered across the pool, and a freed block is
    soon serving someone else. Nothing ever has to move. (A real engine that runs out of blocks
    mid-generation *preempts* a sequence: frees its blocks and recomputes it later. Chapter 05
    does that; here a sequence that finds no free block simply waits a step.)

    ## 3 · The pool tensor and slot mapping

    The allocator and block tables are bookkeeping in plain Python. The memory itself is one tensor
    per layer for K and one for V, `[num_blocks, block_size, num_kv_heads, head_dim]`. Because
    the first two axes are contiguous, `k_cache.view(num_blocks * block_size, num_kv_heads, head_dim)`
    is the same memory seen as one row per slot, so a whole batch of new tokens is written with one
    indexed copy at their slots (`minikv.attention.torch_ref.write_kv`). Below, C's 9 tokens are
    written at their slots and read back two ways.
    """),
    code(r"""
    HKV, D = 1, 4                                        # one KV head of 4 numbers: small enough to print
    k_cache = torch.zeros(8, BS, HKV, D)                 # the pool from section 2: [num_blocks, block_size, Hkv, D]
    v_cache = torch.zeros_like(k_cache)

    kC, vC = torch.randn(C.num_tokens, HKV, D), torch.randn(C.num_tokens, HKV, D)   # C's keys and values, token order
    slots = torch.tensor(slot_mapping(C.blocks, range(C.num_tokens), BS))
    write_kv(kC, vC, k_cache, v_cache, slots)            # k_cache.view(-1, Hkv, D)[slots] = kC, in one copy
    print(f"C's slots: {slots.tolist()}")

    pos = 6
    block, offset = C.blocks[pos // BS], pos % BS
    assert torch.equal(k_cache[block, offset], kC[pos])                 # [block, offset] ...
    assert torch.equal(k_cache.view(-1, HKV, D)[slots[pos]], kC[pos])   # ... and the flat slot are the same place
    print(f"token {pos} of C: block {block}, offset {offset} = slot {int(slots[pos])}:", kC[pos, 0])
    """),
    md(r"""
    ## 4 · Paged attention, step by step

    A decoding step appends each sequence's new token (its K and V go to their slots first) and then
    lets that token attend to every token of its own sequence. With a contiguous cache, those keys
    were one slice. Now they are spread over blocks, so attention reads them *through the block
    table*:

    1. take the sequence's first `ceil(context_len / block_size)` blocks from its table;
    2. `k_cache[blocks]` is `[n_blocks, block_size, Hkv, D]`; flatten the first two axes to get the
       tokens in order, and keep the first `context_len` (the last block may be only partly full:
       its other slots hold whatever an earlier owner left there);
    3. from here it is chapter 01's decode attention: `softmax(scale · K q) V` per head.

    Here are sequences A and C from section 2, with 2 query heads sharing one KV head (GQA).
    The result must be exactly what dense attention over the contiguous K/V gives.
    """),
    code(r"""
    HQ = 2
    torch.manual_seed(1)
    k_cache.normal_(std=5)                      # fill the whole pool with junk first: as if earlier owners left it
    v_cache.normal_(std=5)
    dense = {}
    for name, table in (("A", A), ("C", C)):    # each sequence's real K/V, contiguous, then written at its slots
        k, v = torch.randn(table.num_tokens, HKV, D), torch.randn(table.num_tokens, HKV, D)
        write_kv(k, v, k_cache, v_cache, torch.tensor(slot_mapping(table.blocks, range(table.num_tokens), BS)))
        dense[name] = (k, v)
    q = torch.randn(2, HQ, D)                   # the new token of A and of C: [batch, Hq, D]
    scale = D ** -0.5

    for b, (name, table) in enumerate((("A", A), ("C", C))):
        n = table.num_tokens
        blocks = torch.tensor(table.blocks[: -(-n // BS)])                 # 1. the blocks that hold tokens 0..n-1
        keys = k_cache[blocks].flatten(0, 1)[:n]                          # 2. [n, Hkv, D], in token order
        values = v_cache[blocks].flatten(0, 1)[:n]
        assert torch.equal(keys, dense[name][0])                          #    the same keys we wrote
        out = decode_attention(q[b], keys.transpose(0, 1), values.transpose(0, 1), scale)   # 3. chapter 01's attention
        reference = decode_attention(q[b], dense[name][0].transpose(0, 1), dense[name][1].transpose(0, 1), scale)
        assert torch.allclose(out, reference)
        print(f"{name}: {n} tokens in blocks {blocks.tolist()} -> output of head 0: {out[0]}")

        whole = k_cache[blocks].flatten(0, 1)                             # what you get without step 2's [:n]
        if whole.shape[0] > n:
            wrong = decode_attention(q[b], whole.transpose(0, 1), v_cache[blocks].flatten(0, 1).transpose(0, 1), scale)
            print(f"   reading all {whole.shape[0]} slots of those blocks instead: {wrong[0]}  (junk got in)")
    """),
    md(r"""
    An engine does this for the whole batch at once. The block tables become one `[batch, max_blocks]`
    tensor, each row padded past its sequence's blocks, and `context_lens` says how many tokens
    each sequence has. minikv's reference, `minikv.attention.torch_ref.paged_decode_attention`,
    takes exactly that (it is also the signature of exercise 2.4):
    """),
    code(r"""
    block_tables = make_block_table_tensor([A.blocks, C.blocks], pad=-1)   # rows padded with -1
    context_lens = torch.tensor([A.num_tokens, C.num_tokens])
    print("block_tables:", block_tables.tolist(), " context_lens:", context_lens.tolist())
    batched = paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)
    for b, name in enumerate("AC"):
        k, v = dense[name]
        assert torch.allclose(batched[b], decode_attention(q[b], k.transpose(0, 1), v.transpose(0, 1), scale), atol=1e-6)
    print("batched paged attention == dense attention, for both sequences:", tuple(batched.shape))
    """),
    md(r"""
    ## 5 · Your turn: exercises 2.1 – 2.4

    Open **`exercises/ch02_paged_kv.py`**. Each class's or function's docstring is its spec: replace
    each `raise NotImplementedError` with your code, save, and run the check cell under it.
    `minikv.grade.check("2.1")` runs seeded and randomized tests against minikv's own versions and
    shows **PASS**, **FAIL** (with the first problem and a hint) or **TODO**. From a terminal,
    `minikv grade --chapter 2` grades the whole chapter.

    ### Exercise 2.1 · `class BlockAllocator`

    * `BlockAllocator(num_blocks)`: blocks `0 .. num_blocks - 1`, all free;
    * `allocate(n) -> list[int]`: `n` distinct free blocks, now in use. **All or nothing**: if fewer
      than `n` are free, raise `minikv.errors.KVCacheFull` and hand out nothing;
    * `free(block_ids)`: give blocks back. If an id is outside the pool, not in use (a double free),
      or repeated, raise `minikv.errors.BlockAllocatorError` and free **nothing**;
    * `num_free`: how many blocks are free (a property).

    Which free block comes out first is your choice. The checks replay random sequences of calls,
    valid and invalid, against minikv's allocator, and check that no block is ever handed out twice
    and none is lost. A negative id deserves a thought: in Python, `used[-1]` is the last block.
    """),
    code(r"""
    minikv.grade.check("2.1")
    """),
    md(r"""
    ### Exercise 2.2 · `slot_mapping(block_table, positions, block_size) -> list[int]`

    The slot of each position, through the block table:
    `block_table[pos // block_size] * block_size + pos % block_size`. Raise `IndexError` for a
    position that is negative or past the table's blocks (again, Python would happily index a
    list with `-1`).
    """),
    code(r"""
    minikv.grade.check("2.2")
    """),
    md(r"""
    ### Exercise 2.3 · `class BlockTable`: `blocks_needed` and `append_tokens`

    A table keeps `block_size`, `blocks` (the sequence's blocks in order, a list of its own) and
    `num_tokens` (tokens stored); the constructor takes all three.

    * `blocks_needed(n_new)`: how many new blocks appending `n_new` tokens takes. The last block may
      have free slots; those fill first. A table of 3 tokens in one block of 4 needs 0 blocks for 1
      more token, 1 block for 2 to 5 more.
    * `append_tokens(n_new, allocator)`: take those blocks from the allocator, append them to
      `blocks`, add `n_new` to `num_tokens`, and return the slots of the new tokens (your
      `slot_mapping` helps). If the allocator raises `KVCacheFull`, the table must be left exactly
      as it was: allocate *before* you change anything.
    """),
    code(r"""
    minikv.grade.check("2.3")
    """),
    md(r"""
    ### Exercise 2.4 · `paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale=None)`

    Section 4 as one function over a batch: `q` is `[batch, num_heads, head_dim]` (each sequence's
    new token), `k_cache` / `v_cache` are one layer of the pool, `[num_blocks, block_size, num_kv_heads, head_dim]`,
    `block_tables` is `[batch, max_blocks]` (rows padded with any value past a sequence's blocks),
    `context_lens[b]` is how many tokens sequence `b` has (its new one included). Return
    `[batch, num_heads, head_dim]` in `q`'s dtype; `scale` defaults to `1 / sqrt(head_dim)`.

    Query head `h` reads KV head `h // (num_heads // num_kv_heads)`, as in chapter 01. A plain loop
    over the batch is fine. The last check plugs your function into `LLM("tiny-llama")` and
    compares its tokens with the engine's own.
    """),
    code(r"""
    minikv.grade.check("2.4")
    """),
    md(r"""
    ## 6 · Plug your pieces in

    First, your allocator and block table run the trace of section 2, instead of minikv's. The
    blocks they choose may differ (that is your choice to make), but how many blocks are in use and
    how many tokens each sequence holds must match at every step, and every block must come back.
    `learner_module` imports your file afresh each time, so rerun these cells after an edit.
    """),
    code(r"""
    ex = minikv.grade.learner_module("ch02_paged_kv")   # exercises/ch02_paged_kv.py (solutions/ under MINIKV_IMPL=solutions)

    def counts(snapshots):
        return [(s["free"], {n: t for n, (_, t) in s["tables"].items()}) for s in snapshots]

    try:
        mine = simulate(ex.BlockAllocator(POOL_BLOCKS), ex.BlockTable, REQUESTS)
    except NotImplementedError:
        if SOLUTIONS:
            raise
        print("not done yet: finish exercises 2.1 and 2.3 (and 2.2, which 2.3 uses) in exercises/ch02_paged_kv.py; "
              'minikv.grade.check("2.1") and check("2.3") above show how far along you are.')
    else:
        same = counts(mine) == counts(snaps)
        overlaps = [s["step"] for s in mine
                    if len({b for bl, _ in s["tables"].values() for b in bl}) != sum(len(bl) for bl, _ in s["tables"].values())]
        print(f"your allocator ran the {len(mine)}-step trace: "
              + ("same block counts as minikv's at every step" if same else "block counts differ from minikv's")
              + (f"; blocks shared by two sequences at steps {overlaps[:5]}" if overlaps else "; no block ever owned twice")
              + f"; {mine[-1]['free']} of {POOL_BLOCKS} blocks free at the end")
        if SOLUTIONS:
            assert same and not overlaps and mine[-1]["free"] == POOL_BLOCKS
    """),
    md(r"""
    Now your attention in the real engine. `LLM(..., paged_decode_attention=fn)` makes the engine's
    paged path call `fn` for every decode step (one new token per sequence) in every layer, with
    that layer's pool, the batch's block tables and context lengths. We run a batch of SmolLM2
    prompts with minikv's attention and with yours, and compare the tokens.
    """),
    code(r"""
    PROMPTS = [
        "What is a KV cache?",
        "Name three colors.",
        "Write a haiku about memory.",
        "Why do operating systems use pages?",
    ]
    params = SamplingParams(max_tokens=24, temperature=0.0)
    llm = LLM("smollm2-135m", dtype=torch.float32)
    reference = llm.generate(PROMPTS, params, chat=True)

    ex = minikv.grade.learner_module("ch02_paged_kv")
    try:
        engine = LLM("smollm2-135m", dtype=torch.float32, paged_decode_attention=ex.paged_decode_attention)
        outs = engine.generate(PROMPTS, params, chat=True)
    except NotImplementedError:
        if SOLUTIONS:
            raise
        print('not done yet: finish exercise 2.4 in exercises/ch02_paged_kv.py; minikv.grade.check("2.4") above shows how far along you are.')
    else:
        for p, mine_out, ref_out in zip(PROMPTS, outs, reference):
            same = mine_out.token_ids == ref_out.token_ids
            print(f"{'same tokens' if same else 'DIFFERENT  '}  {p!r} -> {mine_out.text[:60]!r}")
        if SOLUTIONS:
            assert all(m.token_ids == r.token_ids for m, r in zip(outs, reference)), "the solution must reproduce the reference tokens"
    """),
    md(r"""
    ## 7 · Inside the engine's pool

    What does the engine's pool look like while it serves that batch? The hook lets us look: a spy
    passed as `paged_decode_attention` records the block tables and context lengths it is handed in
    layer 0 at every decode step, and which blocks the engine's sequences hold
    (`spy_llm.block_manager.held_blocks()`, their reserved blocks included), then calls minikv's
    reference to do the real work. The pool itself only holds tensors: who owns which block is
    written in one ledger, `spy_llm.cache` (here `NoPrefixCache`, since this engine caches no
    prefix), and `spy_llm.cache_stats()` counts its used and free blocks.
    """),
    code(r"""
    seen, names = [], {}                                   # what the spy saw at each decode step; P0, P1, ... by first block

    def spy(q, k_cache, v_cache, block_tables, context_lens, scale=None):
        pool = spy_llm.kv_pool
        if k_cache.data_ptr() == pool.k_cache(0).data_ptr():            # layer 0 only: once per step
            lens = torch.as_tensor(context_lens).tolist()
            tables = {}
            for row, n in zip(block_tables.tolist(), lens):
                name = names.setdefault(row[0], f"P{len(names)}")     # a sequence keeps its first block: name it by that
                tables[name] = (row[: -(-n // pool.block_size)], n)   # the blocks holding its tokens (the row is padded)
            held = spy_llm.block_manager.held_blocks()                 # every block the sequences hold, reserved ones too
            assert len(held) == spy_llm.cache_stats().num_used            # the pool's one ledger agrees
            seen.append((tables, held))
        return paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)

    spy_llm = LLM("smollm2-135m", dtype=torch.float32, paged_decode_attention=spy)
    spied = spy_llm.generate(PROMPTS, params, chat=True)
    assert [o.token_ids for o in spied] == [o.token_ids for o in reference]

    pool = spy_llm.kv_pool
    print(f"the pool: {pool.num_blocks} blocks of {pool.block_size} tokens "
          f"({pool.memory_bytes / 2**20:.0f} MiB for K and V of all {pool.num_layers} layers, "
          f"{pool.bytes_per_block / 2**10:.0f} KiB per block)")
    for i, o in enumerate(spied):                          # the batch's rows follow the prompts' order at the first step
        print(f"  P{i}: {len(o.prompt_token_ids)} prompt + {len(o.token_ids)} generated tokens ({o.finish_reason})")
    print(f"{len(seen)} decode steps seen")
    """),
    code(r"""
    shown = max(b for _, allocated in seen for b in allocated) + 1     # draw the part of the pool that was used
    fig, axes = plt.subplots(2, 1, figsize=(10, 1.0 + 1.3 * -(-shown // 8)))
    for ax, step in zip(axes, (0, len(seen) - 1)):
        tables, allocated = seen[step]
        holding = {b for blocks, _ in tables.values() for b in blocks}
        stored = sum(n for _, n in tables.values())
        draw_pool(ax, tables, shown, pool.block_size, cols=8, reserved=allocated - holding,
                  title=f"decode step {step}: {len(tables)} sequences, {stored} tokens in {len(holding)} blocks; "
                        f"{len(allocated - holding)} more blocks handed out (hatched); "
                        f"{pool.num_blocks - len(allocated)} of {pool.num_blocks} free")
    plt.tight_layout()
    plt.show()
    """),
    md(r"""
    Each sequence (`P0` … `P3`) keeps its tokens in a few blocks of 16 from one pool; the pale slots
    of a last block are not written yet. The hatched blocks are handed out but hold no token yet:
    for now minikv's scheduler reserves, when it admits a sequence, the blocks for its prompt *plus*
    `max_tokens`, so that a running sequence never runs out of room. That is still far less than a
    whole context per request, and the blocks return to the pool the moment a sequence ends.
    Chapter 05 makes tables grow one block at a time, as in section 2, and preempts a sequence when
    the pool runs dry.

    ## 8 · Summary

    * A contiguous cache must reserve a request's longest possible length up front; on a realistic
      mix of requests most of that memory is never filled (section 1 measured it; the PagedAttention
      paper found 60–80% lost in real systems).
    * Paging cuts the cache into fixed-size blocks from one shared pool. A sequence's **block table**
      lists its blocks in token order; position `pos` lives at **slot**
      `table[pos // block_size] * block_size + pos % block_size`. Waste is bounded by one partial
      block per sequence, and a freed block can serve any other sequence at once.
    * Attention reads through the block table: gather the blocks, keep exactly `context_len`
      tokens, and the rest is ordinary attention. Your allocator, block table and paged attention
      reproduce minikv's, and your attention served the real model.

    ## What real engines do differently

    * **No gather.** Our attention copies each sequence's blocks into a contiguous tensor first.
      Real kernels (vLLM's paged-attention kernels, FlashAttention and FlashInfer with a paged KV
      cache) read the blocks in place, one block at a time, inside the kernel. Chapter 06 writes such a
      kernel in Triton.
    * **Tables grow on demand, with preemption.** vLLM's KV cache manager allocates a block only when
      a sequence needs it; when the pool runs out, it preempts a running request (frees its blocks
      and recomputes it later). minikv gets this in chapter 05.
    * **Blocks are shared.** Because a block is found only through tables, two sequences can point at
      the same block: a shared system prompt, parallel samples of one prompt, a beam search. The
      paper adds reference counts and copy-on-write; chapters 03 and 04 build prefix caching on it.
    * **The pool is sized by measurement.** vLLM profiles a forward pass, then gives the KV pool what
      remains of a fraction of GPU memory (`gpu_memory_utilization`); the free blocks sit in a queue
      whose order later becomes the eviction order of the prefix cache. Some engines also swap
      blocks out to CPU memory.
    * **Layouts differ.** vLLM's and FlashInfer's pools hold `[num_blocks, block_size, heads, dim]` (as
      here) or heads-first variants that suit a kernel's memory access; SGLang uses blocks of a
      single token, so its radix tree can share any prefix.

    ## Further reading

    * Kwon et al., *Efficient Memory Management for Large Language Model Serving with PagedAttention* (SOSP 2023), [arXiv:2309.06180](https://arxiv.org/abs/2309.06180): the measurements of section 1 (their Figure 2), block tables, copy-on-write, preemption.
    * The vLLM team, [*vLLM: Easy, Fast, and Cheap LLM Serving with PagedAttention*](https://blog.vllm.ai/2023/06/20/vllm.html) (2023): the announcement, with animations of blocks being allocated.
    * vLLM documentation, [Paged attention](https://docs.vllm.ai/en/latest/design/paged_attention/): how the CUDA kernel reads the blocks.
    * Arpaci-Dusseau & Arpaci-Dusseau, *Operating Systems: Three Easy Pieces*, [chapter 18, Paging: Introduction](https://pages.cs.wisc.edu/~remzi/OSTEP/vm-paging.pdf): the OS idea this chapter borrows.
    * FlashInfer documentation, [paged KV cache API](https://docs.flashinfer.ai/api/page.html): the same layout, as a production kernel library sees it.
    * [nano-vllm](https://github.com/GeeeekExplorer/nano-vllm), `nanovllm/engine/block_manager.py`: a complete block manager in a few dozen lines.
    """),
]
