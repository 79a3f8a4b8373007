"""5.1 bug: the budget is counted from token_budget + 1, so a full step plans one token too many."""

from minikv.grade import learner_module

TARGET = "5.1"
EXPECT = "over the token budget"

_solution = learner_module("ch05_scheduling", "solutions")


def fill_budget(running, waiting, token_budget, long_prefill_token_threshold=0, max_num_seqs=256,
                chunked_prefill=True):
    return _solution.fill_budget(running, waiting, token_budget + 1, long_prefill_token_threshold, max_num_seqs,
                                 chunked_prefill)
