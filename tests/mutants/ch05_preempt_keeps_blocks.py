"""5.2 bug: the victim is reset to 0 computed tokens but keeps its block table (the blocks never come back)."""

from minikv.engine.step_plan import Preemption, RequestState

TARGET = "5.2"
EXPECT = "still holding blocks"


def preempt(running, waiting):
    if not running:
        raise ValueError("no running request to preempt")
    victim = running[-1]
    reset = RequestState(victim.request_id, 0, victim.num_tokens, victim.block_ids)
    return Preemption(list(running[:-1]), [reset, *waiting], list(reversed(victim.block_ids)))
