"""The ``minikv`` command: demo, generate, serve, bench, grade, exercises, doctor.

Errors a user can cause print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from minikv.errors import MinikvError

DEMO_QUESTION = "What is the capital of France?"


def _cmd_generate(args: argparse.Namespace) -> int:
    from minikv import LLM, SamplingParams

    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    llm = LLM(args.model, device=args.device)
    out = llm.generate(args.prompt, params, chat=args.chat)[0]
    print(out.text)
    return 0


DEMO_SYSTEM = (
    "You are the help desk of a small bakery. Opening hours: Monday to Friday 7am to 6pm, Saturday 8am to 2pm, "
    "closed on Sunday. We bake sourdough, rye and spelt bread every morning, croissants on weekends, and take "
    "orders for birthday cakes two days in advance. Gluten-free bread is baked on Wednesdays only. "
    "Answer customers in one short, friendly sentence."
)
DEMO_CUSTOMERS = ["Are you open on Sunday?", "When can I buy gluten-free bread?", "Can I order a cake for tomorrow?"]


def _demo_prefix_cache(llm, max_tokens: int) -> None:
    """Three customers share one system prompt: the first computes it, the others reuse its KV cache."""
    from minikv import SamplingParams

    print(f"\n--- prefix caching: {len(DEMO_CUSTOMERS)} customers share one system prompt "
          f"(prefix_cache={llm.prefix_cache!r}) ---")
    template = llm.tokenizer
    for question in DEMO_CUSTOMERS:
        text = template.apply_chat_template([{"role": "system", "content": DEMO_SYSTEM},
                                             {"role": "user", "content": question}],
                                            tokenize=False, add_generation_prompt=True)
        ids = template.encode(text, add_special_tokens=False)
        out = llm.generate({"prompt_token_ids": ids, "prompt": question},
                           SamplingParams(max_tokens=max_tokens, temperature=0.0))[0]
        print(f"customer: {question}\nassistant: {out.text.strip()}")
        print(f"  [{out.num_cached_tokens} of {len(ids)} prompt tokens reused from the cache, "
              f"TTFT {out.metrics.ttft * 1000:.0f} ms]")
    stats = llm.cache_stats()
    print(f"cache: hit rate {stats.hit_rate:.0%} ({stats.hit_tokens} of {stats.query_tokens} prompt tokens)")


def _demo_serve(args: argparse.Namespace) -> int:
    """The server with and without a prefix cache, the same system-prompt traffic from the bench client, TTFT side by side."""
    from minikv.bench.serve import run_benchmark
    from minikv.serve import ServerThread

    print(f"--- minikv serve on {args.model}: {args.num_requests} requests share one system prompt "
          f"(about {args.shared_len} words), {args.concurrency} at a time ---")
    runs = {}
    for cache in ("none", "radix"):
        with ServerThread(args.model, prefix_cache=cache, device=args.device) as srv:
            print(f"\nserver {srv.url}, --prefix-cache {cache}")
            runs[cache] = run_benchmark(srv.url, "system-prompt", model=srv.model_name, concurrency=args.concurrency,
                                        num_requests=args.num_requests, shared_len=args.shared_len,
                                        max_tokens=args.max_tokens)
        print(runs[cache].table(title=f"--prefix-cache {cache}"))
    ttft = {c: r.summary["ttft_ms"] for c, r in runs.items()}
    cached = {c: r.summary["cached_tokens"] for c, r in runs.items()}
    print("\nTTFT (ms)        none    radix   none / radix")
    for q in ("p50", "p99"):
        print(f"  {q:<12} {ttft['none'][q]:>7.1f}  {ttft['radix'][q]:>7.1f}   {ttft['none'][q] / ttft['radix'][q]:>6.1f}x")
    print(f"  cached prompt tokens: none {cached['none']}, radix {cached['radix']}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from minikv import LLM, SamplingParams

    if args.serve:
        args.max_tokens = args.max_tokens or 16
        return _demo_serve(args)
    args.max_tokens = args.max_tokens or 48

    llm = LLM(args.model, device=args.device, prefix_cache=args.prefix_cache)
    print(f"model: {args.model}  ({llm.config.num_layers} layers, {llm.config.num_heads} heads / "
          f"{llm.config.num_kv_heads} KV heads, on {llm.device})")
    for question in [DEMO_QUESTION, *args.questions]:
        out = llm.chat(question, SamplingParams(max_tokens=args.max_tokens, temperature=0.0))
        m = out.metrics
        print(f"\nuser: {question}\nassistant: {out.text.strip()}")
        print(f"  [{len(out.prompt_token_ids)} prompt tokens, {len(out.token_ids)} generated, "
              f"TTFT {m.ttft * 1000:.0f} ms, {len(out.token_ids) / m.e2e:.1f} tokens/s]")
    if args.prefix_cache != "none":
        _demo_prefix_cache(llm, min(args.max_tokens, 24))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from minikv.doctor import report

    rows = report()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from minikv.bench import main as bench_main

    return bench_main(args.rest)


def _cmd_grade(args: argparse.Namespace) -> int:
    from minikv.grade import main as grade_main

    return grade_main(args.rest)


def _cmd_exercises(args: argparse.Namespace) -> int:
    from minikv.grade.stubs import main as stubs_main

    return stubs_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minikv", description="Learn and run KV-cache reuse in LLM inference.")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default="smollm2-135m", help="model name, checkpoint directory or hub id")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")

    p = sub.add_parser("generate", help="generate a completion for one prompt")
    p.add_argument("prompt")
    model_args(p)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("demo", help="the engine's main job on the embedded model")
    model_args(p)
    p.add_argument("--max-tokens", type=int, default=None, help="new tokens per answer (default 48; --serve: 16)")
    p.add_argument("--prefix-cache", default="hash", choices=["hash", "radix", "none"])
    p.add_argument("--serve", action="store_true",
                   help="start minikv serve without and with a radix cache, benchmark both with minikv bench serve")
    p.add_argument("--num-requests", type=int, default=8, help="--serve: requests per server")
    p.add_argument("--concurrency", type=int, default=2, help="--serve: requests in flight")
    p.add_argument("--shared-len", type=int, default=384, help="--serve: system prompt length in words")
    p.add_argument("questions", nargs="*", help="extra questions to ask")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (completions, chat, /metrics)")
    from minikv.serve.cli import add_serve_args, run_serve

    add_serve_args(p)
    p.set_defaults(func=run_serve)

    p = sub.add_parser("doctor", help="versions, CPU/GPU, Triton mode, model cache")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("bench", help="benchmarks against a baseline in the same process (minikv bench --help)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("grade", help="grade the exercises (minikv grade --help)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_grade)

    p = sub.add_parser("exercises", help="regenerate exercises/ from solutions/ (--check: verify only)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_exercises)
    return parser


PASSTHROUGH = {"bench": _cmd_bench, "grade": _cmd_grade, "exercises": _cmd_exercises}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in PASSTHROUGH:  # these parse their own options
            return PASSTHROUGH[argv[0]](argparse.Namespace(rest=argv[1:]))
        args = build_parser().parse_args(argv)
        return args.func(args)
    except MinikvError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
