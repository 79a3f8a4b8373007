"""Chapter 00: the tour. Edit here, then run ``python tools/make_notebooks/build.py``."""

from nbtools import code, md

PATH = "chapters/00_tour.ipynb"

CELLS = [
    md(r"""
    # Chapter 00 · A tour of minikv

    When you call a model through vLLM, SGLang or a hosted API, the engine behind it spends much of
    its effort on one thing: **not computing what it has computed before**. The keys and values of
    every token a model has read (its *KV cache*) are kept, packed into blocks, shared between requests
    that start the same way, and evicted when memory runs short. This course shows you how, by having
    you build each of those pieces and plug it into a small but real inference engine.

    You should know PyTorch and have used Hugging Face `transformers`; you do not need to have looked
    inside an inference engine. Everything runs on a laptop CPU. A GPU makes chapter 06's kernels
    compile for real, but is never required.

    ## The map

    | ch | notebook | you build | status |
    |----|----------|-----------|--------|
    | 00 | this tour | nothing yet: environment check, first generation, how grading works | ready |
    | 01 | `01_kv_cache.ipynb` | generation with a contiguous KV cache; the memory bill | ready |
    | 02 | `02_paged_kv.ipynb` | block allocator, block tables, slot mapping, paged attention in PyTorch | ready |
    | 03 | `03_prefix_hashing.ipynb` | chained block hashes, longest cache hit, ref-counted LRU pool (vLLM-style prefix caching) | ready |
    | 04 | `04_radix_tree.ipynb` | match with split, insert, lock, LRU leaf eviction (SGLang-style) | ready |
    | 05 | `05_scheduling.ipynb` | fill a step's token budget, preempt and roll back, longest-prefix-match order, Belady's optimum (continuous batching, chunked prefill, cache-aware scheduling) | ready |
    | 06 | `06_triton_attention.ipynb` | Triton paged attention: the block-table gather, the online-softmax decode loop, the prefix/causal mask (interpreter on CPU) | ready |
    | 07 | `07_serving.ipynb` | the server seen from outside: a streaming detokenizer with stop strings, TTFT/TPOT/ITL percentiles, cached tokens over HTTP with your radix tree behind the server, hit rate from `/metrics` | ready |
    | 08 | security & beyond | timing side channels and cache salt, a CPU tier, moving on to vLLM / SGLang | coming |

    Each chapter follows the same path: the idea with a small example you can change, a measurement
    on the real model, exercises, then your code plugged into the engine.
    """),
    md(r"""
    ## 1 · Check your environment

    `minikv doctor` (in a terminal) prints the same report as the next cell: what this machine
    offers and where minikv keeps its converted model.
    """),
    code(r"""
    import os
    import platform

    import torch

    # One CPU thread for the whole chapter, as in the others: on a busy machine many threads fight over
    # few cores and a generation can take several times longer. (On a GPU this setting does not matter.)
    torch.set_num_threads(1)

    try:
        from minikv.doctor import report
        rows = report()
    except ImportError:                                   # an older minikv without the doctor
        import transformers
        try:
            import triton
            triton_version = triton.__version__
        except ImportError:
            triton_version = "not installed"
        if os.environ.get("TRITON_INTERPRET") == "1":
            mode = "interpreted (TRITON_INTERPRET=1)"
        else:
            mode = "compiled (CUDA)" if torch.cuda.is_available() else "interpreted on CPU"
        rows = [("python", platform.python_version()), ("torch", torch.__version__),
                ("transformers", transformers.__version__), ("triton", triton_version),
                ("device", "GPU: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"),
                ("triton kernels", mode)]

    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    """),
    md(r"""
    What the lines mean:

    * **device**: with a CUDA GPU, minikv runs the model there in bfloat16; otherwise on the CPU in
      float32. Both work for every chapter.
    * **triton kernels**: chapter 06 writes attention kernels in [Triton](https://triton-lang.org).
      On a GPU they are *compiled*. On a CPU they run in Triton's *interpreter*
      (`TRITON_INTERPRET=1`, set before a kernel is defined): slow, but the same code, good for
      learning and for tests on tiny shapes.
    * **model cache**: the course model, SmolLM2-135M-Instruct, ships inside the package as a GGUF
      file. The first `LLM("smollm2-135m")` converts it once (about 20 s) into a normal Hugging Face
      checkpoint there; later loads take well under a second.

    ## 2 · Your first generation

    minikv's public face copies vLLM's, so what you learn here carries over: an `LLM`, a
    `SamplingParams`, and `generate` (or `chat`, which wraps your message in the model's chat template).
    """),
    code(r"""
    from minikv import LLM, SamplingParams

    llm = LLM("smollm2-135m")          # the first run ever converts the embedded weights (~20 s)
    cfg = llm.config
    print(f"SmolLM2-135M-Instruct on {llm.device} ({llm.dtype}): {cfg.num_layers} layers, "
          f"{cfg.num_heads} query heads, {cfg.num_kv_heads} KV heads, head_dim {cfg.head_dim}, vocabulary {cfg.vocab_size:,}")

    out = llm.chat("What is the capital of France?", SamplingParams(max_tokens=32, temperature=0.0))
    m = out.metrics
    print(f"\nassistant: {out.text.strip()}")
    print(f"\n{len(out.prompt_token_ids)} prompt tokens, {len(out.token_ids)} generated ({out.finish_reason}); "
          f"time to first token {m.ttft * 1e3:.0f} ms, {len(out.token_ids) / m.e2e:.1f} tokens/s")
    assert "Paris" in out.text
    """),
    md(r"""
    **Time to first token (TTFT)** is the time to read the whole prompt (the *prefill*) and pick the
    first answer token. Every token after that is one *decode* step. These two phases, and what the KV
    cache does to each, are the subject of the whole course.

    The model never saw the bare question. `chat` wrapped it in the chat template, and those extra
    tokens are part of the prompt too:
    """),
    code(r"""
    prompt_ids = llm.encode("What is the capital of France?", chat=True)
    assert prompt_ids == out.prompt_token_ids
    print(repr(llm.tokenizer.decode(prompt_ids)))
    print(f"= {len(prompt_ids)} tokens: {prompt_ids}")
    """),
    md(r"""
    Ask the same question again. This `llm` was built without a prefix cache, so it starts from
    scratch every time: `num_cached_tokens` is 0, and the second prefill costs about as much as the
    first (the first request may also have paid some one-time warm-up). The system prompt and the
    template are identical across requests; an engine with a prefix cache (chapters 03 and 04)
    finds those tokens already computed and skips them. A preview: the same two requests with
    `prefix_cache="hash"`.
    """),
    code(r"""
    again = llm.chat("What is the capital of France?", SamplingParams(max_tokens=8, temperature=0.0))
    print(f"first request:  TTFT {out.metrics.ttft * 1e3:.0f} ms, cached prompt tokens: {out.num_cached_tokens}")
    print(f"second request: TTFT {again.metrics.ttft * 1e3:.0f} ms, cached prompt tokens: {again.num_cached_tokens}")
    assert again.token_ids == out.token_ids[:8]       # greedy decoding: the same question gives the same answer
    """),
    code(r"""
    cached = LLM("smollm2-135m", prefix_cache="hash")
    first = cached.chat("What is the capital of France?", SamplingParams(max_tokens=8, temperature=0.0))
    second = cached.chat("What is the capital of France?", SamplingParams(max_tokens=8, temperature=0.0))
    print(f"with a prefix cache, second request: cached prompt tokens {second.num_cached_tokens} of {len(second.prompt_token_ids)}")
    assert second.num_cached_tokens > 0 and second.token_ids == first.token_ids
    """),
    md(r"""
    ## 3 · Exercises and the grader

    Every chapter asks you to build a few pieces of the engine. They live in plain Python files:

    * **`exercises/chNN_topic.py`**: your file. Each function or class has a docstring that is its
      spec, and a body that raises `NotImplementedError` until you replace it.
    * **`solutions/chNN_topic.py`**: the reference solutions. The files in `exercises/` are generated
      from them by `minikv exercises` (each solution region becomes a `raise NotImplementedError`),
      so the two always agree on names, signatures and specs. The command never overwrites a file
      you have edited unless you add `--force`. Try not to peek at the solutions.

    The grader runs seeded tests on your code and compares it with the reference:

    * in a notebook, `minikv.grade.check("1.1")` grades exercise 1.1 and shows the result inline;
    * in a terminal, `minikv grade --chapter 1` grades a chapter, and `minikv grade` everything, as a
      table (add `--json` for machines).

    | status | meaning |
    |--------|---------|
    | **PASS** | every check agrees with the reference |
    | **FAIL** | a check disagrees: the grader shows the first problem and a hint to fix it |
    | **TODO** | not started: the code still raises `NotImplementedError` |
    | **SKIP** | needs something this machine lacks (a CUDA GPU for the compiled-kernel checks) |

    Where a piece can run inside the engine, the chapter also plugs yours in (`LLM(..., kv_cache_cls=YourKVCache)`)
    and checks that the real model gives the same tokens with your code as with the reference.

    Here is exercise 1.1 before you have written it (it reads TODO; in CI, which runs the notebooks
    against the solutions, it reads PASS):
    """),
    code(r"""
    import minikv.grade

    minikv.grade.check("1.1")
    """),
    md(r"""
    ## Where to next

    Open **`01_kv_cache.ipynb`**: why engines keep keys and values at all, what that saves on SmolLM2,
    what it costs in memory, and your first piece of the engine.
    """),
]
