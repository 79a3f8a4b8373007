"""``minikv bench leak``: the prefix cache's timing side channel, measured on minikv, and its fixes.

Parts (``--parts``, all by default):

- ``auc``: the identification attack (:mod:`minikv.security.attack`):
  per cache (``hash``: block hashes, block size 16; ``radix1``: radix tree at
  page size 1), per prefix length, without and with per-tenant salts:
  accuracy of naming which of ``--candidates`` prefixes the victim sent, the
  ROC AUC of hit against miss probes, a held-out threshold's balanced
  accuracy, mean TTFTs, the cached tokens the engine reported;
- ``recovery``: a 6-digit secret token by token through ``radix1``
  (and the same attacker against ``hash``, where it cannot work), then 2 digits
  at once against ``hash`` (100 probes; :mod:`minikv.security.recovery`);
- ``cost``: hit rate of a multi-tenant stream shared, salted per tenant, and
  with only the public system prompt shared (:mod:`minikv.security.cost`),
  then the attack on a private document behind that public prompt;
- ``ordering``: where the hit probe comes back among ``--candidates`` under
  FCFS and LPM, without and with salts (:mod:`minikv.security.ordering`).

``--base-url http://HOST:PORT/v1``: run ``auc`` and ``recovery`` against a
server through its OpenAI streaming API (TTFT measured here, salts sent as
``cache_salt``); the cache is whatever the server runs (one row per length).
``--vocab`` must then fit the served model (default 10000).
"""

from __future__ import annotations

import argparse
import random
import time

from minikv.bench.common import machine_line, print_table

CACHES = {"hash": ("hash", None), "radix1": ("radix", {"page_size": 1})}
PARTS = ("auc", "recovery", "cost", "ordering")


def _ms(x: float) -> str:
    return f"{x:,.0f}"


def _cached(values: list) -> str:
    known = [v for v in values if v is not None]
    return "?" if not known else f"{sum(known) / len(known):.0f}"


def auc_rows(prober, args, label: str, salted_too: bool = True) -> list[list[str]]:
    from minikv.security.attack import identify_prefix

    rows = []
    for length in args.lengths:
        for salted in ((False, True) if salted_too else (False,)):
            r = identify_prefix(prober, random.Random(args.seed + length), prefix_tokens=length, trials=args.trials,
                                vocab=args.vocab, candidates=args.candidates,
                                victim_salt="victim" if salted else None, attacker_salt="attacker" if salted else None)
            rows.append([label, str(length), f"{length / 16:g}", "yes" if salted else "no", str(r.trials),
                         f"{r.accuracy:.2f}", f"{r.auc:.3f}", f"{r.threshold_accuracy():.2f}",
                         _ms(r.mean_ms("hit")), _ms(r.mean_ms("miss")), _cached(r.hit_cached), _cached(r.miss_cached)])
            print("  " + "  ".join(rows[-1]), flush=True)
    return rows


def recovery_rows(probers: dict, args, tokenizer=None) -> list[list[str]]:
    from minikv.security.recovery import recover_block, recover_tokens

    digits = list(range(10))
    alphabet = [tokenizer.encode(str(d), add_special_tokens=False)[0] for d in digits] if tokenizer else \
        [args.vocab // 16 + d for d in digits]  # below vocab // 8: never a fresh padding token
    rng = random.Random(args.seed)
    head = [rng.randrange(args.vocab // 8, args.vocab) for _ in range(14)]
    secret = [alphabet[rng.randrange(10)] for _ in range(6)]
    rows = []
    for label, prober in probers.items():
        cases = [("token by token", False, "none")]
        if label != "hash":
            cases.append(("token by token", True, "per tenant"))
        if label == "hash":
            cases.append(("2 digits at once", False, "none"))
        for how, salted, salt in cases:
            t0 = time.perf_counter()
            kw = dict(head=head, vocab=args.vocab, victim_salt="victim" if salted else None,
                      attacker_salt="attacker" if salted else None)
            if how.startswith("2"):
                r = recover_block(prober, random.Random(args.seed + 1), secret=secret[:2], alphabet=alphabet,
                                  block_size=16, **kw)
            else:
                r = recover_tokens(prober, random.Random(args.seed + 2), secret=secret, alphabet=alphabet, **kw)
            rows.append([label, how, salt, f"{r.tokens_right}/{len(r.secret)}", "yes" if r.guess == r.secret else "no",
                         str(r.probes), f"{r.auc:.3f}", f"{time.perf_counter() - t0:.0f}"])
            print("  " + "  ".join(rows[-1]), flush=True)
    return rows


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="minikv bench leak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default=None)
    ap.add_argument("--lengths", default="4,8,16,32,64,128,256,512",
                    help="prefix lengths in tokens (comma-separated)")
    ap.add_argument("--trials", type=int, default=10, help="trials per setting")
    ap.add_argument("--candidates", type=int, default=2, help="prefixes the attacker chooses among")
    ap.add_argument("--caches", default="hash,radix1", help=f"of {', '.join(CACHES)}")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"of {', '.join(PARTS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-url", default=None, help="attack a server (OpenAI API) instead, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--served-model", default=None, help="with --base-url: the model name (default: the first served)")
    ap.add_argument("--vocab", type=int, default=None, help="token ids to draw from (default: the model's; 10000 with --base-url)")
    args = ap.parse_args(argv)
    args.lengths = [int(x) for x in args.lengths.split(",") if x]
    parts = [p for p in args.parts.split(",") if p]
    caches = [c for c in args.caches.split(",") if c]
    for name, allowed in (("part", PARTS), ("cache", CACHES)):
        bad = [x for x in (parts if name == "part" else caches) if x not in allowed]
        if bad:
            ap.error(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}")
    auc_headers = ["cache", "prefix tokens", "blocks of 16", "salt", "trials", "accuracy", "AUC", "threshold acc",
                   "hit ms", "miss ms", "cached (sent)", "cached (decoy)"]
    rec_headers = ["cache", "attack", "salt", "tokens right", "whole secret", "probes", "AUC right vs wrong", "s"]

    if args.base_url:
        from minikv.security.probes import HttpProber

        prober = HttpProber(args.base_url, args.served_model)
        args.vocab = args.vocab or 10000
        print(f"server {args.base_url} model {prober.model}, {args.trials} trials of {args.candidates} candidates, "
              f"TTFT measured by the client ({machine_line()})")
        if "auc" in parts:
            print_table(auc_headers, auc_rows(prober, args, "server"))
        if "recovery" in parts:
            print_table(rec_headers, recovery_rows({"server": prober}, args))
        skipped = [p for p in parts if p in ("cost", "ordering")]
        if skipped:
            print(f"(skipped with --base-url: {', '.join(skipped)}; they drive the engine in this process)")
        return 0

    from minikv import LLM
    from minikv.security.probes import EngineProber

    probers = {}
    for c in caches:
        kind, options = CACHES[c]
        probers[c] = EngineProber(LLM(args.model, prefix_cache=kind, prefix_cache_options=options, device=args.device))
    any_llm = next(iter(probers.values())).llm if probers else LLM(args.model, device=args.device)
    args.vocab = args.vocab or len(any_llm.tokenizer)
    print(f"model {args.model}, {args.trials} trials of {args.candidates} candidates per setting, seed {args.seed} "
          f"({machine_line()})")
    if "auc" in parts:
        print("\nidentification attack: which prefix did the victim send? (score -TTFT)")
        rows = [row for c, p in probers.items() for row in auc_rows(p, args, c)]
        print_table(auc_headers, rows)
    if "recovery" in parts:
        print("\nsecret recovery: a 6-digit secret after a 14-token known head")
        print_table(rec_headers, recovery_rows(probers, args, any_llm.tokenizer))
    if "cost" in parts:
        _cost(args)
    if "ordering" in parts:
        _ordering(args)
    return 0


def _cost(args) -> None:
    from minikv import LLM
    from minikv.security.attack import identify_prefix, random_tokens
    from minikv.security.cost import hit_rates, tenant_trace
    from minikv.security.probes import EngineProber
    from minikv.security.public_prefix import public_prefix_cache

    print("\nwhat salts cost: 64 requests = 512-token public system prompt + the tenant's 256-token document "
          "+ a 32-token question (no eviction)")
    rows = []
    for tenants, each in ((4, 16), (16, 4), (64, 1)):
        trace = tenant_trace(tenants, each, vocab=args.vocab, seed=args.seed)
        for label, (kind, options) in CACHES.items():
            r = hit_rates(trace, kind, **(options or {}))
            rows.append([f"{tenants} x {each}", label, f"{r['shared']:.1%}", f"{r['salted']:.1%}", f"{r['public']:.1%}"])
    print_table(["tenants x requests", "cache", "shared (leaks)", "salt per tenant", "salt + public system prompt"], rows)

    rng = random.Random(args.seed)
    system = random_tokens(rng, 256, args.vocab)
    length = max(args.lengths)
    print(f"\nthe middle way under attack: a public 256-token system prompt, then a private {length}-token document "
          f"(hash cache, salts per tenant, system prompt published)")
    llm = LLM(args.model, prefix_cache=public_prefix_cache("hash", [system]), device=args.device)
    prober = EngineProber(llm)
    prober.send(system + random_tokens(rng, 8, args.vocab), "publisher")
    r = identify_prefix(prober, random.Random(args.seed + 7), prefix_tokens=length, trials=args.trials,
                        vocab=args.vocab, candidates=args.candidates, victim_salt="victim", attacker_salt="attacker",
                        shared_prefix=system)
    print_table(["private tokens", "trials", "accuracy", "AUC", "cached (sent)", "cached (decoy)", "hit ms", "miss ms"],
                [[str(length), str(r.trials), f"{r.accuracy:.2f}", f"{r.auc:.3f}", _cached(r.hit_cached),
                  _cached(r.miss_cached), _ms(r.mean_ms("hit")), _ms(r.mean_ms("miss"))]])


def _ordering(args) -> None:
    from minikv.engine.llm_engine import LLMEngine
    from minikv.security.ordering import ordering_leak

    k = max(args.candidates, 4)
    print(f"\nordering leak: {k} probes queued at once (64-token prefixes, one the victim's), one request "
          "running at a time; rank 0 = came back first")
    rows = []
    for policy in ("fcfs", "lpm"):
        engine = LLMEngine(args.model, prefix_cache="radix", policy=policy, max_num_seqs=1, device=args.device)
        for salted in (False, True):
            r = ordering_leak(engine, random.Random(args.seed), trials=args.trials * 2, prefix_tokens=64,
                              vocab=args.vocab, candidates=k, victim_salt="victim" if salted else None,
                              attacker_salt="attacker" if salted else None)
            rows.append([policy, "yes" if salted else "no", str(len(r.ranks)), f"{r.first_rate:.2f}",
                         f"{1 / k:.2f}", f"{r.mean_rank:.2f}", f"{(k - 1) / 2:.2f}"])
    print_table(["policy", "salt", "trials", "hit came first", "chance", "mean rank", "chance rank"], rows)
