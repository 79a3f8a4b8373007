"""Synthetic request traces for benchmarks, notebooks and tests, and the best hit rate they allow.

- :mod:`~minikv.workloads.traces`: seeded generators, one per sharing pattern
  (a system prompt, multi-turn chat, few-shot prompts, branching agents, Zipf
  popularity); a trace is a list of prompts as token-id lists.
- :func:`ideal_hit_tokens`: what an infinite cache would hit per request.
- :func:`belady_hit_tokens`: what an offline-optimal cache of a given size would hit
  (:mod:`~minikv.workloads.belady`; :func:`percent_of_optimum` compares a replay).
- :func:`replay`: run a :class:`~minikv.prefix.PrefixCache` through a trace
  the way the engine does, without a model.

>>> from minikv.prefix import BlockHashCache
>>> trace = system_prompt_trace(20, system_len=64, question_len=8)
>>> cache = BlockHashCache(blocks_to_fit(trace, 16), 16)
>>> replay(cache, trace) == ideal_hit_tokens(trace, block_size=16)
True
"""

from minikv.workloads.belady import (
    belady_hit_tokens,
    belady_tree_hit_tokens,
    capacity_blocks,
    percent_of_optimum,
)
from minikv.workloads.ideal import PrefixTrie, ideal_hit_rate, ideal_hit_tokens
from minikv.workloads.replay import PHASES, blocks_to_fit, replay
from minikv.workloads.traces import (
    TRACE_KINDS,
    VOCAB,
    Length,
    Trace,
    branching_trace,
    few_shot_trace,
    make_trace,
    multi_turn_trace,
    skewed_trace,
    system_prompt_trace,
)

__all__ = [
    "PHASES",
    "TRACE_KINDS",
    "VOCAB",
    "Length",
    "PrefixTrie",
    "Trace",
    "belady_hit_tokens",
    "belady_tree_hit_tokens",
    "blocks_to_fit",
    "capacity_blocks",
    "branching_trace",
    "few_shot_trace",
    "ideal_hit_rate",
    "ideal_hit_tokens",
    "make_trace",
    "multi_turn_trace",
    "percent_of_optimum",
    "replay",
    "skewed_trace",
    "system_prompt_trace",
]
