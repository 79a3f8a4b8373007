"""5.1 bug: max_num_seqs caps only the newly admitted requests, not the running ones too."""

TARGET = "5.1"
EXPECT = "more than max_num_seqs"


def fill_budget(running, waiting, token_budget, long_prefill_token_threshold=0, max_num_seqs=256,
                chunked_prefill=True):
    plan, left = {}, token_budget

    def cut(view):
        n = view.num_tokens - view.num_computed_tokens
        if chunked_prefill and long_prefill_token_threshold > 0:
            n = min(n, long_prefill_token_threshold)
        return min(n, left)

    for view in running:
        if left <= 0:
            break
        n = cut(view)
        if n > 0:
            plan[view.request_id] = n
            left -= n
    admitted = 0
    for view in waiting:
        if left <= 0 or admitted >= max_num_seqs:
            break
        n = cut(view)
        if n <= 0 or (not chunked_prefill and n < view.num_tokens - view.num_computed_tokens):
            break
        plan[view.request_id] = n
        left -= n
        admitted += 1
    return plan
