"""Synthetic request traces for benchmarks, notebooks and tests, and the best hit rate they allow.

- :mod:`~minikv.workloads.traces`: seeded generators, one per sharing pattern
  (a system prompt, multi-turn chat, few-shot prompts, branching agents, Zipf
  popularity); a trace is a list of prompts as token-id lists.
- :func:`ideal_hit_tokens`: what an infinite cache would hit per request.
- :func:`belady_hit_tokens`: what an offline-optimal cache of a given size would hit
  (:mod:`~minikv.workloads.belady`; :func:`percent_of_optimum` compares a replay).
- :func:`replay`: run a :class:`~minikv.prefix.PrefixCache` through a trace
  the way the engine does, without a model.
- :mod:`~minikv.workloads.arrivals`: when requests arrive
  (:func:`poisson_arrivals`, :func:`burst_arrivals`).
- :func:`replay_scheduled`: replay with a waiting queue ordered by a
  scheduling policy (FCFS, LPM, DFS-weight) each step, still without a model.

>>> from minikv.prefix import BlockHashCache
>>> trace = system_prompt_trace(20, system_len=64, question_len=8)
>>> cache = BlockHashCache(blocks_to_fit(trace, 16), 16)
>>> replay(cache, trace) == ideal_hit_tokens(trace, block_size=16)
True
"""

from minikv.workloads.arrivals import burst_arrivals, poisson_arrivals
from minikv.workloads.belady import (
    belady_hit_tokens,
    belady_tree_hit_tokens,
    capacity_blocks,
    percent_of_optimum,
)
from minikv.workloads.ideal import PrefixTrie, ideal_hit_rate, ideal_hit_tokens
from minikv.workloads.replay import PHASES, blocks_to_fit, replay
from minikv.workloads.scheduled import ScheduledReplay, compare_policies, replay_scheduled
from minikv.workloads.traces import (
    TRACE_KINDS,
    VOCAB,
    Length,
    Trace,
    branching_trace,
    few_shot_trace,
    make_trace,
    multi_turn_trace,
    shuffled_few_shot_groups,
    shuffled_few_shot_trace,
    skewed_trace,
    system_prompt_trace,
)

__all__ = [
    "PHASES",
    "TRACE_KINDS",
    "VOCAB",
    "Length",
    "PrefixTrie",
    "ScheduledReplay",
    "Trace",
    "belady_hit_tokens",
    "belady_tree_hit_tokens",
    "blocks_to_fit",
    "capacity_blocks",
    "branching_trace",
    "burst_arrivals",
    "compare_policies",
    "few_shot_trace",
    "ideal_hit_rate",
    "ideal_hit_tokens",
    "make_trace",
    "multi_turn_trace",
    "percent_of_optimum",
    "poisson_arrivals",
    "replay",
    "replay_scheduled",
    "shuffled_few_shot_groups",
    "shuffled_few_shot_trace",
    "skewed_trace",
    "system_prompt_trace",
]
