"""5.1 bug: long_prefill_token_threshold is ignored, so one long prompt takes the whole budget."""

from minikv.grade import learner_module

TARGET = "5.1"
EXPECT = "more than long_prefill_token_threshold"

_solution = learner_module("ch05_scheduling", "solutions")


def fill_budget(running, waiting, token_budget, long_prefill_token_threshold=0, max_num_seqs=256,
                chunked_prefill=True):
    return _solution.fill_budget(running, waiting, token_budget, 0, max_num_seqs, chunked_prefill)
