"""5.2 bug: the oldest running request (the first) is preempted instead of the newest."""

from minikv.engine.step_plan import Preemption, RequestState

TARGET = "5.2"
EXPECT = "the oldest (first of running)"


def preempt(running, waiting):
    if not running:
        raise ValueError("no running request to preempt")
    victim = running[0]
    reset = RequestState(victim.request_id, 0, victim.num_tokens, ())
    return Preemption(list(running[1:]), [reset, *waiting], list(reversed(victim.block_ids)))
