"""Shared helpers for benchmarks: timing, synthetic prompts, table printing."""

from __future__ import annotations

import datetime
import os
import platform
import time
from typing import Callable

import torch

FILLER = (
    "The history of computing is a story of people finding ways to avoid doing the same work twice. "
    "Caches, memo tables and compilers all remember an answer so that it can be reused later. "
)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Smallest wall time of ``repeats`` calls, in seconds (synchronising CUDA if used)."""
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def prompt_ids(tokenizer, n: int, salt: str = "") -> list[int]:
    """Exactly ``n`` token ids of English-looking text (deterministic)."""
    ids = tokenizer.encode(salt + FILLER * (n // 20 + 2), add_special_tokens=False)
    return ids[:n]


def machine_line() -> str:
    if torch.cuda.is_available():
        where = torch.cuda.get_device_name(0)
    else:
        where = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return f"{datetime.date.today().isoformat()}, {where}, torch {torch.__version__}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(headers))
    for r in rows:
        print(fmt(r))
