"""5.1 bug: waiting requests (new prefills) are admitted before the running requests' decodes are planned."""

TARGET = "5.1"
EXPECT = "running requests (decodes, unfinished prefills) fill the budget first"


def fill_budget(running, waiting, token_budget, long_prefill_token_threshold=0, max_num_seqs=256,
                chunked_prefill=True):
    plan, left = {}, token_budget

    def cut(view):
        n = view.num_tokens - view.num_computed_tokens
        if chunked_prefill and long_prefill_token_threshold > 0:
            n = min(n, long_prefill_token_threshold)
        return min(n, left)

    num_seqs = len(running)
    for view in waiting:
        if left <= 0 or num_seqs >= max_num_seqs:
            break
        n = cut(view)
        if n <= 0 or (not chunked_prefill and n < view.num_tokens - view.num_computed_tokens):
            break
        plan[view.request_id] = n
        left -= n
        num_seqs += 1
    for view in running:
        if left <= 0:
            break
        n = cut(view)
        if n > 0:
            plan[view.request_id] = n
            left -= n
    return plan
