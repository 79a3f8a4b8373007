"""Chapter 05: scheduling. Edit here, then run ``python tools/make_notebooks/build.py``."""

from nbtools import code, md

PATH = "chapters/05_scheduling.ipynb"

CELLS = [
    md(r"""
    # Chapter 05 · Scheduling: continuous batching, chunked prefill, preemption, cache-aware order

    Chapters 02 to 04 built what one request needs: blocks of KV memory, and a prefix cache that lets
    a request reuse what an earlier one computed. An engine that serves many people at once must also
    decide, **every forward pass**, *who runs*: which requests get tokens in this step, how many, who
    waits, and who must give their memory back when it runs out. Those decisions set the latency
    everyone sees, and, as we will measure, how much of the prefix cache is ever hit.

    minikv's `LLMEngine` makes them the way vLLM v1 does: each request has a count of *computed*
    tokens chasing its length, and each step fills a **token budget**, running requests first (one
    decode token each, or the next chunk of an unfinished prompt), then waiting ones in the order a
    *scheduling policy* gives. In this chapter you will

    * watch **waves** and **continuous batching** serve the same requests, step by step;
    * see what one long prompt does to everyone else's **inter-token latency**, and how **chunked
      prefill** spreads it out;
    * squeeze the KV pool until the engine must **preempt**, and see why a prefix cache makes the
      recompute cheap;
    * order the waiting queue by **longest cached prefix** (SGLang's LPM) and by **DFS-weight**, and
      measure hit rate, the **offline optimum** (Belady), throughput, and the price: the worst wait;
    * compare eviction policies with that optimum on interleaved multi-turn chat;
    * write the four decisions yourself (5.1 fill the budget, 5.2 preempt, 5.3 LPM, 5.4 Belady) and
      plug your budget filler into the engine.

    The picture is where the chapter starts: which request runs in each step, closed waves above,
    continuous batching below.
    """),
    code(r"""
    %matplotlib inline
    import math
    import os
    import random
    import time
    from dataclasses import dataclass, field

    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from IPython.display import display
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    import minikv.grade
    from minikv import SamplingParams
    from minikv.engine import LLMEngine

    # CI runs the notebooks against the reference solutions (MINIKV_IMPL=solutions); you run them against your own code.
    SOLUTIONS = os.environ.get("MINIKV_IMPL") == "solutions"
    # One CPU thread for the whole chapter, as in the others: steady timings on a busy machine.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    """),
    code(r"""
    @dataclass
    class Run:
        # What an engine did, step by step: the plan (request id -> tokens computed), who was preempted,
        # how long the step took, the KV blocks in use; per request when it arrived and when its tokens came.
        plans: list = field(default_factory=list)
        preempted: list = field(default_factory=list)
        seconds: list = field(default_factory=list)
        blocks_used: list = field(default_factory=list)
        arrived: dict = field(default_factory=dict)
        token_steps: dict = field(default_factory=dict)
        token_times: dict = field(default_factory=dict)
        tokens: dict = field(default_factory=dict)
        cached: dict = field(default_factory=dict)
        stats: object = None

        @property
        def steps(self):
            return len(self.plans)

        def first_token_step(self, rid):
            return self.token_steps[rid][0]

    def drive(engine, arrivals, max_steps=5000):
        # Feed arrivals = [(step, request_id, prompt_ids, max_tokens)] into the engine as their step comes,
        # and step it until every request is done. The engine's own view of each step is engine.last_step.
        pending = sorted(arrivals, key=lambda a: a[0])
        run, step = Run(), 0
        while pending or engine.has_unfinished_requests():
            while pending and pending[0][0] <= step:
                _, rid, prompt, max_tokens = pending.pop(0)
                engine.add_request(rid, {"prompt_token_ids": list(prompt)},
                                   SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
                run.arrived[rid] = step
                run.token_steps[rid], run.token_times[rid], run.tokens[rid] = [], [], []
            t0 = time.perf_counter()
            outs = engine.step()
            now = time.perf_counter()
            run.seconds.append(now - t0)
            info = engine.last_step
            run.plans.append(dict(info.scheduled))
            run.preempted.append(list(info.preempted))
            run.blocks_used.append(info.kv_blocks_used)
            for out in outs:
                if out.new_token_ids:
                    run.token_steps[out.request_id].append(step)
                    run.token_times[out.request_id].append(now)
                    run.tokens[out.request_id] += list(out.new_token_ids)
                if out.finished:
                    run.cached[out.request_id] = out.num_cached_tokens
            step += 1
            assert step < max_steps, "the engine did not finish"
        run.stats = engine.get_stats()
        return run

    KINDS = ["", "waiting", "prefill chunk", "prefill, first token", "decode"]
    COLORS = ListedColormap(["white", "#e6e6e6", "#9ecae1", "#3182bd", "#fd8d3c"])

    def draw_timeline(ax, run, title, order=None):
        # One row per request, one column per step; a cross marks a preemption.
        rids = order or list(run.arrived)
        grid = np.zeros((len(rids), run.steps))
        for r, rid in enumerate(rids):
            done = run.token_steps[rid][-1] if run.token_steps[rid] else run.steps
            produced = set(run.token_steps[rid])
            for s in range(run.arrived[rid], done + 1):
                n = run.plans[s].get(rid, 0)
                grid[r, s] = 1 if n == 0 else (4 if n == 1 and s in produced else 3 if s in produced else 2)
        ax.imshow(grid, cmap=COLORS, vmin=0, vmax=4, aspect="auto", interpolation="nearest")
        for s, victims in enumerate(run.preempted):
            for rid in victims:
                ax.plot(s, rids.index(rid), "kx", ms=6)
        ax.set_yticks(range(len(rids)), [f"req {rid}" for rid in rids], fontsize=7)
        ax.set_xlabel("engine step")
        ax.set_title(title, fontsize=9, loc="left")

    def legend(fig):
        fig.legend([Patch(color=COLORS(k)) for k in range(1, 5)], KINDS[1:], loc="lower center", ncol=4,
                   fontsize=8, frameon=False)
    """),
    code(r"""
    rng = random.Random(0)

    def prompt(n):
        return [rng.randrange(1, 250) for _ in range(n)]

    # Eight requests wanting different numbers of tokens: four at once, then one every third step.
    LENGTHS = [40, 10, 30, 8, 48, 12, 20, 36]
    ARRIVALS = [(0 if i < 4 else 3 * (i - 3), i, prompt(rng.randrange(20, 60)), n) for i, n in enumerate(LENGTHS)]

    def tiny_engine(**kw):
        options = dict(prefix_cache="radix", num_blocks=64, block_size=16, device="cpu", dtype="float32",
                       max_num_seqs=4, max_num_batched_tokens=256)
        return LLMEngine("tiny-llama", **{**options, **kw})

    POOL_1 = dict(num_blocks=16, max_num_seqs=8)       # 16 blocks of 16 tokens: too few for all eight at the end
    waves = drive(tiny_engine(scheduler="waves", **POOL_1), ARRIVALS)
    continuous = drive(tiny_engine(scheduler="continuous", **POOL_1), ARRIVALS)

    fig, axes = plt.subplots(2, 1, figsize=(11, 5.2), sharex=True)
    draw_timeline(axes[0], waves, f"waves: blocks reserved for prompt + max_tokens, prefills in steps of their own ({waves.steps} steps)")
    draw_timeline(axes[1], continuous, f"continuous batching: blocks on demand, prefills beside the decodes ({continuous.steps} steps)")
    legend(fig)
    plt.tight_layout(rect=(0, 0.06, 1, 1))
    plt.show()
    """),
    md(r"""
    ## 1 · Waves and continuous batching

    Both engines above serve the same eight requests with a pool of 16 blocks of 16 tokens
    (`tiny-llama`, a random-weight test model, so that the steps are what matters, not the
    arithmetic). The top one schedules as chapters 01 to 04 did (`scheduler="waves"`). Read it row by row:

    * a request is admitted only when blocks for its prompt **and** all of its `max_tokens` are free,
      reserved up front. Three requests fit; request 3 arrived with them but waits for blocks that
      are reserved and not yet written;
    * each admission is a prefill **step of its own**: everyone else's decode pauses for it (the
      gray notches in the orange rows);
    * the requests that arrive later queue up (gray) until enough reservations are given back.

    Continuous batching (below) re-plans every step with one token budget. Blocks are taken **on
    demand** (the prompt's now, one more when the last one fills), so all four first requests start
    at once; a newcomer's prefill rides in the same forward as the others' decodes; and when the pool
    does run dry, the newest request is preempted (the cross; section 3) instead of everyone
    reserving for the worst case.
    """),
    code(r"""
    def ttft_steps(run):
        return [run.first_token_step(rid) - run.arrived[rid] for rid in run.arrived]

    for name, run in [("waves", waves), ("continuous", continuous)]:
        t = ttft_steps(run)
        busy = sum(len(p) for p in run.plans) / run.steps
        print(f"{name:10s}: {run.steps:3d} steps, {sum(run.seconds) * 1e3:6.0f} ms; time to first token (steps) "
              f"mean {np.mean(t):4.1f}, worst {max(t):2d}; {busy:.1f} requests per step on average")
    assert waves.tokens == continuous.tokens          # the same greedy tokens, whatever the schedule
    assert continuous.steps < waves.steps and np.mean(ttft_steps(continuous)) < np.mean(ttft_steps(waves))
    """),
    md(r"""
    Same tokens (scheduling never changes what a request generates, only when), fewer steps, more
    requests per step, and the late arrivals get their first token much sooner. vLLM calls this *continuous batching*; the
    Orca paper (Yu et al., 2022) called it *iteration-level scheduling*: the batch is re-formed
    at every iteration instead of every request.

    ## 2 · One long prompt, and everyone's inter-token latency

    A step's cost grows with the tokens it computes. A decode step computes one token per running
    request, cheap; a prefill of a long prompt computes all of its tokens. If a 700-token prompt is
    admitted in one piece, every running request waits for that step before getting its next token:
    their **inter-token latency** (ITL) spikes.

    **Chunked prefill** caps what a step computes (`max_num_batched_tokens`, and
    `long_prefill_token_threshold` per request): the long prompt is computed a chunk per step, beside
    the others' decodes. It takes a few more steps to reach its first token, but nobody else stalls.
    Here on SmolLM2-135M (a real model, so the step times are real): three requests decoding, and a
    512-token prompt that arrives at step 3.
    """),
    code(r"""
    LONG = 512
    SHORT = [(0, f"short {i}", prompt(24), 16) for i in range(3)]
    LONG_ARRIVAL = [(3, "long", prompt(LONG), 4)]

    def smol_engine(**kw):
        return LLMEngine("smollm2-135m", prefix_cache="none", device="cpu", dtype="float32", **kw)

    itl = {}
    for name, options in [("one piece", dict(enable_chunked_prefill=False, max_num_batched_tokens=1024)),
                          ("chunks of 64", dict(enable_chunked_prefill=True, max_num_batched_tokens=64))]:
        run = drive(smol_engine(**options), SHORT + LONG_ARRIVAL)
        gaps = [np.diff(run.token_times[rid]) * 1e3 for _, rid, _, _ in SHORT]
        itl[name] = (run, np.concatenate(gaps))

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.6))
    for name, (run, gaps) in itl.items():
        times = np.array(run.token_times["short 0"][1:]) - run.token_times["short 0"][0]
        ax.plot(times * 1e3, np.diff(run.token_times["short 0"]) * 1e3, marker=".", label=name)
        ax2.plot([sum(p.values()) for p in run.plans], marker=".", label=name)
    ax.set_xlabel("time since request 'short 0' got its first token (ms)")
    ax.set_ylabel("gap before each of its tokens (ms)")
    ax.set_title("inter-token latency of a short request while a long prompt arrives", fontsize=9, loc="left")
    ax2.set_xlabel("engine step")
    ax2.set_ylabel("tokens computed in the step")
    ax2.set_title(f"the step's work: one {LONG}-token step, or chunks of 64", fontsize=9, loc="left")
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()
    for name, (run, gaps) in itl.items():
        ttft = run.token_times["long"][0] - min(t[0] for t in run.token_times.values() if t)
        print(f"{name:13s}: short requests' ITL p50 {np.percentile(gaps, 50):5.0f} ms, max {gaps.max():5.0f} ms; "
              f"{run.steps} steps; the long prompt's first token after {run.first_token_step('long') - 3} steps")
    one, chunked = itl["one piece"][0], itl["chunks of 64"][0]
    assert one.tokens == chunked.tokens
    assert max(sum(p.values()) for p in chunked.plans) <= 64 < max(sum(p.values()) for p in one.plans)
    """),
    md(r"""
    In one piece, the long prefill is one step of 512 tokens and each short request sees one big gap;
    in chunks, the same work is spread over eight steps of at most 64 tokens, and each gap
    stays close to a decode step plus a chunk. The long prompt pays: its first token comes a few
    steps later. That is the trade chunked prefill makes, and why vLLM turns it on by default: a
    bounded step time for everyone, a slightly longer time to first token for long prompts.

    (How big a chunk? A chunk too small wastes the step's fixed costs and the parallelism of the
    hardware; too big and the spikes come back. The benchmark `minikv bench schedule` measures p99
    ITL and TTFT for several budgets.)

    ## 3 · Memory pressure: preemption by recompute

    Before this chapter, a request reserved blocks for its prompt *and* its `max_tokens` up front. An
    online engine takes blocks **on demand**: the prompt's blocks at admission, one more block each
    time the last one fills. That lets many more requests run at once, but the pool can run dry in
    the middle of a decode. Then the engine **preempts** a running request, by default the newest:
    it gives its blocks back, is reset to zero computed tokens, and goes to the front of the waiting
    queue, to be **recomputed** later (prompt and the tokens it had already generated).

    Recomputing sounds wasteful. With a prefix cache it mostly is not: the victim's blocks are
    released *to the cache*, full blocks keep their hashes, and when it is admitted again it finds
    them as a hit, unless someone needed the room in between. Below, six requests share a pool of 12
    blocks (192 tokens) that cannot hold them all to the end.
    """),
    code(r"""
    PRESSURE = [(0, i, prompt(40), 40) for i in range(6)]         # 40 prompt + 40 new tokens: 5 blocks each at the end
    pressure = {}
    for cache in ("none", "radix"):
        pressure[cache] = drive(tiny_engine(prefix_cache=cache, num_blocks=12, max_num_seqs=6), PRESSURE)
    roomy = drive(tiny_engine(num_blocks=64, max_num_seqs=6), PRESSURE)

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
    for ax, (cache, run) in zip(axes, pressure.items()):
        ax.plot(run.blocks_used, drawstyle="steps-post", label="blocks held by running requests")
        ax.plot([len(p) for p in run.plans], drawstyle="steps-post", label="requests scheduled")
        for s, victims in enumerate(run.preempted):
            if victims:
                ax.axvline(s, color="crimson", lw=0.8, alpha=0.6)
        ax.set_title(f"prefix_cache={cache!r}: {run.stats.num_preemptions} preemptions (red)", fontsize=9, loc="left")
        ax.set_xlabel("engine step")
    axes[0].legend(fontsize=8, loc="lower right")
    plt.tight_layout()
    plt.show()

    need = sum(len(p) + n - 1 for _, _, p, n in PRESSURE)    # every prompt token, every generated token but the last
    for cache, run in pressure.items():
        computed = sum(sum(p.values()) for p in run.plans)
        print(f"prefix_cache={cache!r:8s}: {run.stats.num_preemptions} preemptions, {computed} tokens computed for the "
              f"{need} needed ({computed - need} recomputed), {run.steps} steps")
        assert run.tokens == roomy.tokens                 # preempted and recomputed, the same tokens
    assert pressure["none"].stats.num_preemptions > 0
    """),
    md(r"""
    The pool fills (the blue line reaches 12), a newest request is preempted (red), its blocks come
    back, the others go on, and it is readmitted when a request finishes. Without a prefix cache the
    victim's work is simply lost and computed again. With the radix cache, what it had computed is
    still in the cache when it comes back, so most of its "recompute" is a hit: compare the
    recomputed token counts. vLLM v1 preempts this way (it dropped swapping the KV out to CPU
    memory); the prefix cache is what makes it cheap.

    The victim is the newest running request: it has done the least work since admission, and the
    oldest requests, the ones users have waited longest for, keep making progress. A request whose
    prompt cannot fit even in an empty pool is refused with a clear error before any work.

    ## 4 · Your turn: exercises 5.1 and 5.2

    Open **`exercises/ch05_scheduling.py`**. The engine's scheduler keeps the requests and the
    blocks; the *decisions* are pure functions over small records from `minikv.engine.step_plan`,
    which is what you write:

    * `RequestView(request_id, num_computed_tokens, num_tokens)`: a request is `behind` by
      `num_tokens - num_computed_tokens` tokens (1 for a decode; a waiting request's computed count
      is its prefix-cache hit);
    * `RequestState(request_id, num_computed_tokens, num_tokens, block_ids)`: the same, with the
      blocks it holds.

    ### Exercise 5.1 · `fill_budget(running, waiting, token_budget, long_prefill_token_threshold=0, max_num_seqs=256, chunked_prefill=True)`

    Plan one step: `{request_id: tokens}`. Running requests first, in order, each what it is behind,
    cut to the threshold (if > 0, with chunked prefill on) and to what is left of the budget; then
    waiting requests, in the given order, with the same cuts, until one cannot be planned (the budget
    is spent, `max_num_seqs` would be exceeded, or, without chunked prefill, the prompt does not fit
    whole). The last check plugs your function into the engine: `LLMEngine(..., schedule_fn=fill_budget)`.
    """),
    code(r"""
    minikv.grade.check("5.1")
    """),
    md(r"""
    ### Exercise 5.2 · `preempt(running, waiting) -> Preemption(running, waiting, released)`

    The victim is the last running request. It leaves `running`, goes to the **front** of `waiting`
    as `RequestState(its id, 0, its num_tokens, ())`, and its blocks are released **tail first** (its
    last blocks are the least likely to be shared, so the cache should forget them first). Leave the
    input lists as they were.
    """),
    code(r"""
    minikv.grade.check("5.2")
    """),
    md(r"""
    ### Your budget filler in the engine

    `schedule_fn` replaces the engine's `fill_budget`. Here it serves section 1's requests with a
    small budget of 16 tokens and chunks of at most 7 (so every rule of 5.1 is used), beside minikv's
    own: the plans must agree step by step, and so must the tokens. `learner_module` imports your
    file afresh, so rerun the cell after an edit.
    """),
    code(r"""
    ex = minikv.grade.learner_module("ch05_scheduling")   # exercises/ (solutions/ under MINIKV_IMPL=solutions)
    SMALL = dict(max_num_batched_tokens=16, long_prefill_token_threshold=7, max_num_seqs=3)

    reference = drive(tiny_engine(**SMALL), ARRIVALS)
    try:
        mine = drive(tiny_engine(schedule_fn=ex.fill_budget, **SMALL), ARRIVALS)
    except NotImplementedError:
        if SOLUTIONS:
            raise
        mine = None
        print("not done yet: finish exercise 5.1 in exercises/ch05_scheduling.py; "
              'minikv.grade.check("5.1") above shows how far along you are.')
    if mine is not None:
        fig, axes = plt.subplots(2, 1, figsize=(11, 4.8), sharex=True)
        draw_timeline(axes[0], reference, "minikv's fill_budget: budget 16, chunks of at most 7")
        draw_timeline(axes[1], mine, "your fill_budget")
        legend(fig)
        plt.tight_layout(rect=(0, 0.07, 1, 1))
        plt.show()
        same = mine.plans == reference.plans and mine.tokens == reference.tokens
        print(f"{reference.steps} steps; the same plan in every step and the same tokens: {same}")
        if SOLUTIONS:
            assert same
    """),
    md(r"""
    ## 5 · Cache-aware order: which waiting request goes first

    So far the waiting queue was served first come, first served (FCFS). With a prefix cache, the
    order matters a lot. Take few-shot prompts: an instruction header, a few worked examples in one
    of four fixed orders, then a question. Prompts with the same examples share a long prefix. If
    they arrive shuffled and the cache is small, FCFS alternates between the groups and each group's
    prefix is evicted before its next member comes.

    * **LPM** (longest prefix match, SGLang): admit the requests with the most cached tokens first.
      Requests whose prefix is cached now go before it is evicted. It *peeks* at the cache (no
      reference taken) for every waiting request at every step, so above 128 waiting requests SGLang
      falls back to FCFS.
    * **DFS-weight** (SGLang): hang the waiting requests in a tree by their cached prefix and walk
      it depth first, heaviest subtree first: requests sharing a prefix come out together.

    The yardstick is **Belady's offline optimum**: a cache that knows the future and always evicts
    the block used farthest ahead (exercise 5.4 writes it). It serves the requests in arrival order,
    so a policy that reorders can even pass it. The price of reordering is fairness: a request whose
    prefix is never cached can be passed over again and again, so we measure the worst wait too.
    """),
    code(r"""
    from minikv.workloads import few_shot_trace
    from minikv.workloads.belady import belady_tree_hit_tokens, percent_of_optimum

    FEW_SHOT = few_shot_trace(32, n_examples_pool=16, shots=4, n_orders=4, example_len=(24, 40),
                              question_len=(8, 16), header_len=16, vocab=250, seed=3)
    random.Random(1).shuffle(FEW_SHOT)                   # the groups arrive interleaved
    ORDER_ARRIVALS = [(i // 2, i, p, 4) for i, p in enumerate(FEW_SHOT)]   # two a step
    POOL = 32                                            # blocks of 16: room for about two groups' prefixes

    optimum = belady_tree_hit_tokens(FEW_SHOT, POOL, 16)
    orders = {}
    for policy in ("fcfs", "lpm", "dfs-weight"):
        t0 = time.perf_counter()
        run = drive(tiny_engine(num_blocks=POOL, policy=policy, max_num_seqs=4), ORDER_ARRIVALS)
        orders[policy] = (run, time.perf_counter() - t0)

    prompt_tokens = sum(map(len, FEW_SHOT))
    rows = []
    for policy, (run, seconds) in orders.items():
        hit = sum(run.cached.values())
        waits = ttft_steps(run)
        rows.append((policy, hit / prompt_tokens, percent_of_optimum(hit, optimum),
                     4 * len(FEW_SHOT) / seconds, max(waits)))
        print(f"{policy:10s}: hit rate {hit / prompt_tokens:5.1%} ({percent_of_optimum(hit, optimum):5.1f}% of Belady's "
              f"{sum(optimum) / prompt_tokens:.1%}), {4 * len(FEW_SHOT) / seconds:5.0f} output tokens/s, "
              f"{run.steps} steps, worst wait {max(waits)} steps")

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    names = [r[0] for r in rows]
    for ax, k, label in [(axes[0], 1, "hit rate"), (axes[1], 2, "% of Belady's optimum"), (axes[2], 4, "worst wait (steps)")]:
        bars = ax.bar(names, [r[k] for r in rows], color=["#9e9e9e", "#3182bd", "#31a354"])
        ax.bar_label(bars, [f"{r[k]:.0%}" if k == 1 else f"{r[k]:.0f}" for r in rows], fontsize=8)
        ax.set_title(label, fontsize=9, loc="left")
    plt.tight_layout()
    plt.show()
    fcfs, lpm = orders["fcfs"][0], orders["lpm"][0]
    assert sum(lpm.cached.values()) >= sum(fcfs.cached.values())
    assert {rid: fcfs.tokens[rid] for rid in fcfs.tokens} == lpm.tokens   # order changes when, not what
    """),
    md(r"""
    LPM and DFS-weight group the requests that share examples, so each group's prefix is computed
    once and hit by the rest while it is still cached; FCFS keeps evicting what the next request
    needs. Fewer prompt tokens to compute also means more output tokens per second. The right panel
    is the price: a request that shares little waits until the groups ahead of it are done.
    SGLang's paper reports cache-aware order reaching about 96% of the optimal hit rate on its
    workloads; on traffic without shared prefixes all three orders are the same.

    ### Exercise 5.3 · `lpm_order(waiting, cache, threshold=128)`

    Each waiting request is a `WaitingRequest(request_id, token_ids, arrival_time, cache_salt)`.
    Return them most cached tokens first, ties by arrival, then queue order; above `threshold`
    requests, in queue order without looking. Read each hit with **`cache.peek(token_ids, salt)`**,
    never `match`: `match` takes a reference on the blocks it finds (nobody would release them) and
    counts a cache query, so merely *ordering* the queue would change the cache and its statistics.
    The checks compare the cache before and after your call.
    """),
    code(r"""
    minikv.grade.check("5.3")
    """),
    md(r"""
    `LPMPolicy` (in your file, written for you) turns the engine's waiting requests into
    `WaitingRequest`s and orders them with your `lpm_order`: `LLMEngine(..., policy=LPMPolicy())`.
    The shuffled few-shot requests again, with your order:
    """),
    code(r"""
    try:
        yours = drive(tiny_engine(num_blocks=POOL, policy=ex.LPMPolicy(), max_num_seqs=4), ORDER_ARRIVALS)
    except NotImplementedError:
        if SOLUTIONS:
            raise
        yours = None
        print("not done yet: finish exercise 5.3 in exercises/ch05_scheduling.py.")
    if yours is not None:
        print(f"your LPM: hit rate {sum(yours.cached.values()) / prompt_tokens:.1%} "
              f"(minikv's lpm: {sum(lpm.cached.values()) / prompt_tokens:.1%}), {yours.steps} steps, "
              f"the same plan in every step as policy='lpm': {yours.plans == lpm.plans}")
        if SOLUTIONS:
            assert yours.plans == lpm.plans and yours.tokens == lpm.tokens
    """),
    md(r"""
    ## 6 · Eviction policies against the optimum

    The order decides *which* requests meet the cache; the eviction policy decides what the cache
    keeps for them. Take multi-turn chat: many conversations take turns, and each turn resends its
    conversation so far. Belady's optimum tells us how much any policy could hit at the same
    capacity. No model runs here: the caches replay the trace the way the engine would
    (`minikv.workloads.replay`), so we can afford many of them. Two ways to interleave 40
    conversations of 6 turns:

    * **in rounds**: every conversation speaks once, then again, in the same order. This is LRU's
      worst case: when a conversation speaks again, everyone else has spoken since, so its history
      is exactly the least recently used and has just been evicted;
    * **random speaker**: whoever speaks next is drawn at random.

    The contenders are minikv's eviction policies, in both caches: `lru`, `lfu`, `slru` (never-hit
    entries go before hit ones, the core of S3-FIFO and ARC), `shallow` (LRU that prefers to evict
    deep blocks), and `duel`, which runs small shadow caches (LRU, SLRU and "keep-old", which evicts
    the newest first, the cure for loops) beside the real one and evicts the way whichever would
    have hit most lately. Pick an interleaving and a capacity.
    """),
    code(r"""
    import ipywidgets as widgets

    from minikv.prefix import BlockHashCache, RadixCache
    from minikv.prefix.policies import EVICTION_POLICIES
    from minikv.workloads import multi_turn_trace, replay

    CHATS = {"in rounds": multi_turn_trace(40, 6, seed=0, interleave="round-robin"),
             "random speaker": multi_turn_trace(40, 6, seed=0)}
    CAPACITIES = [64, 128, 256, 512, 1024]               # blocks of 16 tokens (the longest prompt needs 52)

    def percent_by_policy(chat, capacity, caches=("hash", "radix")):
        # Each cache x policy's hit tokens as a % of Belady's, and Belady's hit rate.
        best = belady_tree_hit_tokens(chat, capacity, 16)
        kinds = {"hash": BlockHashCache, "radix": RadixCache}
        pct = {f"{kind} · {name}": percent_of_optimum(replay(kinds[kind](capacity, 16, policy=name), chat), best)
               for kind in caches for name in EVICTION_POLICIES}
        return sum(best) / sum(map(len, chat)), pct

    def draw_policies(interleaving, capacity):
        rate, pct = percent_by_policy(CHATS[interleaving], capacity)
        fig, ax = plt.subplots(figsize=(9, 3.8))
        colors = ["#9ecae1" if name.startswith("hash") else "#3182bd" for name in pct]
        bars = ax.barh(list(pct), list(pct.values()), color=colors)
        ax.bar_label(bars, [f"{v:.0f}%" for v in pct.values()], fontsize=8)
        ax.axvline(100, color="black", lw=0.8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(110, max(pct.values()) + 10))
        ax.set_xlabel("hit tokens, % of Belady's offline optimum")
        ax.set_title(f"{interleaving}, cache of {capacity} blocks ({capacity * 16:,} tokens): "
                     f"Belady hits {rate:.0%} of the prompt tokens", fontsize=9, loc="left")
        plt.tight_layout()
        return fig

    plt.close(draw_policies("in rounds", 256))   # a quick self-test, so an error shows here and not inside the widget

    def policy_explorer():
        # The controls and the drawing they redraw; the callback keeps its own Output (a local name).
        order = widgets.Dropdown(options=list(CHATS), value="in rounds", description="interleaving")
        size = widgets.SelectionSlider(options=CAPACITIES, value=256, description="capacity")
        view = widgets.Output()

        def redraw(_=None):
            with view:
                view.clear_output(wait=True)
                fig = draw_policies(order.value, size.value)
                display(fig)
                plt.close(fig)

        order.observe(redraw, names="value")
        size.observe(redraw, names="value")
        redraw()
        return widgets.VBox([widgets.HBox([order, size]), view])

    display(policy_explorer())
    """),
    code(r"""
    table = {}
    for interleaving, chat in CHATS.items():
        print(f"{interleaving}: radix cache, % of Belady's hits")
        print(f"{'capacity':>8s} " + " ".join(f"{name:>7s}" for name in EVICTION_POLICIES) + "   Belady hit rate")
        for capacity in CAPACITIES:
            rate, pct = percent_by_policy(chat, capacity, caches=("radix",))
            table[interleaving, capacity] = pct
            print(f"{capacity:8d} " + " ".join(f"{v:6.0f}%" for v in pct.values()) + f"   {rate:.0%}")
        print()
    rounds = [table["in rounds", c] for c in CAPACITIES[:-1]]
    assert all(row["radix · duel"] > 80 > row["radix · lru"] for row in rounds)   # LRU thrashes, duel holds up
    """),
    md(r"""
    **In rounds**, LRU keeps almost nothing until the cache holds every conversation: it always
    evicts the history that is needed next. Belady keeps a fixed set of conversations and lets the
    others miss; "keep-old" does the same by evicting the newest entries, and `duel` notices that
    its keep-old shadow hits more and follows it, within a few points of the optimum. With a
    **random speaker** there is no pattern to learn: every policy, `duel` included, lands near LRU,
    well below Belady until the cache holds most conversations. The optimum's edge there is knowing
    who speaks next, which no online policy can. (`docs/benchmarks.md` has the arithmetic,
    and the bigger trace of 200 conversations x 8 turns with a 32k-token cache:
    `minikv bench evict`.)

    ### Exercise 5.4 · `belady_hits(trace, capacity, block_size) -> list[int]`

    Replay the trace through a cache of `capacity` blocks that knows the future. Each prompt hits
    its longest run of cached first blocks (the last-token rule caps it), needs
    `ceil(len / block_size)` blocks while it runs, and leaves its full blocks cached. To make room,
    evict a **leaf** of the prefix tree (a cached block no cached block extends; never one the
    running prompt hits) whose **next use** is farthest away, ties deepest first. Evicting an inner
    node would strand its children: they stay cached but can never be hit without their parent.
    """),
    code(r"""
    minikv.grade.check("5.4")
    """),
    code(r"""
    small_chat = multi_turn_trace(12, 4, seed=1)
    try:
        my_best = {c: ex.belady_hits(small_chat, c, 16) for c in (32, 48, 96)}   # its longest prompt needs 23 blocks
    except NotImplementedError:
        if SOLUTIONS:
            raise
        my_best = None
        print("not done yet: finish exercise 5.4 in exercises/ch05_scheduling.py.")
    if my_best is not None:
        for c, hits in my_best.items():
            same = hits == belady_tree_hit_tokens(small_chat, c, 16)
            print(f"capacity {c:3d} blocks: your optimum hits {sum(hits):5d} tokens, "
                  f"{'the same as' if same else 'DIFFERENT from'} minikv's; LRU reaches "
                  f"{percent_of_optimum(replay(BlockHashCache(c, 16), small_chat), hits):.0f}% of it")
            if SOLUTIONS:
                assert same
    """),
    md(r"""
    ## 7 · Summary

    * An online engine re-plans **every step**: a token budget filled with the running requests'
      decode tokens and prefill chunks first, then waiting requests in policy order. Scheduling
      changes when a request gets its tokens, never which tokens.
    * **Continuous batching** refills a finished request's seat at the next step; closed waves wait
      for their slowest member.
    * **Chunked prefill** bounds a step's work, so a long prompt no longer stalls everyone's decode;
      the long prompt's own first token comes a little later.
    * Blocks are taken **on demand**; when none is left, the newest running request is **preempted**
      (blocks released tail first, reset, front of the queue) and recomputed later, mostly from the
      prefix cache.
    * **Cache-aware order** (LPM, DFS-weight) groups the requests that share a prefix and can hit
      far more than FCFS with a small cache, at the price of a longer worst wait. Ordering must only
      **peek** at the cache.
    * **Belady's offline optimum** is the yardstick for eviction. When conversations take turns in
      rounds LRU keeps almost nothing of it, and a policy that learns from shadow caches (`duel`)
      keeps nearly all; when the next speaker is random, no online policy comes close.

    ## What vLLM and SGLang do differently

    * **vLLM v1** schedules exactly this way (one token budget, running first, `num_computed_tokens`
      chasing `num_tokens`), and also fits speculative decoding and multimodal encoders into the same
      budget. Its preemption is recompute only; the KV blocks of a preempted request stay in the
      prefix cache. Its waiting order is FCFS or a priority given by the client.
    * **SGLang** runs LPM or DFS-weight over its radix tree, with an FCFS fallback when the queue is
      long, and *in-batch prefix caching*: of several waiting requests that share a prefix nobody has
      computed yet, one goes first and the others wait a step to hit it (minikv's scheduler does this
      too). Before admitting a request it estimates how much memory the running ones will still
      need (a fraction of their `max_tokens`, adjusted as it goes), and when decode runs out anyway
      it *retracts* requests, its word for preemption by recompute.
    * SGLang by default, and vLLM with asynchronous scheduling, plan the next step on the CPU while
      the GPU computes the current one; minikv plans and runs one step after the other.

    ## Further reading

    * Yu et al., *Orca: A Distributed Serving System for Transformer-Based Generative Models* (OSDI
      2022): iteration-level scheduling.
    * Kwon et al., *Efficient Memory Management for Large Language Model Serving with PagedAttention*
      (SOSP 2023): blocks on demand and preemption.
    * Agrawal et al., *Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve* (OSDI
      2024): chunked prefill and stall-free batching.
    * Zheng et al., *SGLang* (2023), [arXiv:2312.07104](https://arxiv.org/abs/2312.07104): cache-aware
      scheduling (LPM, DFS-weight) and its distance to the optimum.
    * L. A. Belady, *A study of replacement algorithms for a virtual-storage computer*, IBM Systems
      Journal 5(2), 1966: the offline optimum.
    * minikv's `minikv/engine/step_plan.py` (the budget and preemption as pure functions),
      `minikv/engine/policies.py` and `minikv/workloads/belady.py`.
    """),
]
