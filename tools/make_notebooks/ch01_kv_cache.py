"""Chapter 01: the KV cache. Edit here, then run ``python tools/make_notebooks/build.py``."""

from nbtools import code, md

PATH = "chapters/01_kv_cache.ipynb"

CELLS = [
    md(r"""
    # Chapter 01 · The KV cache: stop recomputing the past

    A language model writes one token at a time, and every new token has to look back at all the
    tokens before it. The naive way to let it look back is to run the *whole* sequence through the
    model again at every step, so the 500th token costs about 500 times as much as the first.
    The **KV cache** keeps the keys and values that each layer already computed, so that every step
    only has to process the one new token.

    In this chapter you will

    * see *why* the keys and values of old tokens never change (an attention recap with numbers you can edit);
    * measure the difference on a real model, SmolLM2-135M;
    * add up the memory bill the cache runs up, and see how grouped-query attention shrinks it;
    * build the three pieces yourself (1.1 the memory formula, 1.2 a contiguous `KVCache`,
      1.3 single-token attention) and plug them into minikv's engine.

    The picture below is the whole chapter in one glance: which tokens get their keys and values
    computed at each step, without a cache (left) and with one (right).
    """),
    code(r"""
    %matplotlib inline
    import math
    import os
    import time

    import matplotlib.pyplot as plt
    import torch

    import minikv.grade
    from minikv import LLM, SamplingParams
    from minikv.attention.contiguous import ContiguousStep
    from minikv.attention.reference import decode_attention
    from minikv.kv.contiguous import ContiguousKVCache

    # CI runs the notebooks against the reference solutions (MINIKV_IMPL=solutions); you run them against your own code.
    SOLUTIONS = os.environ.get("MINIKV_IMPL") == "solutions"
    # One CPU thread for the whole chapter: timings stay steady even on a busy machine, and
    # SmolLM2 is small enough not to mind. (On a GPU this setting does not matter.)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    torch.set_printoptions(precision=3, sci_mode=False)
    """),
    code(r"""
    def work_grid(prompt_len: int, steps: int, cached: bool) -> torch.Tensor:
        # row s = decoding step s, column p = token position; 1 where step s computes K/V for position p
        grid = torch.zeros(steps, prompt_len + steps - 1)
        for s in range(steps):
            end = prompt_len + s                      # tokens in the sequence when step s runs
            start = 0 if (s == 0 or not cached) else end - 1
            grid[s, start:end] = 1
        return grid

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
    for ax, cached in zip(axes, [False, True]):
        grid = work_grid(prompt_len=4, steps=8, cached=cached)
        ax.imshow(grid, cmap="Blues", vmin=0, vmax=1.4)
        ax.set_title(f"{'with' if cached else 'without'} a KV cache: {int(grid.sum())} token-forwards")
        ax.set_xlabel("token position")
        ax.set_xticks(range(grid.shape[1]))
        ax.set_yticks(range(grid.shape[0]))
    axes[0].set_ylabel("decoding step (0 = the 4-token prompt)")
    plt.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 1 · Attention in one head and a handful of tokens

    Inside every layer, each token's hidden state is projected into three vectors:

    * a **query** $q$: what this token is looking for;
    * a **key** $k$: what this token offers to be found by;
    * a **value** $v$: what this token hands over when it is picked.

    Token $i$'s output is an average of the values of tokens $0..i$, weighted by
    $\mathrm{softmax}_j(q_i \cdot k_j / \sqrt{d})$. The "$0..i$" is the **causal** rule: a token never
    looks at tokens that come after it.

    Here is one head with `head_dim` $d = 2$ and four tokens. Change any number and rerun the cell.
    """),
    code(r"""
    # one row per token: [T=4, d=2]
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [0.0, -1.0]])
    scale = 1 / math.sqrt(q.shape[-1])

    def causal_attention_1head(q, k, v, scale):
        T = q.shape[0]
        scores = q @ k.T * scale                           # [T, T]: how well query i matches key j
        future = torch.ones(T, T).triu(diagonal=1).bool()  # j > i: not allowed to look
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return weights @ v, weights                        # [T, d], [T, T]

    out4, weights4 = causal_attention_1head(q, k, v, scale)
    print("attention weights (row i = token i, each row sums to 1):")
    print(weights4)
    print("outputs:")
    print(out4)
    """),
    md(r"""
    Now a fifth token arrives (this is one step of decoding). Watch two things:

    1. the outputs of the first four tokens do not change: none of them may look at token 4;
    2. token 4's output needs only *its own* query and the keys and values of tokens 0..4.

    So if we kept `k` and `v` from before, we need to compute just one new row of each.
    """),
    code(r"""
    q5 = torch.cat([q, torch.tensor([[1.0, -0.5]])])   # the new token's query, key and value
    k5 = torch.cat([k, torch.tensor([[0.5, 0.5]])])
    v5 = torch.cat([v, torch.tensor([[3.0, 0.0]])])

    out5, _ = causal_attention_1head(q5, k5, v5, scale)
    assert torch.allclose(out5[:4], out4), "the old tokens' outputs changed?!"

    # One step with a cache: the new query against the stored keys/values (plus its own, just appended).
    # minikv's decode_attention takes q [heads, d] and keys/values [kv_heads, length, d].
    new_row = decode_attention(q5[-1][None], k5[None], v5[None], scale)[0]
    assert torch.allclose(new_row, out5[-1])
    print("recomputing all 5 rows, last one:", out5[-1])
    print("one new query vs cached K/V:     ", new_row)
    """),
    md(r"""
    **Why this holds in every layer of a real model.** In layer $\ell$, token $i$'s key is
    $k_i = W_k\,h_i^{\ell}$, where $h_i^{\ell}$ is that token's hidden state entering the layer. Because
    every layer below is causal, $h_i^{\ell}$ depends only on tokens $0..i$. Appending a token
    changes nothing about tokens $0..i$, so their hidden states, keys and values in *every* layer stay
    exactly what they were. (Rotary position embeddings rotate each query and key by its token's own
    position, which does not change either.)

    That is the KV cache: keep, for every layer, the key and value of every token seen so far. One
    decoding step then does two things in each layer:

    * **append** the new token's $k$ and $v$ to what is stored (exercise 1.2), and
    * **attend**: the new token's $q$ against everything stored (exercise 1.3).

    Without a cache, a step recomputes every row, and then throws all of them away except the last,
    because only the last position's logits are needed to pick the next token.

    ## 2 · The real model's shapes

    minikv's model never decides where keys and values live. Its forward is
    `model(input_ids [T], positions [T], step, logits_indices)`; each attention layer computes
    $q, k, v$ for the $T$ new tokens and calls `step.attend(layer, q, k, v)`. The step object
    stores $k, v$ and returns the attention output. Below, `ContiguousStep` stores them in a
    `ContiguousKVCache`: one preallocated buffer per sequence, the structure you will write in 1.2.

    We run the model in float32 throughout this chapter, so that the runs we compare agree to the
    last token on any device (in bfloat16 a near-tie between two tokens can flip).
    """),
    code(r"""
    llm = LLM("smollm2-135m", dtype=torch.float32)   # the first run ever converts the embedded weights (~20 s)
    cfg, dev = llm.config, llm.device
    print(f"SmolLM2-135M: {cfg.num_layers} layers, {cfg.num_heads} query heads, "
          f"{cfg.num_kv_heads} KV heads, head_dim {cfg.head_dim}, on {dev}")

    prompt_ids = llm.encode("Once upon a time, in a small village by the sea,")
    T = len(prompt_ids)
    cache = ContiguousKVCache(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, max_len=64, dtype=llm.dtype, device=dev)
    with torch.inference_mode():
        step = ContiguousStep([cache], [T], llm.scale)
        logits = llm.model(torch.tensor(prompt_ids, device=dev), torch.arange(T, device=dev), step,
                           torch.tensor([T - 1], device=dev))        # logits only for the last position
    print(f"prompt: {T} tokens")
    print(f"cache.k: {tuple(cache.k.shape)} = [layers, kv_heads, max_len, head_dim]; filled: {len(cache)} positions")
    print(f"logits: {tuple(logits.shape)}; next token: {llm.tokenizer.decode(logits.argmax(-1))!r}")
    assert len(cache) == T and cache.lengths == [T] * cfg.num_layers
    """),
    md(r"""
    Notice `num_kv_heads` (3) is smaller than `num_heads` (9): SmolLM2 uses **grouped-query
    attention** (GQA). Each group of 3 query heads shares one key/value head, so the cache is 3 times
    smaller than if every query head had its own. Section 4 puts a price on that.

    ## 3 · Measure it: generation without and with the cache

    Two greedy decoders that differ in one thing. The first forgets everything between steps and
    reruns the whole sequence; the second prefills the prompt once, then feeds one token per step.
    The exact milliseconds depend on your machine; the *shape* of the two curves is what matters.
    """),
    code(r"""
    def forward(cache, new_ids: list[int], start: int) -> int:
        # Run new_ids (at positions start, start+1, ...) through the model; return the greedy next token.
        ids = torch.tensor(new_ids, device=dev)
        positions = torch.arange(start, start + len(new_ids), device=dev)
        step = ContiguousStep([cache], [len(new_ids)], llm.scale)
        logits = llm.model(ids, positions, step, torch.tensor([len(new_ids) - 1], device=dev))
        return int(logits.argmax(-1))

    def new_cache(max_len: int) -> ContiguousKVCache:
        return ContiguousKVCache(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, max_len, dtype=llm.dtype, device=dev)

    @torch.inference_mode()
    def generate_without_cache(prompt_ids: list[int], n: int):
        ids, step_ms, fed = list(prompt_ids), [], 0
        for _ in range(n):
            t0 = time.perf_counter()
            ids.append(forward(new_cache(len(ids)), ids, start=0))   # a fresh, empty cache every step
            step_ms.append((time.perf_counter() - t0) * 1e3)
            fed += len(ids) - 1
        return ids[len(prompt_ids):], step_ms, fed

    @torch.inference_mode()
    def generate_with_cache(prompt_ids: list[int], n: int):
        ids, step_ms, fed = list(prompt_ids), [], 0
        cache = new_cache(len(prompt_ids) + n)                        # one cache for the whole generation
        new = list(prompt_ids)                                        # step 0 feeds the prompt (the prefill)...
        for _ in range(n):
            t0 = time.perf_counter()
            ids.append(forward(cache, new, start=len(ids) - len(new)))
            step_ms.append((time.perf_counter() - t0) * 1e3)
            fed += len(new)
            new = ids[-1:]                                            # ...every later step feeds one token
        return ids[len(prompt_ids):], step_ms, fed
    """),
    code(r"""
    N_NEW = 64                      # tokens to generate; try 128 if you have a minute to spare
    generate_with_cache(prompt_ids, 2)                                          # warm-up
    toks_cached, ms_cached, fed_cached = generate_with_cache(prompt_ids, N_NEW)
    toks_plain, ms_plain, fed_plain = generate_without_cache(prompt_ids, N_NEW)

    # The cache changes how much work is done, never the answer:
    assert toks_cached == toks_plain, "the cached and uncached generations differ"
    assert fed_plain == sum(range(T, T + N_NEW)) and fed_cached == T + N_NEW - 1
    print("generated:", repr(llm.tokenizer.decode(toks_cached)))
    print(f"without cache: {sum(ms_plain) / 1e3:5.2f} s, fed {fed_plain:,} tokens through the model")
    print(f"with cache:    {sum(ms_cached) / 1e3:5.2f} s, fed {fed_cached:,} tokens "
          f"({sum(ms_plain) / sum(ms_cached):.1f}x faster)")
    """),
    code(r"""
    positions = list(range(T, T + N_NEW))                   # sequence length when each step runs
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(positions, ms_plain, ".-", label="without cache: rerun the whole sequence")
    ax.plot(positions, ms_cached, ".-", label="with cache: feed one new token")
    ax.set_xlabel("tokens in the sequence when the step runs")
    ax.set_ylabel("step latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"SmolLM2-135M, greedy decoding of {N_NEW} tokens after a {T}-token prompt")
    ax.legend()
    plt.show()

    slope = torch.linalg.lstsq(torch.tensor([[p, 1.0] for p in positions]), torch.tensor(ms_plain)[:, None]).solution[0, 0]
    print(f"without a cache, each extra token of context adds about {slope:.2f} ms to every later step")
    """),
    md(r"""
    The no-cache line climbs in a straight line: step $p$ reruns all $p$ tokens, so each step costs
    more than the last and the whole generation grows with the *square* of its length. The cached line
    stays flat (its first point is the prefill of the prompt): every step feeds one token, and at these
    lengths reading the stored keys and values is a tiny part of the work next to the weights. That
    reading does grow with length too; at tens of thousands of tokens it becomes the main cost of a
    decoding step, which is why chapter 06 writes a fast kernel for it.

    ## 4 · The memory bill

    The speed is not free. Each token leaves behind, in every layer, one key and one value vector per
    KV head:

    $$\text{bytes per token} = 2 \times \text{layers} \times \text{KV heads} \times \text{head\_dim} \times \text{bytes per number}$$

    and that is paid for every token of every sequence being served at the same time. First, check
    the formula against the cache we allocated above (float32, so 4 bytes per number):
    """),
    code(r"""
    per_token_fp32 = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 4
    print(f"SmolLM2 in float32: {per_token_fp32:,} bytes = {per_token_fp32 / 1024:.0f} KiB per token")
    print(f"our 64-token cache above: {cache.nbytes:,} bytes = 64 x {cache.nbytes // 64:,}")
    assert cache.nbytes == 64 * per_token_fp32 == 64 * cfg.kv_bytes_per_token
    """),
    md(r"""
    Now some well-known models, with the numbers from their public `config.json` files
    (`num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`, `hidden_size / num_attention_heads`),
    in bfloat16 (2 bytes), the way they are usually served. The "if MHA" column is what the same model
    would cost if every query head had its own key/value head (classic multi-head attention).
    """),
    code(r"""
    from IPython.display import Markdown, display

    # name: (layers, query heads, KV heads, head_dim, Hugging Face repo whose config.json gives these)
    MODELS = {
        "SmolLM2-135M": (30, 9, 3, 64, "HuggingFaceTB/SmolLM2-135M-Instruct"),
        "Llama-2-7B":   (32, 32, 32, 128, "meta-llama/Llama-2-7b-hf"),
        "Llama-3-8B":   (32, 32, 8, 128, "meta-llama/Meta-Llama-3-8B"),
        "Mistral-7B":   (32, 32, 8, 128, "mistralai/Mistral-7B-v0.1"),
        "Qwen2-7B":     (28, 28, 4, 128, "Qwen/Qwen2-7B"),
        "Llama-3-70B":  (80, 64, 8, 128, "meta-llama/Meta-Llama-3-70B"),
    }
    BF16 = 2

    def kv_bytes(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int = BF16) -> int:
        return 2 * layers * kv_heads * head_dim * dtype_bytes

    def fmt_bytes(n: float) -> str:
        for unit in ["B", "KiB", "MiB", "GiB", "TiB"]:
            if n < 1024 or unit == "TiB":
                return f"{n:,.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.3g} {unit}"
            n /= 1024

    rows = ["| model | layers | query heads | KV heads | head_dim | attention | KV per token | if MHA | one 4k-token sequence |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, (L, H, Hkv, D, repo) in MODELS.items():
        kind = "MHA" if H == Hkv else f"GQA, {H // Hkv} q per KV"
        rows.append(f"| [{name}](https://huggingface.co/{repo}) | {L} | {H} | {Hkv} | {D} | {kind} | "
                    f"{fmt_bytes(kv_bytes(L, Hkv, D))} | {fmt_bytes(kv_bytes(L, H, D))} | {fmt_bytes(4096 * kv_bytes(L, Hkv, D))} |")
    display(Markdown("\n".join(rows)))

    assert kv_bytes(32, 32, 128) == 512 * 1024          # Llama-2-7B: half a MiB per token
    assert kv_bytes(32, 8, 128) == 128 * 1024           # Llama-3-8B: GQA makes it 4x smaller
    """),
    code(r"""
    names = list(MODELS)
    actual = [kv_bytes(L, Hkv, D) / 1024 for L, H, Hkv, D, _ in MODELS.values()]
    as_mha = [kv_bytes(L, H, D) / 1024 for L, H, Hkv, D, _ in MODELS.values()]

    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.barh(names, as_mha, color="lightgray", hatch="//", edgecolor="gray", label="if every query head had its own K/V (MHA)")
    ax.barh(names, actual, color="tab:blue", label="as configured")
    for i, (a, m) in enumerate(zip(actual, as_mha)):
        ax.text(m, i, f" {fmt_bytes(a * 1024)}" + (f"  (MHA: {fmt_bytes(m * 1024)})" if m != a else ""), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("KV cache per token, KiB (bfloat16)")
    ax.set_xlim(0, max(as_mha) * 1.45)
    ax.legend(loc="upper right", fontsize=8)
    plt.tight_layout()
    plt.show()
    """),
    md(r"""
    Llama-2-7B gives each of its 32 query heads its own key/value head: half a MiB per token, so one
    4,096-token conversation holds 2 GiB of cache. Llama-3-8B has the same layers, query heads and
    head size, but groups its query heads four to one K/V head (**grouped-query attention**, GQA):
    the cache is four times smaller for a small loss in quality. Qwen2-7B goes to seven query heads
    per K/V head. The extreme, a single K/V head for all query heads, is multi-query attention (MQA).

    For scale: Llama-3-8B's weights take about 16 GB in bfloat16 (8 billion numbers × 2 bytes).
    At its full 8,192-token context, one sequence's cache is 1 GiB, so a batch of 16 such sequences
    already needs as much memory as the weights.

    **Try it.** Move the sliders: how many Llama-2-7B conversations of 4k tokens fit in one "80 GB"
    GPU (80 GiB, the dashed line; ignoring the weights)? And Llama-3-8B? What happens at 128k tokens?
    Tick the box to see the world without GQA. (The plot ignores each model's maximum context: Llama-2 stops at 4k tokens,
    Llama-3 at 8k.)
    """),
    code(r"""
    import ipywidgets as widgets

    GPU_BYTES = 80 * 2**30                            # an "80 GB" A100 has 80 GiB (81,920 MiB) of memory, for scale
    CONTEXTS = [2**i for i in range(9, 18)]           # 512 ... 131,072 tokens
    BATCHES = [2**i for i in range(0, 9)]             # 1 ... 256 sequences

    def draw_kv_memory(context_len: int, batch: int, pretend_mha: bool = False):
        totals = [kv_bytes(L, H if pretend_mha else Hkv, D) * context_len * batch
                  for L, H, Hkv, D, _ in MODELS.values()]
        fig, ax = plt.subplots(figsize=(8, 3.8))
        colors = ["tab:red" if t > GPU_BYTES else "tab:blue" for t in totals]
        bars = ax.bar(names, [t / 2**30 for t in totals], color=colors)
        ax.axhline(GPU_BYTES / 2**30, ls="--", color="gray")
        # The label sits right of the bars (x in axes units, y in GiB), where no bar can cover it.
        ax.text(1.01, GPU_BYTES / 2**30, "80 GiB: one\n\"80 GB\" GPU\n(red bars\ndon't fit)", transform=ax.get_yaxis_transform(),
                ha="left", va="center", color="gray", fontsize=8, clip_on=False)
        for bar, t in zip(bars, totals):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), fmt_bytes(t), ha="center", va="bottom", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(min(min(totals), GPU_BYTES) / 2**30 / 4, max(max(totals), GPU_BYTES) / 2**30 * 8)   # line inside, with room
        ax.set_ylabel("KV cache, GiB (log scale)")
        ax.set_title(f"{batch} sequence(s) x {context_len:,} tokens, bfloat16"
                     + (", pretending every model used MHA" if pretend_mha else ""))
        ax.tick_params(axis="x", labelsize=8)
        plt.tight_layout()
        return fig

    plt.close(draw_kv_memory(4096, 8, True))         # a quick self-test, so an error shows here and not inside the widget

    def kv_memory_explorer():
        # The controls and the plot they redraw. The callback keeps its own Output (a local name),
        # so a later cell that reuses a name like `out` cannot take the plot away from it.
        ctx = widgets.SelectionSlider(options=[(f"{c:,}", c) for c in CONTEXTS], value=4096, description="context")
        batch = widgets.SelectionSlider(options=BATCHES, value=8, description="batch")
        mha = widgets.Checkbox(value=False, description="pretend MHA (no GQA)")
        view = widgets.Output()

        def redraw(_=None):
            with view:
                view.clear_output(wait=True)
                fig = draw_kv_memory(ctx.value, batch.value, mha.value)
                display(fig)
                plt.close(fig)

        for w in (ctx, batch, mha):
            w.observe(redraw, names="value")
        redraw()
        return widgets.VBox([widgets.HBox([ctx, batch, mha]), view])

    display(kv_memory_explorer())
    """),
    md(r"""
    ## 5 · Your turn: exercises 1.1 – 1.3

    Open **`exercises/ch01_kv_cache.py`**. Each function's docstring is its spec: replace the
    `raise NotImplementedError` with your code, save, and run the check cell under it.
    `minikv.grade.check("1.1")` runs seeded tests against the reference and shows **PASS**,
    **FAIL** (with the first problem and a hint), or **TODO** (not started yet). From a terminal,
    `minikv grade --chapter 1` grades the whole chapter. The grader always reads your file as it is
    on disk, so there is no need to restart the kernel after an edit.
    """),
    md(r"""
    ### Exercise 1.1 · `kv_bytes_per_token(num_layers, num_kv_heads, head_dim, dtype_bytes) -> int`

    The formula from section 4, as a function: bytes of K *and* V that one token costs across all
    layers. It should reproduce the "KV per token" column of the table above (with `dtype_bytes=2`)
    and `llm.config.kv_bytes_per_token` for our float32 SmolLM2 (`dtype_bytes=4`).
    """),
    code(r"""
    minikv.grade.check("1.1")
    """),
    md(r"""
    ### Exercise 1.2 · `class KVCache`

    A contiguous cache with the same interface as minikv's `ContiguousKVCache`, so the engine can
    use yours instead:

    * `KVCache(num_layers, num_kv_heads, head_dim, max_len, dtype=torch.float32, device="cpu")`
      allocates, once, room for `max_len` tokens in every layer: a `[num_layers, num_kv_heads, max_len, head_dim]`
      buffer for K and another for V;
    * `append(layer, k, v)`: `k`, `v` are `[T, num_kv_heads, head_dim]` for the `T` new tokens. Store
      them right after the tokens that layer already holds, and return `(keys, values)`, each
      `[num_kv_heads, length, head_dim]`, covering *every* token stored in that layer so far (the new
      ones last). If they do not fit, raise `minikv.errors.KVCacheFull` and store nothing;
    * `lengths[layer]`: tokens stored in each layer; `len(cache)`: tokens stored in the last layer
      (the engine appends layer by layer, so the last layer is the last to grow).

    Mind the layouts: tokens come in token-major (`[T, heads, dim]`), attention wants head-major
    (`[heads, length, dim]`). Returning views of your buffer is fine (and is what makes it fast).
    """),
    code(r"""
    minikv.grade.check("1.2")
    """),
    md(r"""
    ### Exercise 1.3 · `decode_attention(q, keys, values, scale) -> Tensor`

    One new token attends to every stored token, its own included (the engine appends before it
    attends). `q` is `[num_heads, head_dim]`; `keys` and `values` are `[num_kv_heads, length, head_dim]`;
    return `[num_heads, head_dim]` = softmax(q · kᵀ × scale) · v per head.

    With GQA there are fewer KV heads than query heads: query head `h` reads KV head
    `h // (num_heads // num_kv_heads)`: consecutive query heads share a KV head. There is no causal
    mask to apply: the one new token may see everything stored, since it is the last.
    """),
    code(r"""
    minikv.grade.check("1.3")
    """),
    md(r"""
    ## 6 · Plug your pieces into the engine

    `LLM` takes the cache class and the single-token attention function as arguments, so the real
    engine can run on your code. We ask the same question with the reference pieces and with yours,
    and compare the tokens one by one. First your cache alone, then your cache and your attention.
    `learner_module` imports your file afresh each time, so rerun these cells after an edit.
    """),
    code(r"""
    ex = minikv.grade.learner_module("ch01_kv_cache")   # exercises/ch01_kv_cache.py (solutions/ under MINIKV_IMPL=solutions)
    QUESTION = "Why do language models cache keys and values?"
    params = SamplingParams(max_tokens=24, temperature=0.0)
    reference = llm.chat(QUESTION, params)
    print(f"reference: {reference.text!r}")

    def try_engine(label: str, exercises: tuple[str, ...], **pieces) -> None:
        # Generate with some of your pieces swapped in; report the first token that differs from the reference.
        try:
            engine = LLM("smollm2-135m", dtype=torch.float32, **pieces)
            mine = engine.chat(QUESTION, params)
        except NotImplementedError:
            if SOLUTIONS:
                raise
            checks = " and ".join(f"minikv.grade.check({e!r})" for e in exercises)
            print(f"{label}: not done yet. Finish exercise {' and '.join(exercises)} in exercises/ch01_kv_cache.py; "
                  f"{checks} above shows how far along you are.")
            return
        same = mine.token_ids == reference.token_ids
        if same:
            print(f"{label}: same {len(mine.token_ids)} tokens as the reference, TTFT {mine.metrics.ttft * 1e3:.0f} ms")
            print(f"  {mine.text!r}")
        else:
            first = next((i for i, (a, b) in enumerate(zip(mine.token_ids, reference.token_ids)) if a != b),
                         min(len(mine.token_ids), len(reference.token_ids)))
            print(f"{label}: differs from the reference at generated token {first}: {mine.text!r}")
        if SOLUTIONS:
            assert same, f"{label}: the solutions must reproduce the reference tokens"

    try_engine("your KVCache", ("1.2",), kv_cache_cls=ex.KVCache)
    """),
    code(r"""
    ex = minikv.grade.learner_module("ch01_kv_cache")
    try_engine("your KVCache + your decode_attention", ("1.2", "1.3"), kv_cache_cls=ex.KVCache, decode_attention=ex.decode_attention)
    """),
    md(r"""
    If both lines say *same tokens*, the engine just served a real model on a cache you wrote. 🎉

    ## 7 · Summary

    * In a causal model the keys and values of past tokens never change, so an engine keeps them:
      the **KV cache**. A decoding step then feeds one token instead of the whole sequence; on
      SmolLM2 the no-cache step grew linearly with position while the cached step stayed flat.
    * The price is memory: $2 \times$ layers $\times$ KV heads $\times$ head_dim $\times$ bytes, per token,
      for every token of every sequence in flight. GQA divides it by the number of query heads per
      KV head.
    * A cache needs only two operations, **append** and **attend**, and yours now serve the real model.

    ## What real engines do differently

    * **They don't reserve the maximum length up front.** Our cache allocates `max_len` tokens per
      sequence before the first token is generated. Most answers end early, and the memory reserved
      for them sits idle where no other request can use it: the PagedAttention paper measured that
      earlier serving systems used only 20–38% of their KV memory for actual token states. vLLM
      hands out the cache in small fixed-size blocks, on demand. That is **chapter 02**.
    * **They share.** Once the cache lives in blocks, requests that start with the same tokens (a
      system prompt, a chat history, few-shot examples) can point at the same blocks: prefix caching,
      with block hashes as in vLLM (chapter 03) or a radix tree as in SGLang (chapter 04).
    * **They batch.** Many sequences go through each forward pass together, joining and leaving
      between steps (continuous batching, chapter 05), and attention reads the cache with a fused
      kernel (chapter 06 writes one in Triton).
    * **They store less.** Caches are kept in bfloat16 or fp8, not float32; some architectures
      shrink them further (sliding-window attention keeps only recent tokens; DeepSeek's multi-head
      latent attention stores a compressed vector instead of full keys and values).

    ## Further reading

    * Vaswani et al., *Attention Is All You Need* (2017), [arXiv:1706.03762](https://arxiv.org/abs/1706.03762): scaled dot-product and multi-head attention.
    * Ainslie et al., *GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints* (2023), [arXiv:2305.13245](https://arxiv.org/abs/2305.13245).
    * Kwon et al., *Efficient Memory Management for Large Language Model Serving with PagedAttention* (2023), [arXiv:2309.06180](https://arxiv.org/abs/2309.06180): the memory waste of contiguous caches, and the paged alternative.
    * Zheng et al., *SGLang: Efficient Execution of Structured Language Model Programs* (2023), [arXiv:2312.07104](https://arxiv.org/abs/2312.07104): RadixAttention, reusing the cache across requests.
    * vLLM documentation, design notes on [paged attention](https://docs.vllm.ai/en/latest/design/paged_attention/) and [automatic prefix caching](https://docs.vllm.ai/en/latest/design/prefix_caching/).
    * Hugging Face transformers documentation: [Caching](https://huggingface.co/docs/transformers/cache_explanation) (how `past_key_values` works) and [Cache strategies](https://huggingface.co/docs/transformers/kv_cache).
    """),
]
