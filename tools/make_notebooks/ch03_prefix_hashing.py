"""Chapter 03: prefix caching with block hashes. Edit here, then run ``python tools/make_notebooks/build.py``."""

from nbtools import code, md

PATH = "chapters/03_prefix_hashing.ipynb"

CELLS = [
    md(r"""
    # Chapter 03 · Prefix caching: compute a shared prefix once

    Real traffic repeats itself. Every request to a chat product starts with the same system prompt;
    every turn of a conversation resends the whole conversation so far; every question about a
    document resends the document. The keys and values of those repeated tokens come out exactly the
    same each time, because a token's K/V depends only on the tokens before it (chapter 01). So an
    engine that kept them could skip the prefill of everything it has seen, and start computing at the
    first token that is new.

    Chapter 02 cut the KV cache into fixed-size **blocks**. That makes sharing cheap: two requests that
    begin with the same 512 tokens can point their block tables at the same 32 blocks of 16. What is
    missing is a way to *find* those blocks. This chapter builds vLLM's answer:

    * a **hash chain**: each full block is named by a hash of its tokens *and its parent's hash*, so
      equal hashes mean equal prefixes (3.1);
    * a **lookup** that walks a new prompt's hashes and returns the longest cached run of blocks,
      always leaving the last prompt token to compute (3.2);
    * a **ref-counted LRU block pool** that keeps finished requests' blocks around as long as nobody
      needs the memory, and evicts the least recently used first (3.3). It plugs into minikv's engine.

    The picture: two requests that share a system prompt, and the physical blocks they point at.
    """),
    code(r"""
    %matplotlib inline
    import hashlib
    import os
    import random
    import subprocess
    import sys
    import time

    import matplotlib.pyplot as plt
    import torch
    import xxhash
    from IPython.display import Markdown, display
    from matplotlib.patches import FancyArrowPatch, Rectangle

    import minikv.grade
    from minikv import LLM, SamplingParams
    from minikv.prefix import ROOT_HASH, BlockHashCache, chain_block_hashes, encode_block, hash_block

    # CI runs the notebooks against the reference solutions (MINIKV_IMPL=solutions); you run them against your own code.
    SOLUTIONS = os.environ.get("MINIKV_IMPL") == "solutions"
    # One CPU thread for the whole chapter: timings stay steady even on a busy machine, and
    # SmolLM2 is small enough not to mind. (On a GPU this setting does not matter.)
    torch.set_num_threads(1)
    """),
    code(r"""
    def draw_requests(ax, rows, pool_of, title):
        # rows: {request name: [block labels]}; pool_of: (request, block index) -> physical block id
        colors = {"S": "#9ecae1", "A": "#fdae6b", "B": "#a1d99b"}
        for r, (name, labels) in enumerate(rows.items()):
            y = 2.2 * (len(rows) - 1 - r) + 1.4
            ax.text(-0.3, y + 0.35, name, ha="right", va="center", fontsize=10)
            for i, label in enumerate(labels):
                ax.add_patch(Rectangle((i * 1.2, y), 1, 0.7, facecolor=colors[label[0]], edgecolor="black"))
                ax.text(i * 1.2 + 0.5, y + 0.35, label, ha="center", va="center", fontsize=9)
                b = pool_of[name, i]
                ax.add_patch(FancyArrowPatch((i * 1.2 + 0.5, y), (b * 1.0 + 0.45, 0.7), arrowstyle="-|>",
                                             mutation_scale=8, color="gray", lw=0.8))
        owner = {pool_of[key]: rows[key[0]][key[1]][0] for key in pool_of}
        for b in range(9):
            ax.add_patch(Rectangle((b * 1.0, 0), 0.9, 0.7, facecolor=colors.get(owner.get(b), "white"), edgecolor="gray"))
            ax.text(b * 1.0 + 0.45, 0.35, str(b), ha="center", va="center", fontsize=8, color="gray")
        ax.text(-0.3, 0.35, "KV pool", ha="right", va="center", fontsize=10)
        ax.set_xlim(-2, 9.5)
        ax.set_ylim(-0.2, 2.2 * len(rows) + 0.5)
        ax.set_title(title, fontsize=10)
        ax.axis("off")

    fig, ax = plt.subplots(figsize=(9, 3))
    rows = {"request A": ["S0", "S1", "S2", "A0", "A1"], "request B": ["S0", "S1", "S2", "B0"]}
    pool_of = {("request A", 0): 0, ("request A", 1): 1, ("request A", 2): 2, ("request A", 3): 3, ("request A", 4): 4,
               ("request B", 0): 0, ("request B", 1): 1, ("request B", 2): 2, ("request B", 3): 6}
    draw_requests(ax, rows, pool_of, "S = system prompt blocks: computed once (by A), pointed at by both tables")
    plt.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 1 · Three shapes of traffic, and what each one shares

    We load SmolLM2-135M with minikv's own block-hash prefix cache switched on
    (`prefix_cache="hash"`), and use its tokenizer to see how many tokens real prompts share. Three
    shapes account for most of the reuse that serving systems see (the SGLang paper measures hit rates
    of 50–99% on such workloads):

    1. **a shared system prompt**: many users, the same instructions in front of each question;
    2. **multi-turn chat**: turn *n*'s prompt is turn *n − 1*'s prompt, plus the model's answer,
       plus the new message;
    3. **few-shot examples or a shared document**: the same long context, different questions at the end.
    """),
    code(r"""
    llm = LLM("smollm2-135m", prefix_cache="hash")    # float32 on a CPU; ~5 s to load
    BLOCK = llm.block_size                            # 16 tokens per block
    tok = llm.tokenizer

    def chat_ids(messages):
        # The prompt the model sees: the chat template, ending where the assistant's answer starts.
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok.encode(text, add_special_tokens=False)

    def shared_prefix(a, b):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    SYSTEM = ("You are the support assistant of Tidewater Ferries. Answer in two sentences at most. Timetables: "
              "boats leave the harbour every hour from 6:00 to 22:00, the crossing takes 40 minutes, bicycles "
              "travel free, dogs must be kept on a lead, and tickets bought on board cost two euros more.")
    QUESTIONS = ["Can I bring my bike?", "When is the last boat?", "Is my dog allowed on deck?"]
    system_prompt = [chat_ids([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]) for q in QUESTIONS]

    history = [{"role": "system", "content": "You are a concise assistant."}]
    multi_turn = []
    for user, answer in [("Name a prime number.", "Seven."), ("And a bigger one?", "Thirteen."),
                         ("Which of the two is odd?", "Both are.")]:
        history.append({"role": "user", "content": user})
        multi_turn.append(chat_ids(history))
        history.append({"role": "assistant", "content": answer})

    DOCUMENT = ("Report of the harbour office, spring season. " + " ".join(
        f"In week {w}, {40 + 7 * w} crossings ran, {3 + w % 4} were late, and the busiest day was "
        f"{['Monday', 'Friday', 'Saturday', 'Sunday'][w % 4]}." for w in range(1, 9)))
    shared_doc = [chat_ids([{"role": "user", "content": DOCUMENT + "\n\nQuestion: " + q}])
                  for q in ["Which week had the most crossings?", "How many boats were late in week 3?",
                            "Which day is usually the busiest?"]]

    SHAPES = {"shared system prompt": system_prompt, "multi-turn chat": multi_turn, "shared document": shared_doc}
    rows = ["| traffic | request | prompt tokens | shared with an earlier request | in full blocks of 16 |",
            "|---|---:|---:|---:|---:|"]
    for shape, prompts in SHAPES.items():
        for i, p in enumerate(prompts):
            n = max([shared_prefix(p, q) for q in prompts[:i]], default=0)
            rows.append(f"| {shape} | {i} | {len(p)} | {n} | {min(n, len(p) - 1) // BLOCK * BLOCK} |")
    display(Markdown("\n".join(rows)))
    """),
    md(r"""
    Two things to notice in the last column. The shareable part is always a whole number of blocks: a
    block is reused whole or not at all. And the shared prefix ends where the prompts first differ:
    in the document case the question sits *after* the document, so the document is shared; had we
    put the question first, nothing would be. Prompt layout decides how much a prefix cache can do
    (stable instructions and documents first, the variable part last).

    ## 2 · Naming a prefix: the hash chain

    We need a key under which to file a block's K/V, such that a later prompt can compute the same
    key and find it. The tokens of the block alone are not enough: the K/V of `" the mat"` after
    `"The cat sat on"` is not the K/V of `" the mat"` after `"Wipe your feet on"`, because every layer
    mixes in all earlier tokens. The key must cover the **whole prefix** up to the block's end.

    Hashing the whole prefix for every block would cost quadratic time. The trick is a chain:

    $$h_i = H(h_{i-1},\ \text{tokens of block } i,\ \text{extra keys}_i), \qquad h_{-1} = \text{a fixed constant}$$

    Since $h_{i-1}$ already stands for everything before block $i$, $h_i$ stands for everything up
    to its end, at the cost of hashing one block. The *extra keys* hold whatever else changes the K/V
    or must keep requests apart: a LoRA adapter id, image hashes for multimodal prompts, or a
    **cache salt** per tenant. A trailing partial block gets no hash: its K/V is fine, but its next
    tokens are not known yet, so it cannot be filed under a key that says "these 16 tokens".

    Below, a sentence in blocks of 4 tokens, then the same sentence with one token changed in block 1.
    """),
    code(r"""
    SENTENCE = " The cat sat on the mat and then the dog sat on the rug too"
    ids = tok.encode(SENTENCE)
    changed = list(ids)
    changed[5] = tok.encode(" hat")[0]                 # block 1, second token: " mat" -> " hat"
    BS_DEMO = 4

    def draw_chain(ax, ids, y, reference=None, title=""):
        hashes = chain_block_hashes(ids, BS_DEMO)
        n_blocks = -(-len(ids) // BS_DEMO)
        for i in range(n_blocks):
            x, words = i * 3.3, [tok.decode([t]) for t in ids[i * BS_DEMO:(i + 1) * BS_DEMO]]
            full = i < len(hashes)
            differs = full and reference is not None and hashes[i] != reference[i]
            ax.add_patch(Rectangle((x, y), 2.8, 0.9, facecolor="#fee0d2" if differs else "#deebf7",
                                   edgecolor="red" if differs else "black", ls="-" if full else "--"))
            ax.text(x + 1.4, y + 0.45, " · ".join(w.strip() for w in words), ha="center", va="center", fontsize=8)
            label = f"h{i} = {hashes[i].hex()[:8]}" if full else "partial: no hash"
            ax.text(x + 1.4, y - 0.25, label, ha="center", va="center", fontsize=8, family="monospace",
                    color="red" if differs else "black")
            if i > 0 and full:
                ax.add_patch(FancyArrowPatch((x - 0.5, y - 0.25), (x + 0.05, y + 0.45), arrowstyle="-|>",
                                             mutation_scale=9, color="gray", connectionstyle="arc3,rad=-0.3"))
        ax.text(-0.2, y + 0.45, title, ha="right", va="center", fontsize=9)
        return hashes

    fig, ax = plt.subplots(figsize=(11, 2.8))
    original = draw_chain(ax, ids, 1.8, title="original")
    edited = draw_chain(ax, changed, 0.2, reference=original, title="one token changed")
    ax.set_xlim(-2.4, 13.3)
    ax.set_ylim(-0.3, 3)
    ax.axis("off")
    ax.set_title("each hash covers its parent (gray arrows): a change in block 1 changes every later hash", fontsize=10)
    plt.tight_layout()
    plt.show()

    assert original[0] == edited[0] and all(a != b for a, b in zip(original[1:], edited[1:]))
    print(f"{len(ids)} tokens -> {len(original)} full blocks of {BS_DEMO} (+ {len(ids) % BS_DEMO} tokens in a partial block)")
    """),
    md(r"""
    Block 2 holds the same four tokens in both sentences, yet its hash changed: it follows a different
    prefix, and its K/V really is different. That is exactly what we want from the key.

    **What exactly gets hashed.** minikv hashes a fixed byte encoding (`minikv.prefix.hashing.encode_block`):
    the parent hash, the token ids as little-endian 64-bit integers, the extra keys, each field with
    its length in front, so that no two different inputs give the same bytes. Two mistakes to avoid:

    * **Python's `hash()`**. It is salted per process for strings and bytes (and changes between Python
      versions for other objects), so two workers, or a restarted server, would disagree on every key.
      Run the next cell: two fresh Python processes hash the same salted key differently.
    * **Ambiguous encodings**, such as joining token ids as text: `[1, 23]` and `[12, 3]` both become
      `"123"` and would share K/V.
    """),
    code(r"""
    snippet = "print(hash(('tenant-a', (1, 2, 3))))"
    runs = [subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True).stdout.strip() for _ in range(2)]
    print("Python's hash() in two processes:   ", runs)
    print("sha256 chain in this process:        ", chain_block_hashes([1, 2, 3, 4], 4, salt="tenant-a")[0].hex()[:16])
    print("  ... and with another tenant's salt:", chain_block_hashes([1, 2, 3, 4], 4, salt="tenant-b")[0].hex()[:16])
    print("''.join of [1, 23] and [12, 3]:      ", "".join(map(str, [1, 23])), "".join(map(str, [12, 3])))
    """),
    md(r"""
    ## 3 · Measure it: time to first token, miss vs hit

    With `prefix_cache="hash"`, minikv's engine matches every prompt against its cache before running
    the model, prefills only the uncached tail, and reports how many prompt tokens it took from the
    cache in `output.num_cached_tokens`. The time to first token (TTFT, `output.metrics.ttft`) is what a
    user waits before the answer starts.

    For growing prefix lengths we send a prompt once to an empty cache (a **miss**), then a second prompt
    with the same prefix and a different 16-token ending (a **hit**). `max_tokens=1`: we time the prefill
    alone. (A few hundred tokens keep this cell quick on a CPU; the gap only widens with longer prefixes.)
    """),
    code(r"""
    doc_ids = tok.encode(DOCUMENT * 3)
    ending_a = tok.encode(" Question: which week of the spring season had the most late boats, and why?")[:16]
    ending_b = tok.encode(" Please summarise the whole report above in one short line for the harbour master.")[:16]
    assert len(ending_a) == len(ending_b) == 16 and ending_a[0] != ending_b[0]
    one_token = SamplingParams(max_tokens=1, temperature=0.0)
    PREFIX_LENS = [64, 192, 320, 448]

    llm.generate({"prompt_token_ids": doc_ids[:64]}, one_token)          # warm-up
    ttft = {"miss": [], "hit": []}
    for n in PREFIX_LENS:
        llm.reset_prefix_cache()                                         # an empty cache: the first prompt misses
        miss = llm.generate({"prompt_token_ids": doc_ids[:n] + ending_a}, one_token)[0]
        hit = llm.generate({"prompt_token_ids": doc_ids[:n] + ending_b}, one_token)[0]
        assert miss.num_cached_tokens == 0
        assert hit.num_cached_tokens == n // BLOCK * BLOCK, (n, hit.num_cached_tokens)
        ttft["miss"].append(miss.metrics.ttft * 1e3)
        ttft["hit"].append(hit.metrics.ttft * 1e3)
        print(f"prefix {n:3d} + 16 new tokens: miss {ttft['miss'][-1]:6.0f} ms, "
              f"hit {ttft['hit'][-1]:5.0f} ms ({hit.num_cached_tokens} tokens from the cache)")

    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(PREFIX_LENS, ttft["miss"], "o-", label="miss: prefill prefix + 16 tokens")
    ax.plot(PREFIX_LENS, ttft["hit"], "o-", label="hit: prefix from the cache, prefill 16 tokens")
    ax.set_xlabel("shared prefix length (tokens)")
    ax.set_ylabel("time to first token (ms)")
    ax.set_ylim(bottom=0)
    ax.legend()
    plt.tight_layout()
    plt.show()
    assert ttft["hit"][-1] < ttft["miss"][-1], "a hit on a 448-token prefix should be faster than a miss"
    stats = llm.cache_stats()                                           # counted since the last reset
    print(f"last two requests: {stats.hit_tokens} of {stats.query_tokens} prompt tokens from the cache "
          f"({stats.hit_rate:.0%}); {stats.num_cached} blocks of the pool's {stats.num_blocks} hold cached prefixes")
    """),
    md(r"""
    The miss grows with the prefix, since prefill does work for every prompt token. The hit stays
    nearly flat: it prefills only the 16 new tokens, whose attention reads the cached keys and values
    of the prefix (that read grows with the prefix too, but it is cheap next to recomputing the
    prefix's K/V through all 30 layers). On a GPU with prompts of thousands of tokens the same gap is
    what makes a chatbot's second turn answer as fast as its first.

    ## 4 · Block size and the partial block

    Only full blocks get a hash, so the last `len % block_size` tokens of whatever was cached never
    hit. Larger blocks mean fewer hashes, smaller block tables and better memory access in the
    attention kernel, but more tokens lost at the end of every cached sequence. Let us measure that
    trade-off on a synthetic **multi-turn** workload, driving minikv's `BlockHashCache` directly (no
    model needed): each turn's prompt is the whole conversation so far plus a new user message, and
    the engine caches the prompt and the answer (all but the answer's last token, whose K/V is never
    computed) when the turn ends.
    """),
    code(r"""
    def multi_turn_workload(num_chats=24, turns=6, seed=0):
        # (chat id, prompt tokens, answer tokens) per turn, chats interleaved as a server would see them
        rng = random.Random(seed)
        system = [rng.randrange(50_000) for _ in range(40)]             # a system prompt every chat shares
        chats = [list(system) for _ in range(num_chats)]
        for _ in range(turns):
            for c in range(num_chats):
                chats[c] += [rng.randrange(50_000) for _ in range(rng.randint(5, 40))]   # the user's message
                answer = [rng.randrange(50_000) for _ in range(rng.randint(10, 80))]
                yield c, list(chats[c]), answer
                chats[c] += answer

    def hit_rate(block_size: int) -> float:
        cache = BlockHashCache(num_blocks=200_000 // block_size, block_size=block_size)  # big: no eviction here
        for _, prompt, answer in multi_turn_workload():
            m = cache.match(prompt)
            written = prompt + answer[:-1]                                # K/V computed for these tokens
            table = list(m.block_ids) + cache.allocate(-(-len(written) // block_size) - len(m.block_ids))
            cache.insert(written, table)
            cache.release(table)
        return cache.stats().hit_rate

    SIZES = [1, 2, 4, 8, 16, 32, 64, 128]
    rates = [hit_rate(bs) for bs in SIZES]
    for bs, r in zip(SIZES, rates):
        print(f"block size {bs:3d}: hit rate {r:6.1%}")

    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(SIZES, [100 * r for r in rates], "o-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(SIZES, [str(s) for s in SIZES])
    ax.set_xlabel("block size (tokens)")
    ax.set_ylabel("prompt tokens from the cache (%)")
    ax.set_ylim(0, 100)
    ax.set_title("24 chats x 6 turns, sharing a 40-token system prompt", fontsize=10)
    plt.tight_layout()
    plt.show()
    assert rates == sorted(rates, reverse=True), "the hit rate should fall as blocks grow"
    """),
    md(r"""
    At block size 1 the cache is token-granular: it finds everything the conversation has said
    before (and, for each chat's first message, the system prompt that other chats cached); only the
    last prompt token is recomputed. As blocks grow the rate falls: each turn loses, on average, about
    half a block at the end of the conversation so far, the partial block that never got a hash. At
    128 tokens per block that is a large share of a short turn. vLLM's default of 16 tokens per
    block loses a few percent here. A radix tree (chapter 04) matches token by token and does not pay
    this, at the price of splitting tree nodes and copying partly shared blocks.

    ## 5 · Eviction: the free queue is the LRU list

    A finished request's cached blocks are not freed at once: they stay filed under their hashes,
    with reference count 0, waiting in the **free queue**. When `allocate` needs blocks it takes them
    from the head of that queue; a cached block taken there loses its hash (it is *evicted*). A hit on a
    waiting block takes it back out of the queue (it is *revived*). Released blocks join the tail, and
    a finished request releases its blocks **last block first**, so its tail blocks (the longest
    prefixes, the least likely to be shared) are evicted before its head blocks (the system prompt).

    Watch a pool of 6 blocks of 4 tokens. `S` is a two-block system prompt; `*` marks a cached block.
    """),
    code(r"""
    pool = BlockHashCache(num_blocks=8, block_size=4)
    S = [1, 2, 3, 4, 5, 6, 7, 8]                      # the system prompt: blocks of 4, so two blocks
    table_rows, tables, hits = [], {}, {}

    def show(event):
        queue = " ".join(f"{b}{'*' if pool.is_cached(b) else ''}" for b in pool.free_queue())
        used = ", ".join(f"{name}: {t}" for name, t in tables.items())
        table_rows.append(f"| {len(table_rows) + 1} | {event} | {queue or '(empty)'} | {used or '-'} | {pool.stats().evictions} |")

    def arrive(name, tokens):
        m = pool.match(tokens)
        hits[name] = list(m.block_ids)
        tables[name] = hits[name] + pool.allocate(-(-len(tokens) // 4) - len(hits[name]))
        pool.insert(tokens, tables[name])
        show(f"{name} arrives ({len(tokens)} tokens), hits {hits[name] or 'nothing'}")

    def finish(name):
        pool.release(tables.pop(name))
        show(f"{name} finishes")

    show("empty pool")
    arrive("A", S + [10, 11, 12, 13, 14])
    finish("A")
    arrive("B", S + [20, 21, 22, 23, 24, 25, 26])
    arrive("C", list(range(30, 42)))
    finish("C")
    finish("B")
    arrive("D", list(range(50, 66)))
    arrive("E", S + [60])
    display(Markdown("| step | event | free queue, head → tail (`*` cached) | in use | evictions |\n|---:|---|---|---|---:|\n"
                     + "\n".join(table_rows)))
    assert hits["E"] == [0, 1] and pool.stats().evictions == 4, "the system prompt should survive D's evictions"
    """),
    md(r"""
    Follow the system prompt's blocks 0 and 1.

    * **Step 3**: A finishes and its blocks go back last first, so its private blocks 3 and 2 wait
      *ahead* of the system prompt's 1 and 0: they will be evicted first.
    * **Step 4**: B's hit on 0 and 1 **revives** them: they leave the queue, and a block in use can
      never be evicted. B's new blocks come from the head (4 and 5, never cached, so nothing is lost).
    * **Step 7**: after C and then B finish, the queue is in least-recently-used order: A's block 2,
      C's blocks, then B's, with the system prompt last, because B used it most recently.
    * **Step 8**: D needs four blocks and takes the head of the queue, **evicting** 2, 3, 7 and 6.
    * **Step 9**: E still hits the system prompt. LRU with revival keeps hot prefixes alive: every
      request that shares them moves them back to the tail.

    ## 6 · Why the hash must be strong, or checked

    A hit hands a request K/V computed for *other* tokens whenever two different prefixes share a hash.
    The request then silently generates from the wrong context, and there is no error to catch. With
    a 256-bit SHA-256 digest a collision is out of reach (the chance of any collision among $2^{64}$
    blocks is about $2^{-128}$), so minikv trusts a SHA-256 match without looking further. A fast
    non-cryptographic hash (xxHash) is cheaper per block but offers no such guarantee against crafted
    inputs, so minikv then **verifies** each hit: it stores each cached block's token ids and compares them.

    To see the failure, shrink the hash to 8 bits, where collisions come every few hundred blocks.
    """),
    code(r"""
    def toy_hash(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()[:1]     # 8 bits: only 256 different hashes

    cached_prompt = [101, 102, 103, 104, 105]        # block 0 = 101..104, plus one token to compute
    target = hash_block(ROOT_HASH, cached_prompt[:4], hash_fn=toy_hash)
    other = next([i, i + 1, i + 2, i + 3] for i in range(1000, 100_000)
                 if hash_block(ROOT_HASH, [i, i + 1, i + 2, i + 3], hash_fn=toy_hash) == target)
    print(f"block {cached_prompt[:4]} and block {other} share the 8-bit hash {target.hex()}")

    for verify in (False, True):
        cache = BlockHashCache(num_blocks=4, block_size=4, hash_fn=toy_hash, verify=verify)
        table = cache.allocate(2)
        cache.insert(cached_prompt, table)
        cache.release(table)
        m = cache.match(other + [7])
        verdict = (f"hit block {m.block_ids[0]}, which holds the K/V of {cached_prompt[:4]}: WRONG"
                   if m.block_ids else "miss: the stored tokens differ, the collision is caught")
        print(f"verify={verify!s:5}: {verdict} (collisions counted: {cache.stats().collisions})")
        assert bool(m.block_ids) != verify

    block = encode_block(ROOT_HASH, list(range(16)))     # the bytes of one 16-token block
    for name, fn in {"sha256": lambda d: hashlib.sha256(d).digest(), "xxh3_128": xxhash.xxh3_128_digest}.items():
        t0 = time.perf_counter()
        for _ in range(20_000):
            fn(block)
        print(f"{name:8}: {(time.perf_counter() - t0) / 20_000 * 1e6:.2f} µs per 16-token block")
    """),
    md(r"""
    Both choices are sound: a strong hash that is trusted, or a fast hash whose hits are checked
    against the stored tokens. vLLM offers both kinds of hash (`--prefix-caching-hash-algo`), and its
    design document recommends SHA-256 where tenants must not be able to craft collisions; nano-vllm
    pairs xxHash with a token comparison, like minikv's verified mode. The salt is the other half of
    keeping tenants apart: two tenants with different salts never share a block, so neither can learn
    from a fast TTFT whether the other sent a given prompt (chapter 08 measures that side channel).

    ## 7 · Your turn: exercises 3.1 – 3.3

    Open **`exercises/ch03_prefix_hashing.py`**. Each docstring is the spec: replace each
    `raise NotImplementedError` with your code, save, and run the check cell under it (the grader reads
    your file from disk each time, so there is no need to restart the kernel). `minikv grade --chapter 3`
    in a terminal grades all three. Exercises 3.2 and 3.3 call your earlier functions; until those pass,
    the checks lend you minikv's, so each exercise is graded on its own code.
    """),
    md(r"""
    ### Exercise 3.1 · `chain_block_hashes(token_ids, block_size, salt=None) -> list[bytes]`

    One SHA-256 digest per full block: `hashlib.sha256(encode_block(parent, block_tokens, extra_keys)).digest()`,
    with `parent = ROOT_HASH` for block 0 and the previous block's hash after that. The salt goes into
    block 0's extra keys as `(("cache_salt", salt),)`; the chain carries it into every later hash. Your
    hashes must equal `minikv.prefix.chain_block_hashes` byte for byte, so that your pool and minikv's
    agree on every key.
    """),
    code(r"""
    minikv.grade.check("3.1")
    """),
    md(r"""
    ### Exercise 3.2 · `longest_cache_hit(cached, token_ids, block_size, salt=None) -> list[int]`

    `cached` maps a block hash to the block holding that block's K/V. Return the blocks of the longest
    cached prefix: walk the prompt's hashes from block 0 and stop at the first miss (block 3 is useless
    without blocks 0–2). Then the **last-token rule**: the model must compute at least the last prompt
    token, whose logits give the first output token, so at most `(len(token_ids) - 1) // block_size`
    blocks may hit. A 48-token prompt fully cached in blocks of 16 hits 2 blocks and recomputes 16 tokens;
    a 49-token prompt hits 3.
    """),
    code(r"""
    minikv.grade.check("3.2")
    """),
    md(r"""
    ### Exercise 3.3 · `class BlockPool`

    The pool of section 5, with the interface of minikv's `PrefixCache` so the engine can use it:
    `match` (a hit revives evictable blocks), `allocate` (from the head of the free queue, evicting
    cached blocks it takes), `insert` (file full blocks under their hashes), `release` (last block
    first, to the tail), `evict` (LRU first, never a block in use). The checks replay the vLLM design
    document's worked example and random request streams against minikv's `BlockHashCache`, comparing
    the free queue, the reference counts and the cached blocks after every step; the last check serves
    `LLM("tiny-llama")` with your pool.
    """),
    code(r"""
    minikv.grade.check("3.3")
    """),
    md(r"""
    ## 8 · Plug your pool into the engine

    Besides `"none"`, `"hash"` and `"radix"`, `LLM(..., prefix_cache=...)` takes a prefix cache of
    your own: an object with the methods of `minikv.prefix.PrefixCache`, or a function
    `(num_blocks, block_size) -> cache` that the engine calls once it knows the size of its KV pool.
    Below, the same traffic (the system-prompt requests, then the chat turns of section 1) runs with
    minikv's block-hash cache and with your `BlockPool`; the tokens and the number of cached tokens
    must agree request by request. `learner_module` imports your file afresh, so
    rerun the cell after an edit.
    """),
    code(r"""
    ex = minikv.grade.learner_module("ch03_prefix_hashing")   # exercises/ (solutions/ under MINIKV_IMPL=solutions)
    params = SamplingParams(max_tokens=8, temperature=0.0)
    ROUNDS = [system_prompt[:1], system_prompt[1:], multi_turn[:1], multi_turn[1:]]

    def serve(engine):
        out = []
        for prompts in ROUNDS:
            out += engine.generate([{"prompt_token_ids": p} for p in prompts], params)
        return out

    llm.reset_prefix_cache()
    reference = serve(llm)
    pools = []

    def my_pool(num_blocks, block_size):
        pools.append(ex.BlockPool(num_blocks, block_size))
        return pools[-1]

    try:
        mine = serve(LLM("smollm2-135m", prefix_cache=my_pool))
    except NotImplementedError:
        if SOLUTIONS:
            raise
        mine = None
        print("your BlockPool is not done yet: finish exercise 3.3 in exercises/ch03_prefix_hashing.py; "
              'minikv.grade.check("3.3") above shows how far along you are.')
    if mine is not None:
        same = True
        for i, (r, m) in enumerate(zip(reference, mine)):
            ok = r.token_ids == m.token_ids and r.num_cached_tokens == m.num_cached_tokens
            same &= ok
            print(f"request {i}: {len(r.prompt_token_ids):3d} prompt tokens, cached {m.num_cached_tokens:3d} "
                  f"(minikv's: {r.num_cached_tokens:3d}), {'same tokens' if r.token_ids == m.token_ids else 'DIFFERENT tokens'}"
                  f"{'' if ok else '  <-- differs'}")
        print("your pool after the run:", pools[-1])
        if SOLUTIONS:
            assert same, "the solution's BlockPool must serve exactly like prefix_cache='hash'"
            assert sum(m.num_cached_tokens for m in mine) > 0
    """),
    md(r"""
    If every line says *same tokens* with the same cached counts, the engine just served a real model
    with prefix caching you wrote. 🎉

    ## 9 · Summary

    * Requests share prefixes: system prompts, conversation histories, documents and few-shot examples.
      The K/V of a shared prefix is the same for every request, so it can be computed once.
    * vLLM files each **full block** under a **chained hash** of (parent hash, block tokens, extra keys):
      equal hashes mean equal prefixes, and a lookup walks the chain until the first miss. A partial
      block gets no hash, and the **last prompt token is always computed**.
    * A cache hit skips prefill: on SmolLM2 the TTFT of a hit stayed nearly flat while a miss grew with
      the prefix.
    * The pool keeps unreferenced cached blocks in an **LRU free queue**: allocation evicts from the head,
      hits revive, finished requests release **tail first** so shared heads outlive private tails.
    * The hash must be collision-resistant (SHA-256) or every hit must be verified; a salt keeps
      tenants apart.

    ## What real engines do differently

    * **vLLM v1** (`vllm/v1/core/block_pool.py`, `kv_cache_utils.py`, `kv_cache_manager.py`) works the
      same way, with a hand-written doubly linked free list instead of an `OrderedDict`, hashes computed
      once per request as tokens arrive, several KV cache groups (e.g. sliding-window and full-attention
      layers) each with its own pool, and extra keys for LoRA, multimodal inputs and the cache salt.
      It also caches blocks as soon as they are scheduled, so requests in the same batch can share.
    * **SGLang** keeps prefixes in a **radix tree** of token ids instead of a hash table: matches are
      token-granular (no lost partial blocks), and eviction removes leaves, which is LRU by construction
      of the tree. That is **chapter 04**.
    * **Scheduling** matters as much as the cache: ordering waiting requests so those that share a prefix
      run close together raises the hit rate (SGLang's longest-prefix-match policy, chapter 05).
    * Engines extend the cache beyond the GPU: offloading evicted blocks to CPU memory or disk
      (LMCache, vLLM's KV connectors, SGLang's hierarchical cache) so a hit survives GPU eviction.

    ## Further reading

    * vLLM documentation, [Automatic Prefix Caching](https://docs.vllm.ai/en/latest/design/prefix_caching/): the design of this chapter, with the worked example the grader replays.
    * Kwon et al., *Efficient Memory Management for Large Language Model Serving with PagedAttention* (2023), [arXiv:2309.06180](https://arxiv.org/abs/2309.06180): blocks, block tables and sharing between sequences.
    * Zheng et al., *SGLang: Efficient Execution of Structured Language Model Programs* (2023), [arXiv:2312.07104](https://arxiv.org/abs/2312.07104): RadixAttention and cache-aware scheduling.
    * nano-vllm's `engine/block_manager.py`: a block manager with chained xxHash and token verification in about a hundred lines.
    """),
]
