"""``minikv serve``: the options (the engine's, by their ``LLMEngine`` names) and the command."""

from __future__ import annotations

import argparse
import logging


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="model name, checkpoint directory or hub id")
    p.add_argument("--served-model-name", default=None, help="the name clients use (default: --model as given)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: a free one, printed at start)")
    p.add_argument("--prefix-cache", default="radix", help="radix, hash or none")
    p.add_argument("--max-waiting", type=int, default=256,
                   help="requests waiting to run, at most; more are answered 503 (default 256)")
    e = p.add_argument_group("engine")
    e.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    e.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the engine's)")
    e.add_argument("--attention", default=None, help="auto, torch or triton")
    e.add_argument("--block-size", type=int, default=None)
    e.add_argument("--num-blocks", type=int, default=None, help="KV pool size in blocks")
    e.add_argument("--kv-cache-memory", type=int, default=None, help="KV pool size in bytes")
    e.add_argument("--max-num-batched-tokens", type=int, default=None)
    e.add_argument("--max-num-seqs", type=int, default=None)
    e.add_argument("--long-prefill-token-threshold", type=int, default=None)
    e.add_argument("--policy", default=None, help="fcfs, lpm or dfs-weight")
    e.add_argument("--seed", type=int, default=None)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


ENGINE_OPTIONS = ("device", "dtype", "attention", "block_size", "num_blocks", "kv_cache_memory",
                  "max_num_batched_tokens", "max_num_seqs", "long_prefill_token_threshold", "policy", "seed")


def run_serve(args: argparse.Namespace) -> int:
    from minikv.serve.server import ServerThread, serve_forever

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    options = {k: getattr(args, k) for k in ENGINE_OPTIONS if getattr(args, k) is not None}
    srv = ServerThread(args.model, host=args.host, port=args.port, served_model_name=args.served_model_name,
                       max_waiting=args.max_waiting, log_level=args.log_level, prefix_cache=args.prefix_cache,
                       **options)
    serve_forever(srv)
    return 0
