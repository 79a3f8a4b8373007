"""Chapter 07: serving. Edit here, then run ``python tools/make_notebooks/build.py``."""

from nbtools import code, md

PATH = "chapters/07_serving.ipynb"

CELLS = [
    md(r"""
    # Chapter 07 · Serving: an OpenAI-compatible server, streaming, latency, and the cache seen from outside

    Chapters 01 to 06 built an engine: paged KV blocks, a prefix cache, a scheduler that re-plans every
    step, kernels. People meet all of it through a **server**: a chat product sends HTTP requests, the
    same system prompt every time, and wants the first words back fast. In this chapter you will

    * start minikv's OpenAI-compatible server in a thread and talk to it with raw HTTP (`httpx`) and
      with the official `openai` client;
    * watch a response **stream** as Server-Sent Events, and write the piece that turns token ids into
      safe text: never half a character, never the start of a stop string (exercise 7.1);
    * turn the arrival times of a stream's chunks into the numbers every serving benchmark prints:
      TTFT, TPOT, inter-token latency, p50/p90/p99 (7.2), and measure TTFT with the prefix cache on and off;
    * read the cache's work the way a client sees it, `usage.prompt_tokens_details.cached_tokens`, and
      serve **your own chapter-04 radix tree** behind the server (7.3);
    * scrape `/metrics` before and after some traffic and compute the hit rate of just that traffic (7.4);
    * drop a client mid-stream and watch its KV blocks come back.

    How one request travels through minikv's server (`minikv/serve/`):

    ```
    client ──HTTP POST /v1/completions──► FastAPI handler (asyncio, uvicorn's thread)
        checks the JSON (400 if bad) ─► EngineLoop.generate: LLMEngine.add_request (tokenizes; never waits)
                                                │
    EngineLoop thread: while work: LLMEngine.step()   (schedule ─► one forward ─► sample ─► detokenize)
        each RequestOutput ─► loop.call_soon_threadsafe ─► that request's asyncio.Queue
                                                │
    handler: await queue.get() ─► "data: {chunk}\n\n" (Server-Sent Events) ... "data: [DONE]"
    client gone? ─► the handler's `finally` aborts the request ─► its blocks go back to the cache
    ```
    """),
    code(r"""
    %matplotlib inline
    import json
    import os
    import time

    import httpx
    import matplotlib.pyplot as plt
    import numpy as np
    import openai
    import torch

    import minikv.grade
    from minikv.bench.latency import stream_latency as minikv_stream_latency, summarize
    from minikv.bench.scrape import hit_rate_between as minikv_hit_rate_between
    from minikv.engine import LLMEngine
    from minikv.engine.detokenizer import IncrementalDetokenizer
    from minikv.serve import ServerThread

    # CI runs the notebooks against the reference solutions (MINIKV_IMPL=solutions); you run them against your own code.
    SOLUTIONS = os.environ.get("MINIKV_IMPL") == "solutions"
    torch.set_num_threads(1)   # steady timings on a busy machine, as in the other chapters
    """),
    md(r"""
    ## 1 · A server in a thread

    `ServerThread` runs the whole server (uvicorn, the FastAPI app, the engine loop) in background
    threads of this kernel, on `127.0.0.1` and a free port, and **always stops it** when its `with`
    block ends, even when a cell fails. `minikv serve --model smollm2-135m --port 8000` is the same
    server as a command. The engine is built once here and handed to a new server in each cell, so its
    prefix cache lives on from cell to cell, as it would in a server that runs for days.
    """),
    code(r"""
    MODEL = "smollm2-135m"
    engine = LLMEngine(MODEL, prefix_cache="radix", device="cpu", seed=0)

    def serving():
        return ServerThread(engine=engine, served_model_name=MODEL)

    with serving() as srv:
        print(srv.url, "->", httpx.get(srv.url + "/health").json(), "| models:",
              [m["id"] for m in httpx.get(srv.base_url + "/models").json()["data"]])
        r = httpx.post(srv.base_url + "/completions", timeout=60,
                       json={"model": MODEL, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0})
        print(json.dumps(r.json(), indent=1)[:900])
    """),
    md(r"""
    That is OpenAI's completion shape: `choices[0].text`, a `finish_reason` (`"length"`: it stopped at
    `max_tokens`), and `usage` with `prompt_tokens_details.cached_tokens`, the prompt tokens the prefix
    cache supplied. Any OpenAI client works, the official one included; chat goes through the model's
    chat template, and a bad request gets an error body and a 400 while the server goes on serving:
    """),
    code(r"""
    with serving() as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0)
        chat = client.chat.completions.create(model=MODEL, max_tokens=12, temperature=0,
                                              messages=[{"role": "user", "content": "Say hello in French."}])
        print(repr(chat.choices[0].message.content), chat.usage.prompt_tokens, "prompt tokens")
        bad = httpx.post(srv.base_url + "/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": "six"})
        print(bad.status_code, bad.json()["error"]["message"])
    """),
    md(r"""
    ## 2 · Streaming, and text that is safe to send

    With `"stream": true` the server answers with **Server-Sent Events**: one `data: {json}` line per
    chunk as the engine produces tokens, then `data: [DONE]`. Each chunk's `text` is what the engine's
    detokenizer released in that step. Below, the raw lines and when each arrived:
    """),
    code(r"""
    with serving() as srv:
        body = {"model": MODEL, "prompt": "Three fruits: apple,", "max_tokens": 8, "temperature": 0, "stream": True}
        sent = time.perf_counter()
        with httpx.stream("POST", srv.base_url + "/completions", json=body, timeout=60) as response:
            lines = [(time.perf_counter() - sent, line) for line in response.iter_lines() if line]
    print("the first event, whole:", lines[0][1], sep="\n")
    print("\n  arrival  the text it carries (finish_reason)")
    for t, line in lines:
        if line == "data: [DONE]":
            print(f"{t * 1e3:7.1f} ms  [DONE]")
            continue
        choice = json.loads(line[len("data: "):])["choices"][0]
        print(f"{t * 1e3:7.1f} ms  {choice['text']!r}" + (f"  ({choice['finish_reason']})" if choice["finish_reason"] else ""))
    """),
    md(r"""
    Two things make those pieces harder than `tokenizer.decode(all_ids)` at the end.

    **A token is not a character.** SmolLM2's tokenizer is byte-level BPE: a character outside its
    merges (an emoji, a rare accent) is cut into byte tokens, and decoding the first alone gives U+FFFD,
    `"�"`. A stream that sent it could never take it back. **A stop string may span tokens.**
    `stop=["\n\n"]` can arrive as `"\n"` then `"\n"`; once the first is sent, the client shows it even
    though the text should end before it. So while a request runs, the last `len(longest stop) - 1`
    characters wait. Here is what decoding token by token gives for a text with an emoji:
    """),
    code(r"""
    tok = engine.tokenizer
    ids = tok.encode("Tea 🍵 or café?", add_special_tokens=False)
    for i in range(1, len(ids) + 1):
        print(f"{i:2d} tokens -> {tok.decode(ids[:i])!r}")
    """),
    md(r"""
    ### Exercise 7.1 · `StreamDetokenizer(tokenizer, stop, include_stop_str_in_output)`

    Open **`exercises/ch07_serving.py`**. `push(ids)` adds generated token ids one at a time: decode
    them all; while the text ends with U+FFFD wait; else the text grows, and each stop string is looked
    for where it could end in the new part (it may begin earlier: it can span tokens); the earliest cuts
    the text. `take()` gives the new text except the last `holdback` characters; `take(finished=True)`
    gives the rest. The checks stream texts byte by byte through yours and through the engine's
    `IncrementalDetokenizer` and compare every piece.
    """),
    code(r"""
    minikv.grade.check("7.1")
    """),
    code(r"""
    ex = minikv.grade.learner_module("ch07_serving")   # exercises/ (solutions/ under MINIKV_IMPL=solutions)

    def pieces(det, ids):
        out = []
        for t in ids:
            det.push([t])
            out.append(det.take())
            if det.stop_reason is not None:
                break
        return out + [det.take(finished=True)]

    ids = tok.encode("Tea 🍵 or café?\n\nNext question", add_special_tokens=False)
    print("minikv's:", pieces(IncrementalDetokenizer(tok, ["\n\n"]), ids))
    try:
        print("yours:   ", pieces(ex.StreamDetokenizer(tok, ["\n\n"]), ids))
    except NotImplementedError:
        if SOLUTIONS:
            raise
        print("not done yet: finish exercise 7.1 in exercises/ch07_serving.py")
    """),
    md(r"""
    Pick a text, a stop string and whether the stop string stays in the output, and watch each token
    go through minikv's detokenizer: what the token decodes to alone, the text so far, what is sent,
    and what is held back.
    """),
    code(r"""
    import ipywidgets as widgets
    from IPython.display import display

    STREAM_TEXTS = {"tea, symbols": "Tea ☕ costs ≈ 3, √ fine ✓\n\nNext question",
                    "Greek, Cyrillic": "Ж is not λ; Ω ≈ ∑ ♥\n\nMore?"}
    STREAM_STOPS = {'"\\n\\n"': ["\n\n"], '"≈"': ["≈"], '"is not"': ["is not"], "none": []}

    def draw_stream(text_name, stop_name, include):
        ids = tok.encode(STREAM_TEXTS[text_name], add_special_tokens=False)
        det = IncrementalDetokenizer(tok, STREAM_STOPS[stop_name], include)
        rows = []
        for k, t in enumerate(ids):
            det.push([t])
            piece = det.take()
            rows.append([str(k), repr(tok.decode([t])), repr(det.text), repr(piece), repr(det.text[det.sent:])])
            if det.stop_reason is not None:
                break
        rows.append(["end", "", repr(det.text), repr(det.take(finished=True)), ""])
        fig, ax = plt.subplots(figsize=(10, 0.21 * len(rows) + 0.5))
        ax.axis("off")
        table = ax.table(cellText=rows, colLabels=["token", "decodes to", "text so far", "sent", "held back"],
                         loc="upper center", cellLoc="left", colWidths=[0.06, 0.14, 0.44, 0.18, 0.18])
        table.auto_set_font_size(False)
        table.set_fontsize(7.5)
        for (r, c), cell in table.get_celld().items():
            if r > 0 and c == 3 and rows[r - 1][3] not in ("''", ""):
                cell.set_facecolor("#d9f0d3")
            if r > 0 and c == 4 and rows[r - 1][4] not in ("''", ""):
                cell.set_facecolor("#fde0c5")
        reason = f"stopped at {det.stop_reason!r}" if det.stop_reason else "no stop string met"
        held = f"the last {det.holdback} character{'s' * (det.holdback != 1)} held back while running"
        ax.set_title(f"{len(rows) - 1} of {len(ids)} tokens pushed, {reason}; {held}", fontsize=9, loc="left")
        plt.tight_layout()
        return fig

    plt.close(draw_stream("tea, symbols", '"\\n\\n"', False))   # a quick self-test, so an error shows here

    def stream_explorer():
        # The controls and the drawing they redraw; the callback keeps its own Output (a local name).
        text = widgets.Dropdown(options=list(STREAM_TEXTS), description="text")
        stop = widgets.Dropdown(options=list(STREAM_STOPS), description="stop")
        include = widgets.Checkbox(value=False, description="include_stop_str_in_output")
        view = widgets.Output()

        def redraw(_=None):
            with view:
                view.clear_output(wait=True)
                fig = draw_stream(text.value, stop.value, include.value)
                display(fig)
                plt.close(fig)

        for w in (text, stop, include):
            w.observe(redraw, names="value")
        redraw()
        return widgets.VBox([widgets.HBox([text, stop, include]), view])

    display(stream_explorer())
    """),
    md(r"""
    Empty pieces are steps where the text waited (half an emoji, or characters that could begin
    `"\n\n"`); nothing after the stop string goes out. vLLM's detokenizer
    (`vllm/v1/engine/detokenizer.py`) does the same: it decodes incrementally (a short window of recent
    tokens, `prefix_offset` and `read_offset`, or, for fast tokenizers, the `tokenizers` library's
    `DecodeStream`) and holds back `stop_buffer_length = max(len(s) for s in stop) - 1` characters
    unless the stop string is included in the output.

    ## 3 · Latency as a client measures it

    A benchmark client takes the time just before it sends a request, then one timestamp per chunk
    that carries text. Everything else follows:

    * **TTFT** (time to first token) = first chunk − send time: the wait, the prefill, the first token;
    * **E2E** = last chunk − send time;
    * **ITL** (inter-token latency): the gaps between successive chunks;
    * **TPOT** (time per output token, "excl. 1st token" in vLLM's benchmark output) = (E2E − TTFT) / (n − 1).

    Across requests each is summarized as mean and p50/p90/p99, percentiles by linear interpolation
    between closest ranks (numpy's default). A server's `/metrics` histograms measure the same things
    from the inside; the client's numbers include the network and the HTTP layer.

    ### Exercise 7.2 · `percentile(xs, q)` and `stream_latency(sent_at, chunk_times, num_tokens)`
    """),
    code(r"""
    minikv.grade.check("7.2")
    """),
    md(r"""
    ## 4 · The prefix cache, seen from the client

    A chat product sends the same system prompt in front of every question. The first request computes
    its KV; the next ones find it in the radix tree, and the server says so in
    `usage.prompt_tokens_details.cached_tokens` (OpenAI's field; a multiple of the block size, 16
    here, and never the whole prompt: the last token is always computed). `cache_salt` (vLLM's field)
    keeps tenants apart: a request with another salt cannot hit blocks cached under the first.
    """),
    code(r"""
    SYSTEM = ("You are the support assistant of a small tea shop. You answer in one short, friendly sentence, "
              "you never invent prices, and you suggest green tea when unsure. ") * 6

    def ask(question):
        return SYSTEM + "\nQ: " + question + "\nA:"

    with serving() as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0)
        for question, salt in [("Do you sell matcha?", None), ("Is oolong strong?", None),
                               ("Do you ship abroad?", None), ("Do you sell matcha?", "tenant-b")]:
            r = client.completions.create(model=MODEL, prompt=ask(question), max_tokens=1, temperature=0,
                                          extra_body={"cache_salt": salt} if salt else None)
            print(f"{question:22s} salt={salt!s:9s} prompt {r.usage.prompt_tokens} tokens, "
                  f"cached {r.usage.prompt_tokens_details.cached_tokens}")
    """),
    md(r"""
    ### Exercise 7.3 · `cached_tokens(base_url, model, prompts, cache_salt=None)`

    The same numbers with plain `httpx`: post each prompt to `{base_url}/completions` and read
    `usage.prompt_tokens_details.cached_tokens`. The checks compare yours, over HTTP, with what the
    offline engine reports for the same prompts; the last one starts
    `ServerThread("tiny-llama", prefix_cache=<your chapter-04 TreePrefixCache>)` (minikv's pieces where
    yours are not done) and checks your tree's hits through your client.
    """),
    code(r"""
    minikv.grade.check("7.3")
    """),
    md(r"""
    ### TTFT with and without the prefix cache

    Now the point of all this: three questions behind the shared system prompt, streamed one after the
    other, to a server whose engine has no prefix cache and to one with the radix tree. The latencies
    come from your `stream_latency` (minikv's until 7.2 is done).
    """),
    code(r"""
    QUESTIONS = ["Do you sell matcha?", "Is oolong strong?", "Can I cold-brew green tea?"]
    try:
        ex.stream_latency(0.0, [1.0], 1)
        stream_latency, whose = ex.stream_latency, "your"
    except NotImplementedError:
        if SOLUTIONS:
            raise
        stream_latency, whose = minikv_stream_latency, "minikv's (7.2 is not done yet)"

    def timed_stream(srv, prompt, max_tokens=4, salt=None):
        body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                "ignore_eos": True, "stream_options": {"include_usage": True}}
        if salt:
            body["cache_salt"] = salt
        chunks, usage = [], None
        sent = time.perf_counter()
        with httpx.stream("POST", srv.base_url + "/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if event["choices"] and event["choices"][0]["text"]:
                    chunks.append(time.perf_counter())
                usage = event.get("usage") or usage
        return stream_latency(sent, chunks, usage["completion_tokens"]), usage["prompt_tokens_details"]["cached_tokens"]

    runs = {}
    with ServerThread(engine=LLMEngine(MODEL, prefix_cache="none", device="cpu", seed=0), served_model_name=MODEL) as srv:
        runs["none"] = [timed_stream(srv, ask(q)) for q in QUESTIONS]
    with serving() as srv:   # our radix engine; a new salt, so the first request finds nothing cached
        runs["radix"] = [timed_stream(srv, ask(q), salt="ttft-demo") for q in QUESTIONS]

    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.38
    for k, (cache, rows) in enumerate(runs.items()):
        ttft = [lat.ttft * 1e3 for lat, _ in rows]
        bars = ax.bar(np.arange(len(rows)) + (k - 0.5) * width, ttft, width, label=f"prefix_cache={cache!r}")
        ax.bar_label(bars, [f"{c} cached" for _, c in rows], fontsize=7)
    ax.set_xticks(range(len(QUESTIONS)), [f"request {i}" for i in range(len(QUESTIONS))])
    ax.set_ylabel("TTFT (ms)")
    ax.set_title(f"TTFT of three questions behind one system prompt (latencies by {whose} stream_latency)",
                 fontsize=9, loc="left")
    ax.set_ylim(0, 1.25 * max(lat.ttft * 1e3 for rows in runs.values() for lat, _ in rows))
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    plt.tight_layout()
    plt.show()
    for cache, rows in runs.items():
        s = summarize([lat for lat, _ in rows])
        print(f"prefix_cache={cache!r:8s} TTFT p50 {s['ttft_ms']['p50']:6.0f} ms, after the first: mean "
              f"{np.mean([lat.ttft for lat, _ in rows[1:]]) * 1e3:6.0f} ms; ITL p50 {s['itl_ms']['p50']:5.0f} ms")
    assert [c for _, c in runs["none"]] == [0] * len(QUESTIONS) and all(c > 0 for _, c in runs["radix"][1:])
    """),
    md(r"""
    The first request is a miss either way. After it, the radix server computes only each question
    (a block or two) instead of the whole prompt, and its TTFT drops to about a decode step; the
    inter-token latency does not change, since decoding never recomputed the prompt. (On this busy CPU
    the times vary from run to run; the ratio is what holds. `docs/benchmarks.md` has measured runs.)

    ## 5 · `/metrics`: what the server counts

    The server exports Prometheus metrics with **vLLM's names** under `minikv:` (vLLM writes `vllm:`),
    so a dashboard built for one reads the other:

    | metric | kind | what |
    | --- | --- | --- |
    | `minikv:prefix_cache_queries_total`, `minikv:prefix_cache_hits_total` | counters | prompt tokens looked up in the prefix cache, and of those found |
    | `minikv:num_requests_running`, `minikv:num_requests_waiting` | gauges | the running batch, the queue |
    | `minikv:kv_cache_usage_perc` | gauge | KV blocks held by running requests (0 to 1) |
    | `minikv:num_preemptions_total` | counter | requests preempted and recomputed |
    | `minikv:prompt_tokens_total`, `minikv:generation_tokens_total` | counters | tokens in and out |
    | `minikv:time_to_first_token_seconds`, `minikv:inter_token_latency_seconds`, `minikv:e2e_request_latency_seconds` | histograms | the latencies above, from the inside |
    | `minikv:request_success_total{finished_reason=...}` | counter | ended requests: stop, length, abort |

    Counters count from the server's start. To know the hit rate of *your* traffic, scrape before and
    after and take the difference. The same arithmetic reads a vLLM server's scrape: its counters are
    `vllm:prefix_cache_queries_total` and `vllm:prefix_cache_hits_total` (`prefix="vllm:"` below).

    ### Exercise 7.4 · `hit_rate_between(before, after)`
    """),
    code(r"""
    minikv.grade.check("7.4")
    """),
    code(r"""
    with serving() as srv:
        before = httpx.get(srv.url + "/metrics").text
        for q in QUESTIONS[:2]:
            httpx.post(srv.base_url + "/completions", timeout=60,
                       json={"model": MODEL, "prompt": ask(q), "max_tokens": 1}).raise_for_status()
        after = httpx.get(srv.url + "/metrics").text
    print("\n".join(line for line in after.splitlines() if "prefix_cache" in line and not line.startswith("#")))
    print(f"hit rate of these two requests: {minikv_hit_rate_between(before, after):.1%} (minikv's)")
    try:
        print(f"                                {ex.hit_rate_between(before, after):.1%} (yours)")
    except NotImplementedError:
        if SOLUTIONS:
            raise
        print("not done yet: finish exercise 7.4 in exercises/ch07_serving.py")
    """),
    md(r"""
    ## 6 · A client that leaves

    A user closes the tab mid-answer. The server notices the closed connection, its handler's `finally`
    aborts the request, and at the next step the engine frees its blocks (what it computed stays in
    the prefix cache). `/stats` shows the blocks running requests hold:
    """),
    code(r"""
    with serving() as srv:
        body = {"model": MODEL, "prompt": ask("Tell me a long story about tea."), "max_tokens": 200,
                "temperature": 0, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", srv.base_url + "/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            for _ in range(3):
                next(lines)
            print("while streaming:", {k: v for k, v in httpx.get(srv.url + "/stats").json().items()
                                         if k in ("num_running", "num_blocks_held")})
        # leaving the `with` closed the connection after three chunks
        deadline = time.monotonic() + 20
        while (stats := httpx.get(srv.url + "/stats").json())["num_blocks_held"] and time.monotonic() < deadline:
            time.sleep(0.05)
        print("after it left:  ", {k: stats[k] for k in ("num_running", "num_blocks_held")})
        aborted = [line for line in httpx.get(srv.url + "/metrics").text.splitlines()
                   if line.startswith("minikv:request_success_total") and "abort" in line]
        print(aborted[0] if aborted else "no aborted request counted")
        assert stats["num_blocks_held"] == 0
    """),
    md(r"""
    ## 7 · Summary

    * The server is a thin layer: an asyncio HTTP front (FastAPI on uvicorn), **one engine loop**
      calling `LLMEngine.step()` in its own thread, and an `asyncio.Queue` per request between them.
      Continuous batching happens in the engine; the HTTP side only adds and aborts requests.
    * Streaming text must be released carefully: only **whole characters**, and the last
      `len(longest stop) - 1` characters wait while they could begin a stop string.
    * A client measures **TTFT, TPOT, ITL and E2E** from chunk arrival times; compare servers on
      p50/p90/p99, not on one request.
    * The prefix cache shows in `usage.prompt_tokens_details.cached_tokens` per request and in
      `prefix_cache_hits_total / prefix_cache_queries_total` over a run (**deltas** between scrapes);
      with a shared system prompt it turns TTFT from a prefill of the whole prompt into a few blocks.
    * A client that disconnects aborts its request; its blocks come back at the next step.

    ## What vLLM and SGLang do the same way, and differently

    * **vLLM**'s OpenAI server is also FastAPI on uvicorn. In its V1 engine the scheduler and model run
      in a separate *engine core* process, fed over ZeroMQ, so that tokenizing, detokenizing and HTTP do
      not take time from the GPU loop; minikv uses a thread. Its metrics are the names above under
      `vllm:`; it fills `usage.prompt_tokens_details.cached_tokens` when started with
      `--enable-prompt-tokens-details` (see vLLM issue #16162), and accepts `cache_salt` in the request.
      Prefix caching is on by default in V1 (`--no-enable-prefix-caching` turns it off).
    * **SGLang** splits a server into processes too (a tokenizer manager, the scheduler with the radix
      cache, a detokenizer manager, talking over ZeroMQ). Its `/metrics` appear with `--enable-metrics`,
      named `sglang:...`: `sglang:prompt_tokens_total`, `sglang:time_to_first_token_seconds`, a
      `sglang:cache_hit_rate` gauge (see its "Production Metrics" page); per request it fills
      `usage.prompt_tokens_details.cached_tokens` when started with `--enable-cache-report`.
      `--disable-radix-cache` turns its prefix cache off.
    * Both projects ship a benchmark client that measures what exercise 7.2 computes (vLLM's
      `vllm bench serve`, formerly `benchmarks/benchmark_serving.py`; SGLang's
      `python -m sglang.bench_serving`), with shared-prefix workloads: vLLM's `prefix_repetition`
      dataset, SGLang's `generated-shared-prefix`. minikv's own client, `minikv bench serve`, speaks to
      any of the three.

    ## Further reading

    * Kwon et al., *Efficient Memory Management for Large Language Model Serving with PagedAttention*
      (SOSP 2023): the vLLM server and its benchmark.
    * Zheng et al., *SGLang* (2023), [arXiv:2312.07104](https://arxiv.org/abs/2312.07104): RadixAttention
      behind a server, with hit rates of 50-99% on shared-prefix workloads.
    * OpenAI's API reference: the completion, chat and streaming chunk formats, `usage.prompt_tokens_details`.
    * The Prometheus text exposition format, and `prometheus_client`'s parser.
    * minikv's `minikv/serve/` (read the module docstrings in the order of the flow above),
      `minikv/engine/detokenizer.py`, `minikv/bench/latency.py` and `minikv/bench/scrape.py`.
    """),
]
