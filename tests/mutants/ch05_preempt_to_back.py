"""5.2 bug: the victim joins the back of the waiting queue, behind requests that arrived after it."""

from minikv.engine.step_plan import Preemption, RequestState

TARGET = "5.2"
EXPECT = "expected at the front (position 0)"


def preempt(running, waiting):
    if not running:
        raise ValueError("no running request to preempt")
    victim = running[-1]
    reset = RequestState(victim.request_id, 0, victim.num_tokens, ())
    return Preemption(list(running[:-1]), [*waiting, reset], list(reversed(victim.block_ids)))
