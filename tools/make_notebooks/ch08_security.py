"""Chapter 08: security, collisions, a CPU tier, moving on. Edit here, then run ``python tools/make_notebooks/build.py``."""

from nbtools import code, md

PATH = "chapters/08_security.ipynb"

CELLS = [
    md(r"""
    # Chapter 08 · The cache's side channel, its fix, hash collisions, a CPU tier, and moving on

    A prefix cache is **shared state**. Chapters 03 to 05 made it pay: a request whose prefix
    somebody else computed is served sooner. That is exactly the problem. Whoever can send requests
    and time the answers can ask the cache "did anybody send this?", and the cache answers through
    the **time to first token** (TTFT). This was a real vulnerability in vLLM (CVE-2025-46570, fixed
    by a per-request `cache_salt` that enters the first block's hash), and published attacks recover
    prompts token by token from radix caches (InputSnatch, PromptPeek). In this chapter you will

    * run the attack on minikv itself: TTFT histograms of hits and misses, and the **ROC AUC** of
      the attacker's guess against the prefix length, for the block-hash cache and the radix tree;
    * recover a short secret **token by token** through the radix tree at page size 1, and see why
      blocks of 16 tokens make it harder but not safe;
    * close the channel with `cache_salt` (AUC back to about 0.5), measure what it costs, and build
      the middle way: salt only what is not public;
    * measure what a **truncated hash** costs in wrong hits, per hash width;
    * give the cache a **second level in host memory** (the CPU offload tier) and measure its hit
      rate and TTFT on interleaved multi-turn chat;
    * write three pieces yourself: 8.1 score the attack honestly, 8.2 the salted hashes with the
      public blocks shared, 8.3 the CPU tier's store and copy-back (it plugs into the engine);
    * and map everything onto vLLM and SGLang, for when you outgrow one machine.
    """),
    code(r"""
    %matplotlib inline
    import os
    import random
    import time

    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from IPython.display import display

    import minikv.grade
    from minikv import LLM, LLMEngine, SamplingParams
    from minikv.kv import KVPool
    from minikv.prefix import BlockHashCache, RadixCache
    from minikv.prefix.offload import OffloadTier
    from minikv.security.attack import identify_prefix
    from minikv.security.auc import chance_band, null_auc_se, roc_auc
    from minikv.security.probes import EngineProber
    from minikv.workloads import multi_turn_trace, replay

    # CI runs the notebooks against the reference solutions (MINIKV_IMPL=solutions); you run them against your own code.
    SOLUTIONS = os.environ.get("MINIKV_IMPL") == "solutions"
    ex = minikv.grade.learner_module("ch08_security")
    # One CPU thread, as in the other chapters: steadier timings on a busy machine.
    torch.set_num_threads(1)
    _ = torch.manual_seed(0)
    """),
    md(r"""
    ## 1 · The timing attack, on minikv

    The setting of one **trial**: the attacker knows two candidate prefixes (two confidential
    documents, two system prompts) and the victim sent one of them, followed by a question. The
    attacker sends each candidate followed by one fresh token, in random order, and reads each
    TTFT; the candidate the victim sent is found in the cache and only the last token is computed.
    It names the faster probe. `minikv.security.attack.identify_prefix` runs such trials through
    any *prober* (here `EngineProber`: `LLM.generate` with one token to generate; `HttpProber` does
    the same against a server over HTTP, which is what `minikv bench leak --base-url` uses).

    We run it on `tiny-llama` (minikv's random-weight test model, small enough that the whole
    chapter runs in about a minute on a laptop CPU); its prefill still grows with the prompt, which
    is all the attack needs. On SmolLM2-135M the gap is far wider: on a busy two-core machine a 256-token
    probe took about 0.2 s on a hit and 2.3 s on a miss.
    """),
    code(r"""
    LENGTHS = [16, 64, 256, 512]           # prefix tokens
    TRIALS = 16

    def tiny(kind, **options):
        return LLM("tiny-llama", prefix_cache=kind, device="cpu", dtype="float32", **options)

    CACHES = {"hash, blocks of 16": tiny("hash"),
              "radix, page size 1": tiny("radix", prefix_cache_options={"page_size": 1})}

    def attack(llm, n, seed, salted=False):
        probe = EngineProber(llm)
        salts = dict(victim_salt="victim", attacker_salt="attacker", shared_secret=True) if salted else {}
        return identify_prefix(probe, random.Random(seed), prefix_tokens=n, trials=TRIALS, vocab=probe.vocab_size, **salts)

    t0 = time.perf_counter()
    RESULTS = {(name, n): attack(llm, n, seed=n) for name, llm in CACHES.items() for n in LENGTHS}
    print(f"{2 * len(LENGTHS) * TRIALS} trials in {time.perf_counter() - t0:.1f} s")
    for (name, n), r in RESULTS.items():
        print(f"{name:20s} {n:4d} tokens: accuracy {r.accuracy:4.0%}, AUC {r.auc:.2f}, "
              f"TTFT hit {r.mean_ms('hit'):5.1f} ms, miss {r.mean_ms('miss'):5.1f} ms")
    """),
    code(r"""
    def draw_histograms(ax, r, title):
        ms = lambda xs: 1e3 * np.asarray(xs)
        bins = np.linspace(0, max(ms(r.miss_ttfts).max(), ms(r.hit_ttfts).max()) * 1.05, 30)
        ax.hist(ms(r.hit_ttfts), bins=bins, alpha=0.7, label="probe of the prefix the victim sent", color="#d6604d")
        ax.hist(ms(r.miss_ttfts), bins=bins, alpha=0.7, label="probe of a decoy", color="#4393c3")
        ax.set_xlabel("TTFT (ms)")
        ax.set_title(f"{title}: AUC {r.auc:.2f}", fontsize=9, loc="left")

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
    draw_histograms(axes[0], RESULTS["hash, blocks of 16", 512], "hash cache, 512-token prefix")
    for name in CACHES:
        axes[1].plot(LENGTHS, [RESULTS[name, n].auc for n in LENGTHS], "o-", label=name)
    axes[1].axhline(0.5, color="gray", lw=0.8, ls="--")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("prefix length (tokens)")
    axes[1].set_ylabel("ROC AUC")
    axes[1].set_ylim(0.3, 1.05)
    axes[1].set_title(f"AUC against prefix length ({TRIALS} trials each)", fontsize=9, loc="left")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=8)
    plt.tight_layout()
    plt.show()
    assert RESULTS["hash, blocks of 16", 512].auc > 0.7   # (a loose bound: other programs share the CPU)
    """),
    md(r"""
    Read the right panel: short prefixes hide in the noise (a 16-token hit saves a few microseconds
    of `tiny-llama`'s prefill, less than the jitter of a busy machine, so their AUC wanders around
    0.5 from run to run, and can even fall well below it: on this tiny model a short hit's
    bookkeeping can cost more than the few tokens it saves; an AUC far below 0.5 leaks as well, the
    attacker only flips its rule), long ones do not. The **ROC AUC** is the probability that a probe of
    the sent prefix is faster than a probe of a decoy: 1.0 is a full leak, 0.5 means the timing says
    nothing. With `n1` hit probes and `n2` decoys, pure chance has a spread of
    `sqrt((n1 + n2 + 1) / (12 n1 n2))` around 0.5 (about 0.10 here), so a measured AUC is
    judged against that.

    ### Exercise 8.1 · `score_attack(hits, misses, train_trials)`

    An attacker deploys a **threshold**: faster than the cut is a hit. The honest way to say how well
    it works is to learn the cut on some trials and score it on **others**; scored on its own
    training trials it flatters the attacker. Given `(trial, ttft)` pairs, fit the cut on the trials
    before `train_trials` and return its balanced accuracy and the ROC AUC on the rest (ties count
    one half: timers tick, and equal TTFTs happen). The checks compare with `minikv.security.auc`.
    """),
    code(r"""
    minikv.grade.check("8.1")
    """),
    code(r"""
    r = RESULTS["hash, blocks of 16", 256]
    hits = list(zip(r.trial_of_hit, r.hit_ttfts))
    misses = list(zip(r.trial_of_miss, r.miss_ttfts))
    try:
        score = ex.score_attack(hits, misses, train_trials=TRIALS // 2)
    except NotImplementedError:
        if SOLUTIONS:
            raise
        score = None
        print("not done yet: finish exercise 8.1 in exercises/ch08_security.py.")
    if score is not None:
        print(f"256-token prefix: a cut at {1e3 * score.threshold:.1f} ms learnt on {TRIALS // 2} trials labels the other "
              f"{TRIALS - TRIALS // 2} with balanced accuracy {score.accuracy:.0%}; their AUC is {score.auc:.2f}")
    """),
    md(r"""
    ## 2 · Token by token, through the radix tree

    Guessing *which* of a few documents was sent is one attack. The papers do more: they recover a
    prompt **one token at a time**. A radix tree at page size 1 caches every token, so a probe
    `known + guess` hits one token further when the guess is right. The attacker walks the secret
    position by position, trying each candidate token.

    Timing one token's worth of prefill is hard (SGLang issue 1504 calls the gain of one more shared
    token "often negligible"), and the papers work to amplify it. But the attacker often needs no
    timing at all: an OpenAI-style server tells every client how many prompt tokens it served from
    the cache (`usage.prompt_tokens_details.cached_tokens`; vLLM with `--enable-prompt-tokens-details`,
    SGLang with `--enable-cache-report`, minikv always). A *noiseless clock* follows from it: the
    number of prompt tokens the server computed. `minikv.security.recovery.recover_tokens` is the
    walk (for each place, probe `known + guess + [fresh token]` for every candidate, keep the
    fastest); we hand it a prober whose "TTFT" is that count. The victim's secret is a 6-digit PIN
    after a known preamble.
    """),
    code(r"""
    from minikv.security.probes import Probe
    from minikv.security.recovery import recover_block, recover_tokens

    class CountingProber:
        # A noiseless clock: the "TTFT" of a probe is the number of its prompt tokens the engine computed.
        def __init__(self, llm):
            self.inner = EngineProber(llm)

        def send(self, token_ids, salt=None):
            probe = self.inner.send(token_ids, salt)
            return Probe(float(len(token_ids) - probe.cached_tokens), probe.cached_tokens)

    radix = tiny("radix", prefix_cache_options={"page_size": 1})
    tok = radix.tokenizer
    vocab = len(tok)
    DIGITS = [tok.encode(str(d), add_special_tokens=False)[0] for d in range(10)]
    PREAMBLE = tok.encode("The customer's PIN is ", add_special_tokens=False)
    SECRET = tok.encode("402917", add_special_tokens=False)
    walk = dict(head=PREAMBLE, secret=SECRET, alphabet=DIGITS, vocab=vocab)
    clear = recover_tokens(CountingProber(radix), random.Random(0), **walk)
    print(f"radix, page size 1, no salt: recovered {tok.decode(clear.guess)!r} in {clear.probes} probes")
    salted = recover_tokens(CountingProber(radix), random.Random(1), **walk, victim_salt="victim", attacker_salt="attacker")
    print(f"the same, a salt per tenant: the attacker's guess {tok.decode(salted.guess)!r}, "
          f"{salted.tokens_right} of {len(SECRET)} digits right (chance: about {len(SECRET) / 10:.1f})")

    blocks = tiny("hash")                                  # blocks of 16 tokens
    head = tok.encode("Account PIN ", add_special_tokens=False)
    head = head + [head[-1]] * (14 - len(head))            # 14 known tokens, then 2 digits: one block of 16
    whole = recover_block(CountingProber(blocks), random.Random(2), head=head, secret=SECRET[:2], alphabet=DIGITS,
                          vocab=vocab, block_size=16)
    print(f"hash cache, blocks of 16: 2 digits recovered as {tok.decode(whole.guess)!r} after {whole.probes} probes "
          f"(every one of the 10**2 combinations: a block hits only whole)")
    assert clear.guess == SECRET and whole.guess == SECRET[:2]
    """),
    md(r"""
    Six digits took 60 probes where guessing the PIN whole would take up to a million: each place is
    a question the cache answers on its own. (The tree also keeps the attacker's own probes; each
    candidate is tried once per place, so they never answer for the victim.)

    **Blocks of 16** change the step, not the principle. The block-hash cache (and the radix tree
    at page size 16) caches whole blocks only, so a probe hits further only when a whole block is
    right: every secret token that shares a block must be guessed at once, `10**k` probes for `k`
    digits (100 for two, 10,000 for four). That stops a blind token-by-token walk. It does not stop section 1's attack: telling
    which of a few *known* candidates was sent needs no walk at all. Harder, not safe.

    ## 3 · The fix: `cache_salt`, and what it costs

    A **salt** (`SamplingParams(cache_salt=...)`, the request field `cache_salt` on the server, as
    in vLLM) enters the first block's hash (chapter 03) or picks the radix tree's namespace (chapter
    04), so requests with different salts share nothing. Give each tenant its own salt and the
    attacker's probes can only hit what the attacker sent. Section 2 already showed it (the walk
    found nothing under the attacker's salt); here is section 1 salted: every trial is a new attacker
    tenant probing a secret the victim sent under its own salt.
    """),
    code(r"""
    SALTED = {n: attack(CACHES["hash, blocks of 16"], n, seed=100 + n, salted=True) for n in LENGTHS}
    band = chance_band(TRIALS, TRIALS)
    for n, r in SALTED.items():
        print(f"salted, {n:4d} tokens: AUC {r.auc:.2f} (unsalted {RESULTS['hash, blocks of 16', n].auc:.2f}); "
              f"chance stays below {band:.2f} but for a 2.5-sigma fluke; cached tokens seen by the attacker: "
              f"{max(r.hit_cached)}")
    assert all(max(r.hit_cached) == 0 for r in SALTED.values())   # the attacker never hits the victim's blocks
    """),
    md(r"""
    The AUC falls to chance, and the ground truth agrees: no attacker probe found a single cached
    token of the victim's. Explore the histograms per prefix length, salted or not:
    """),
    code(r"""
    import ipywidgets as widgets

    def draw_attack(n, salted):
        r = SALTED[n] if salted else RESULTS["hash, blocks of 16", n]
        fig, ax = plt.subplots(figsize=(8, 3))
        draw_histograms(ax, r, f"hash cache, {n}-token prefix, {'salted' if salted else 'no salt'}")
        ax.legend(fontsize=7)
        plt.tight_layout()
        return fig

    plt.close(draw_attack(512, True))   # a quick self-test, so an error shows here and not inside the widget

    def attack_explorer():
        length = widgets.SelectionSlider(options=LENGTHS, value=512, description="prefix")
        salted = widgets.Checkbox(value=False, description="cache_salt per tenant")
        view = widgets.Output()

        def redraw(_=None):
            with view:
                view.clear_output(wait=True)
                fig = draw_attack(length.value, salted.value)
                display(fig)
                plt.close(fig)

        length.observe(redraw, names="value")
        salted.observe(redraw, names="value")
        redraw()
        return widgets.VBox([widgets.HBox([length, salted]), view])

    display(attack_explorer())
    """),
    md(r"""
    **What salting costs.** A salt per tenant also stops tenants from sharing what they *should*
    share: the same public system prompt in front of every conversation is now computed once per
    tenant. A replay (no model: the caches' bookkeeping, chapter 05's `replay`) of 8 tenants taking
    turns, 4 requests each, every request a 256-token public system prompt, then the tenant's own
    128-token document, then a fresh question (`minikv.security.cost`):

    * **shared**: no salt; every tenant shares everything (and leaks everything);
    * **salted**: a salt per tenant; nothing crosses tenants, the system prompt included;
    * **public**: the middle way, share only the published prefix. `PublicPrefixCache`
      (`minikv.security.public_prefix`) wraps a cache so that the tokens agreeing with a published
      prefix are keyed as they are and the rest under the salt; exercise 8.2 does the same in block
      hashes.
    """),
    code(r"""
    from minikv.security.cost import hit_rates, tenant_trace

    SYSTEM = 256
    tenants = tenant_trace(tenants=8, requests_per_tenant=4, system_len=SYSTEM, private_len=128, vocab=vocab)
    cost = hit_rates(tenants, "hash")
    for name, rate in cost.items():
        print(f"{name:7s}: hit rate {rate:.1%}")
    assert cost["salted"] < cost["public"] <= cost["shared"]
    """),
    md(r"""
    The middle way keeps almost all of the sharing that matters (the system prompt is the bulk of
    what tenants have in common) and none of the leak about what each tenant wrote. Its price: a
    tenant's tokens that happen to continue the published prompt are treated as public, which
    reveals only that they equal public text.

    ### Exercise 8.2 · `tenant_block_hashes(token_ids, block_size, salt, public_blocks=0)`

    Chapter 03's chain of block hashes, with the salt entering at block `public_blocks`, the first
    block that is not public, instead of block 0. The first `public_blocks` hashes are the same for
    every tenant; from there on the chain carries the salt. With `public_blocks=0` it is vLLM's
    `cache_salt` exactly, and the checks compare it with `minikv.prefix.chain_block_hashes`.
    """),
    code(r"""
    minikv.grade.check("8.2")
    """),
    code(r"""
    prompt = list(tenants.prompts[1])
    try:
        alice = ex.tenant_block_hashes(prompt, 16, "alice", public_blocks=SYSTEM // 16)
        bob = ex.tenant_block_hashes(prompt, 16, "bob", public_blocks=SYSTEM // 16)
    except NotImplementedError:
        if SOLUTIONS:
            raise
        alice = bob = None
        print("not done yet: finish exercise 8.2 in exercises/ch08_security.py.")
    if alice is not None:
        same = sum(a == b for a, b in zip(alice, bob))
        print(f"the same {len(prompt)}-token prompt from alice and from bob: {same} of {len(alice)} block hashes shared "
              f"(the {SYSTEM // 16} blocks of the public system prompt)")
    """),
    md(r"""
    ### The ordering leak

    Salting closes the timing of one request, but a cache-aware scheduler (chapter 05's LPM)
    leaks through **order**: of two requests waiting together, the one with the longer cached
    prefix is scheduled first, so its answer comes back first whatever the timings. Submit the
    secret's probe and three decoys at the same moment, one seat in the engine, and watch which
    comes back first (`minikv.security.ordering.ordering_leak`):
    """),
    code(r"""
    from minikv.security.ordering import ordering_leak

    def first_back(policy, salted=False):
        engine = LLMEngine("tiny-llama", prefix_cache="hash", device="cpu", dtype="float32", policy=policy, max_num_seqs=1)
        salts = dict(victim_salt="victim", attacker_salt="attacker") if salted else {}
        return ordering_leak(engine, random.Random(0), trials=8, prefix_tokens=64, vocab=vocab, candidates=4, **salts)

    for policy, salted in [("fcfs", False), ("lpm", False), ("lpm", True)]:
        r = first_back(policy, salted)
        label = f"policy={policy!r}" + (", salted" if salted else "")
        print(f"{label:22s}: the secret's probe came back first in "
              f"{r.first_rate:4.0%} of the trials (chance 25%)")
    """),
    md(r"""
    Under FCFS the order is the order of arrival (shuffled: about one in four); under LPM the probe
    that hits goes first. The fix is the same salt: with a salt per tenant the attacker's probes hit
    nothing of the victim's, so LPM has nothing to prefer. (SGLang's issue 1504 discussed
    this kind of leak for its radix cache; the papers below measure it.)

    ## 4 · Hash collisions: what a short hash costs

    A block-hash cache trusts that equal hashes mean equal prefixes. With sha256 (256 bits) a
    collision will not happen in the life of the universe. A fast, *short* hash is another matter:
    with `n` distinct blocks cached and looked up, the birthday bound gives about `n**2 / 2**(b+1)`
    pairs colliding in `b` bits. A wrong hit serves another prompt's K/V: wrong tokens, silently.
    `minikv.security.collisions.count_collisions` replays a long trace through a cache whose hash is
    sha256 cut to `b` bits, next to a record of what each block *really* holds, and counts the hit
    blocks whose K/V belong to another prefix; with `verify=True` the cache compares the block's
    tokens on every hit and turns each collision into a miss.
    """),
    code(r"""
    from minikv.security.collisions import count_collisions

    long_trace = multi_turn_trace(120, 6, seed=1)
    WIDTHS = [16, 24, 32, 256]
    rows = {bits: count_collisions(long_trace, 4096, 16, bits=bits, verify=False) for bits in WIDTHS}
    checked = count_collisions(long_trace, 4096, 16, bits=16, verify=True)
    print(f"{len(long_trace)} requests, {sum(map(len, long_trace)):,} prompt tokens, a cache of 4096 blocks of 16")
    for bits, c in rows.items():
        print(f"{c.name:17s}: {c.wrong_blocks:5,d} wrong blocks ({c.wrong_tokens:6,d} tokens of someone else's K/V) in "
              f"{c.requests_hurt:3d} requests; the arithmetic expects {c.expected:8.2f} wrong hits")
    print(f"16 bits with verify: {checked.wrong_blocks} wrong blocks, {checked.detected} collisions caught as misses")
    assert rows[16].wrong_blocks > rows[32].wrong_blocks and rows[256].wrong_blocks == 0 == checked.wrong_blocks
    """),
    md(r"""
    Sixteen bits serve someone else's K/V in a couple of hundred requests of this trace (`verify`
    turns every one into a miss instead); from 24 bits on this trace sees none, but a server looks
    up billions of blocks, and `2**32` is about 4 billion.
    minikv's default is sha256 without `verify`; a fast hash (`hash_fn="xxh3_128"` or `"xxh64"`)
    turns `verify` on by default, so a collision costs a miss, never wrong K/V. vLLM keeps sha256
    among its `prefix_caching_hash_algo` choices and its maintainers treat a collision as a leak of
    another tenant's data (vLLM advisory GHSA-rm76-4mrf-v9r8 was a *predictable* collision, the
    worst kind: a tenant who can make collisions can poison another's prefix).

    ## 5 · A second level: the CPU offload tier

    When the working set outgrows the KV pool, the cache evicts blocks that are wanted again soon.
    Chapter 05 met the worst case: conversations taking turns in rounds, each evicted just before it
    speaks again. Host memory is far larger than the pool, and copying a block back is far cheaper
    than recomputing it, so vLLM (its CPU offloading connector, `kv_offloading_size`) and SGLang
    (HiCache, host memory as the radix tree's second level) keep evicted blocks there.

    minikv's tier is `minikv.prefix.offload.OffloadTier`: fixed host slots, an LRU index from the
    cache's block key to a slot, and copies through the KV pool. A block the cache evicts is copied
    there; a `match` that runs out of pool hits walks on into the tier, and the blocks it finds
    are copied back into fresh pool blocks, exactly as if they had been computed. `LLM(...,
    cpu_offload_blocks=N)` (or `cpu_offload_gb=`) gives one to either cache. First the hit rate,
    by replay: 40 conversations of 6 turns, in rounds, a pool of 256 blocks of 16 tokens.
    """),
    code(r"""
    rounds = multi_turn_trace(40, 6, seed=0, interleave="round-robin")
    TIERS = [0, 256, 1024, 4096]
    tokens = sum(map(len, rounds))

    def tier_hit_rate(kind, tier_blocks, pool_blocks=256):
        pool = KVPool(1, 1, 1, 16, pool_blocks)            # the replay needs the tier to copy something: a tiny pool
        tier = OffloadTier(pool, tier_blocks) if tier_blocks else None
        cache = (BlockHashCache(pool_blocks, 16, offload=tier) if kind == "hash"
                 else RadixCache(pool_blocks, 16, offload=tier))
        hits = sum(replay(cache, rounds))
        return hits / tokens, cache.stats().offload_hit_tokens / tokens

    TIER_RATES = {(kind, t): tier_hit_rate(kind, t) for kind in ("hash", "radix") for t in TIERS}
    fig, ax = plt.subplots(figsize=(7, 3))
    for kind in ("hash", "radix"):
        ax.plot([t * 16 for t in TIERS[1:]], [TIER_RATES[kind, t][0] for t in TIERS[1:]], "o-", label=f"{kind} + tier")
        ax.axhline(TIER_RATES[kind, 0][0], ls="--", lw=0.8, color="gray")
    ax.set_xscale("log")
    ax.set_xlabel("tier size (tokens of host memory)")
    ax.set_ylabel("hit rate")
    ax.set_title("40 chats in rounds, pool of 4,096 tokens (dashed: no tier)", fontsize=9, loc="left")
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()
    for (kind, t), (rate, from_tier) in TIER_RATES.items():
        print(f"{kind:5s} tier {t:5d} blocks: hit rate {rate:5.1%} ({from_tier:5.1%} copied back from the tier)")
    assert TIER_RATES["hash", 4096][0] >= 2 * TIER_RATES["hash", 0][0]
    """),
    md(r"""
    Without a tier, LRU in rounds keeps nothing (chapter 05); a tier that holds the conversations'
    histories turns most of them into hits again. Now the TTFT, on the engine: 6 chats of about 350
    tokens taking turns in a pool of 48 blocks (768 tokens), without and with `cpu_offload_blocks=256`. On a CPU both levels
    are host memory and the copy is a plain memcpy; on a GPU the copy crosses PCIe from pinned
    memory, still far cheaper than recomputing (`minikv bench offload` measures both per block).
    """),
    code(r"""
    def chat_ttft(**options):
        llm = tiny("hash", block_size=16, num_blocks=48, **options)
        rng = random.Random(0)
        history = [[rng.randrange(32, 250) for _ in range(320)] for _ in range(6)]
        ttft = []
        for turn in range(3):
            for h in history:
                h += [rng.randrange(32, 250) for _ in range(24)]
                out = llm.generate({"prompt_token_ids": h}, SamplingParams(max_tokens=4, temperature=0.0))[0]
                h += out.token_ids
                if turn:
                    ttft.append(out.metrics.ttft)
        return np.median(ttft), llm.cache_stats()

    for name, options in [("no tier", {}), ("cpu_offload_blocks=256", {"cpu_offload_blocks": 256})]:
        median, stats = chat_ttft(**options)
        print(f"{name:24s}: median TTFT of the later turns {1e3 * median:5.1f} ms, hit rate {stats.hit_rate:5.1%} "
              f"({stats.offload_hit_tokens:,} tokens copied back from the tier)")
    """),
    md(r"""
    The tier pays when recomputing a block costs more than copying it back, and that grows with the
    model: on `tiny-llama` and short prompts the two are close (a few hundred microseconds of
    bookkeeping either way), on SmolLM2 or any real model recomputing a block is a whole forward
    pass over its tokens through every layer while the copy is a few hundred kilobytes
    (`minikv bench offload` reports both per block, and on a GPU the copy from pinned memory).

    ### Exercise 8.3 · `HostTier`: store and copy back

    The tier's three moves, in a subclass of `OffloadTier` (which sets up the host slots, the LRU
    index and the counters, and gives the rest of the interface): `store` copies evicted blocks out,
    evicting the least recently stored entries when the tier is full; `checkout` takes the blocks a
    hit found out of the index (a block lives in one level at a time); `load` copies them back into
    the pool blocks the cache allocated and frees their slots. The engine takes your class the way it
    takes minikv's: `LLM(..., cpu_offload_blocks=N, cpu_offload_cls=HostTier)` builds
    `HostTier(llm.kv_pool, N)` in place of `OffloadTier` and gives it to the prefix cache. The last
    check runs `LLM("tiny-llama", cpu_offload_blocks=48, cpu_offload_cls=HostTier)` against the same
    engine with minikv's tier.
    """),
    code(r"""
    minikv.grade.check("8.3")
    """),
    code(r"""
    def my_tier_rate(tier_blocks):
        pool = KVPool(1, 1, 1, 16, 256)
        cache = BlockHashCache(256, 16, offload=ex.HostTier(pool, tier_blocks))
        return sum(replay(cache, rounds)) / tokens

    try:
        mine = my_tier_rate(1024)
    except NotImplementedError:
        if SOLUTIONS:
            raise
        mine = None
        print("not done yet: finish exercise 8.3 in exercises/ch08_security.py.")
    if mine is not None:
        print(f"your tier of 1024 blocks: hit rate {mine:.1%} (minikv's: {TIER_RATES['hash', 1024][0]:.1%})")
        # the same chats as above, with your tier inside the engine
        _, yours = chat_ttft(cpu_offload_blocks=256, cpu_offload_cls=ex.HostTier)
        _, theirs = chat_ttft(cpu_offload_blocks=256)
        print(f"in the engine: {yours.offload_hit_tokens:,} tokens copied back from your tier "
              f"(minikv's: {theirs.offload_hit_tokens:,}), hit rate {yours.hit_rate:.1%} ({theirs.hit_rate:.1%})")
        if SOLUTIONS:
            assert mine == TIER_RATES["hash", 1024][0]
            assert yours.offload_hit_tokens == theirs.offload_hit_tokens > 0 and yours.hit_rate == theirs.hit_rate
    """),
    md(r"""
    ## 6 · Moving on: vLLM and SGLang

    minikv keeps vLLM's offline API (`LLM`, `SamplingParams`, `generate`, `RequestOutput`), so a
    script written against it moves to vLLM by changing its import, and its server speaks the
    OpenAI API like `vllm serve` and SGLang's server, so the same client (`minikv bench serve
    --base-url ...`) measures all three. `docs/moving_on.md` has the whole map; this chapter's part:

    | what | minikv | vLLM | SGLang |
    |---|---|---|---|
    | prefix caching | `prefix_cache="hash"` / `"radix"`, `enable_prefix_caching` | `enable_prefix_caching` (on by default in v1) | radix cache on by default; `--disable-radix-cache` |
    | block / page size | `block_size=16`; radix `page_size` | `block_size` | `--page-size` (1 by default) |
    | block hash | `prefix_cache_options={"hash_fn": ...}` (sha256 default) | `prefix_caching_hash_algo` | radix keys are the tokens |
    | tenant isolation | `cache_salt` (request field) | `cache_salt` (request field, the CVE-2025-46570 fix) | `cache_salt` in recent releases |
    | cached tokens in the response | always | `--enable-prompt-tokens-details` | `--enable-cache-report` |
    | cache-aware order | `policy="lpm"` | FCFS or priority | `--schedule-policy lpm` (default) |
    | second memory tier | `cpu_offload_blocks` / `cpu_offload_gb`; your tier class: `cpu_offload_cls` | `kv_offloading_size` (OffloadingConnector) | HiCache: `--enable-hierarchical-cache` |

    The same attack runs against any of them: `minikv bench leak --base-url http://127.0.0.1:8000/v1`
    probes an OpenAI-compatible server over streaming completions, `cache_salt` in the body.

    ## 7 · Summary

    * A shared prefix cache leaks through time: a hit's TTFT is shorter, and on long prefixes an
      attacker tells which prefix a victim sent with AUC near 1. Score an attacker on trials it did
      not train on.
    * At page size 1 a radix tree answers one token at a time, and a server that reports cached
      tokens answers without any timing: a secret falls in (alphabet x length) probes. Blocks of 16
      make the walk impractical but leave the identification attack intact.
    * A **salt per tenant** (in the first block's hash) closes the channel, the ordering leak of
      LPM too, and costs the sharing across tenants; sharing only **published** prefixes keeps most
      of it.
    * A short hash turns into wrong K/V at the birthday bound; keep sha256, or verify the tokens
      on a hit.
    * A **CPU tier** keeps evicted blocks in host memory and copies them back on a hit: when the
      working set outgrows the pool it restores the hit rate a loop of conversations destroys.

    ## Further reading

    * CVE-2025-46570 (vLLM advisory GHSA-4qjh-9fv9-r85r): the timing side channel of vLLM's prefix
      caching; the fix is the per-request `cache_salt` in the first block's hash (vLLM RFC #16016,
      PR #17045). SGLang's request for the same is sgl-project/sglang#9163.
    * X. Zheng et al., *InputSnatch: Stealing Input in LLM Services via Timing Side-Channel Attacks*,
      [arXiv:2411.18191](https://arxiv.org/abs/2411.18191): input recovery through the prefix cache
      of vLLM and the semantic cache of GPTCache.
    * *The Early Bird Catches the Leak: Unveiling Timing Side Channels in LLM Serving
      Systems*, [arXiv:2409.20002](https://arxiv.org/abs/2409.20002): a token-by-token search for
      shared prompt prefixes.
    * SGLang issue [#1504](https://github.com/sgl-project/sglang/issues/1504), *Possible timing
      side-channels caused by shared prefix* (2024): TTFT reveals the radix cache's sharing, and one
      more shared token alone is hard to time.
    * *I Know What You Asked: Prompt Leakage via KV-Cache Sharing in Multi-Tenant LLM
      Serving* (PromptPeek), NDSS 2025: token-by-token recovery against SGLang-style radix caches,
      about 92% of the tokens recovered on average.
    * C. Gu et al., *Auditing Prompt Caching in Language Model APIs*,
      [arXiv:2502.07776](https://arxiv.org/abs/2502.07776) (ICML 2025): the same TTFT test run against
      commercial APIs found caches shared across users.
    * SGLang's HiCache and vLLM's KV offloading connector: the second memory tier in production.
    * minikv's `docs/security.md` (the lab's measurements and sources), `minikv/security/` (probes,
      AUC, the attack, recovery, `PublicPrefixCache`, collisions), `minikv/prefix/offload.py`,
      `minikv bench leak`, `minikv bench collisions`, `minikv bench offload` and `docs/moving_on.md`.
    """),
]
