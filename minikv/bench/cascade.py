"""``minikv bench cascade``: decode of sequences sharing a long prefix, with and without shared-prefix attention.

``--batch`` prompts = one ``--prefix``-token shared prefix + a short question
each, run by one ``LLM(prefix_cache="hash")``: the first prompt computes the
prefix and the others hit it, so the running sequences' block tables start
with the same block ids. Each then decodes ``--decode-tokens`` tokens,
greedy, ignoring EOS, twice in the same process on the same engine:

- cascade on: each layer attends the shared blocks once for all sequences
  and each sequence's own blocks apart, merged by log-sum-exp
  (:mod:`minikv.attention.cascade`);
- cascade off: each sequence gathers and attends its whole context
  (:func:`minikv.attention.paged.paged_decode_sdpa`).

Decode ms/step = ``(time(1 + N new tokens) - time(1 new token)) / N``, best of
``--repeats`` runs interleaved on/off (so a burst of load elsewhere hits both
alike); the prompts are cached by the warm-up, so both runs prefill alike.
A second table times the decode attention alone for one layer of a pool of
the model's shape holding the same batch, to show where the step's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

import torch

from minikv.attention import cascade
from minikv.attention.paged import gather_slots, paged_decode_sdpa
from minikv.bench.common import best_of, machine_line, print_table, prompt_ids


@contextlib.contextmanager
def counting_cascade_calls() -> Iterator[list[int]]:
    """Count the layers that went through shared-prefix attention, PyTorch's or Triton's (proof that it engaged)."""
    calls = [0]
    targets = [(cascade, "cascade_decode")]
    try:
        from minikv.attention import triton_backend
        targets.append((triton_backend, "triton_cascade_decode"))
    except ImportError:  # no Triton: only the PyTorch path exists
        pass
    reals = [getattr(module, name) for module, name in targets]

    def counting(real):
        def counted(*args, **kwargs):
            calls[0] += 1
            return real(*args, **kwargs)
        return counted

    for (module, name), real in zip(targets, reals):
        setattr(module, name, counting(real))
    try:
        yield calls
    finally:
        for (module, name), real in zip(targets, reals):
            setattr(module, name, real)


def timed(fn: Callable[[], list]) -> tuple[float, list[list[int]]]:
    """Seconds one ``generate`` call takes, and the token ids it returned."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    outs = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, [o.token_ids for o in outs]


def attention_alone(cfg, batch: int, prefix: int, own: int, block_size: int, repeats: int,
                    dtype: torch.dtype, device: torch.device, attention: str = "torch") -> tuple[float, float]:
    """Seconds per layer of decode attention off / on, on a random pool shaped like the model's."""
    shared_blocks = prefix // block_size
    own_blocks = -(-(prefix + own) // block_size) - shared_blocks
    gen = torch.Generator().manual_seed(0)
    num_blocks = shared_blocks + batch * own_blocks
    shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
    k_cache = torch.randn(shape, generator=gen).to(device, dtype)
    v_cache = torch.randn(shape, generator=gen).to(device, dtype)
    tables = torch.tensor([list(range(shared_blocks)) + [shared_blocks + b * own_blocks + i for i in range(own_blocks)]
                           for b in range(batch)], device=device)
    lens = [prefix + own] * batch
    q = torch.randn(batch, cfg.num_heads, cfg.head_dim, generator=gen).to(device, dtype)
    scale = cfg.head_dim ** -0.5
    slots = gather_slots(tables, max(lens), block_size)
    positions = torch.arange(max(lens), device=device)
    valid = (positions[None, :] < torch.tensor(lens, device=device)[:, None])[:, None, None]
    plan = cascade.CascadePlan.build(tables, lens, block_size, min_saved_tokens=0)  # timed even where it would not pay
    assert plan is not None, "needs --batch >= 2 and --prefix >= --block-size"

    def off():
        for _ in range(10):
            paged_decode_sdpa(q, k_cache, v_cache, slots, valid, scale)

    def on():
        for _ in range(10):
            cascade.cascade_decode(q, k_cache, v_cache, plan, scale)

    if attention == "triton":
        from minikv.attention.triton_cascade import TritonCascadePlan, triton_cascade_decode
        from minikv.attention.triton_decode import triton_paged_decode_attention

        tplan = TritonCascadePlan.build(tables, lens, block_size, min_saved_tokens=0)
        lens_t = torch.tensor(lens, device=device)

        def off():  # noqa: F811 - the Triton pair replaces the PyTorch one
            for _ in range(10):
                triton_paged_decode_attention(q, k_cache, v_cache, tables, lens_t, scale, max_context_len=max(lens))

        def on():  # noqa: F811
            for _ in range(10):
                triton_cascade_decode(q, k_cache, v_cache, tplan, scale)

    t_off = t_on = float("inf")
    for _ in range(repeats):
        t_off, t_on = min(t_off, best_of(off, 1) / 10), min(t_on, best_of(on, 1) / 10)
    return t_off, t_on


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="minikv bench cascade", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prefix", type=int, default=1024, help="shared prefix tokens")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--attention", default="torch", choices=["torch", "triton", "auto"],
                    help="the kernels (triton on a CPU: the interpreter, slow)")
    args = ap.parse_args(argv)
    if args.batch < 2 or args.prefix < args.block_size:
        ap.error(f"a shared prefix needs --batch >= 2 and --prefix >= --block-size ({args.block_size}), "
                 f"got --batch {args.batch} --prefix {args.prefix}")
    if args.threads:
        torch.set_num_threads(args.threads)

    from minikv import LLM, SamplingParams

    llm = LLM(args.model, device=args.device, prefix_cache="hash", block_size=args.block_size,
              attention=args.attention)
    tok = llm.tokenizer
    prefix = prompt_ids(tok, args.prefix)
    questions = [tok.encode(f"\nQuestion {i}: in one line, what does part {i} of this text say?",
                            add_special_tokens=False) for i in range(args.batch)]
    prompts = [{"prompt_token_ids": prefix + q} for q in questions]
    n, b, r = args.decode_tokens, len(prompts), args.repeats

    def gen(new: int):
        params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
        return lambda: llm.generate(prompts, params)

    def mode(on: bool, fn):
        def go():
            with cascade.use_cascade(on):
                return fn()
        return go

    for on in (False, True):  # warm-up; also caches the prompts, so every timed run prefills alike
        mode(on, gen(2))()
    prefill = {on: float("inf") for on in (False, True)}
    full = dict(prefill)
    tokens: dict[bool, list[list[int]]] = {}
    with counting_cascade_calls() as calls:
        for _ in range(r):
            for on in (False, True):
                prefill[on] = min(prefill[on], best_of(mode(on, gen(1)), 1))
                seconds, tokens[on] = timed(mode(on, gen(n + 1)))
                full[on] = min(full[on], seconds)
    step = {on: (full[on] - prefill[on]) / n for on in (False, True)}
    same = sum(a == c for a, c in zip(tokens[True], tokens[False]))
    steps_on = calls[0] // llm.config.num_layers
    own = len(prompts[0]["prompt_token_ids"]) - args.prefix + n
    att_off, att_on = attention_alone(llm.config, b, args.prefix, own, args.block_size, r, llm.dtype, llm.device,
                                      llm.attention)
    layers = llm.config.num_layers

    print(f"model {args.model} ({llm.attention} attention)  batch {b}, shared prefix {args.prefix} tokens + {own - n} own, decode {n} tokens each, "
          f"block size {args.block_size}, best of {r} interleaved  ({machine_line()})")
    print_table(
        ["metric", "cascade off", "cascade on", "off / on"],
        [
            ["decode ms/step", f"{step[False] * 1e3:.1f}", f"{step[True] * 1e3:.1f}",
             f"{step[False] / step[True]:.2f}x"],
            ["decode tokens/s", f"{b / step[False]:,.1f}", f"{b / step[True]:,.1f}", ""],
            ["prefill + 1 token (ms)", f"{prefill[False] * 1e3:.0f}", f"{prefill[True] * 1e3:.0f}", ""],
            [f"attention alone ms/step ({layers} layers)", f"{att_off * layers * 1e3:.1f}",
             f"{att_on * layers * 1e3:.1f}", f"{att_off / att_on:.2f}x"],
        ],
    )
    print(f"cascade attention ran in {calls[0]} layer calls ({steps_on} decode steps x {layers} layers, cascade "
          f"runs only); greedy tokens ({n + 1} each) identical on/off for {same}/{b} prompts: "
          f"{'yes' if same == b else 'NO'}")
    return 0 if same == b else 1
