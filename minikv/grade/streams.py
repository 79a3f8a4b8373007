"""Engine-like request streams for a block-level prefix cache: requests arrive (often repeating or extending
earlier prompts), decode, finish, and the pool evicts now and then. The ``ops`` object a check passes runs each
operation on the learner's cache and minikv's and compares them (usually a :class:`~minikv.grade.trace.Trace`
subclass): ``match(tokens, salt, what)`` -> the hit's block ids, ``allocate(n)`` -> ids or None (full),
``insert(tokens, table, salt, what)``, ``release(table, what)``, ``evict(n)``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from minikv.grade.compare import short
from minikv.kv.block_table import cdiv


@dataclass(frozen=True)
class Mix:
    """How a stream draws: ``weights`` of start, again, decode, finish, evict; a new prompt is one of ``prefixes``
    + ``suffix`` (min, max) tokens from ``range(vocab)``, a repeated one an earlier prompt (cut short if ``cut``)
    + ``again_extra(block_size)`` tokens."""

    prefixes: tuple[list[int], ...]
    salts: tuple[str | None, ...]
    vocab: int
    weights: tuple[int, int, int, int, int]
    suffix: tuple[int, int]
    again_extra: Callable[[int], Sequence[int]]
    cut: bool = False
    decode: tuple[int, int] = (1, 6)
    evict: tuple[int, int] = (0, 3)
    drain: bool = False  # finish every live request at the end


def request_stream(ops: Any, rng: random.Random, bs: int, num_ops: int, mix: Mix) -> None:
    """Drive ``ops`` with ``num_ops`` operations drawn from ``rng`` (blocks of ``bs`` tokens)."""
    live: list[tuple[list[int], list[int], str | None, str]] = []
    seen: list[tuple[list[int], str | None]] = []

    def tokens_of(n: int) -> list[int]:
        return [rng.randrange(mix.vocab) for _ in range(n)]

    for n in range(num_ops):
        kind = rng.choices(["start", "again", "decode", "finish", "evict"], mix.weights)[0]
        if kind in ("start", "again"):
            if kind == "again" and seen:
                tokens, salt = seen[rng.randrange(len(seen))]
                tokens = tokens[: rng.randint(1, len(tokens))] if mix.cut else tokens
                tokens = tokens + tokens_of(rng.choice(mix.again_extra(bs)))
            else:
                tokens = mix.prefixes[rng.randrange(len(mix.prefixes))] + tokens_of(rng.randint(*mix.suffix))
                salt = rng.choice(mix.salts)
            name = f"r{n}"
            hit = list(ops.match(tokens, salt, what=f"{name}: {short(tokens)}"))
            new = ops.allocate(cdiv(len(tokens), bs) - len(hit))
            if new is None:
                ops.release(hit, f"{name}'s hit: it does not fit")
                continue
            table = hit + new
            ops.insert(tokens, table, salt, what=name)
            live.append((list(tokens), table, salt, name))
            seen.append((list(tokens), salt))
        elif kind == "decode" and live:
            tokens, table, salt, name = live[rng.randrange(len(live))]
            more = tokens_of(rng.randint(*mix.decode))
            need = cdiv(len(tokens) + len(more), bs) - len(table)
            if need > 0:
                new = ops.allocate(need)
                if new is None:
                    continue
                table += new
            tokens += more
            seen.append((list(tokens), salt))
            ops.insert(tokens, table, salt, what=f"{name} + {len(more)} decoded")
        elif kind == "finish" and live:
            tokens, table, salt, name = live.pop(rng.randrange(len(live)))
            ops.release(table, f"{name} finishes: {table}")
        elif kind == "evict":
            ops.evict(rng.randint(*mix.evict))
    for _, table, _, name in live if mix.drain else ():
        ops.release(table, f"{name} finishes: {table}")
