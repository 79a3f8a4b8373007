"""Chapter 05 (scheduling): 5.1 fill one step's token budget, 5.2 pick a preemption victim and roll it back.

References: :func:`minikv.engine.step_plan.fill_budget` and :func:`minikv.engine.step_plan.preempt`, compared on
hand-made steps that each isolate one rule and on hypothesis-drawn steps (and, for 5.2, chains of preemptions
fed back into each other). 5.1's final check serves ``LLMEngine("tiny-llama", schedule_fn=<yours>)``.
"""

from minikv.grade.checks.ch05 import budget, preemption

__all__ = ["budget", "preemption"]
