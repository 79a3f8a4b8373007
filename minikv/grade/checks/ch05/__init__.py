"""Chapter 05 (scheduling): 5.1 fill one step's token budget, 5.2 pick a preemption victim and roll it back,
5.3 longest-prefix-match order, 5.4 Belady's offline optimum.

References: :func:`minikv.engine.step_plan.fill_budget` and :func:`~minikv.engine.step_plan.preempt`,
:func:`minikv.engine.policies.lpm_order` (fed ``cache.peek``), :func:`minikv.workloads.belady.belady_tree_hit_tokens`;
hand-made cases that each isolate one rule, then hypothesis-drawn steps, queues, caches and traces.
5.1's final check serves ``LLMEngine("tiny-llama", schedule_fn=<yours>)``.
"""

from minikv.grade.checks.ch05 import budget, lpm, optimum, preemption

__all__ = ["budget", "lpm", "optimum", "preemption"]
