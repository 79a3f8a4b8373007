"""4.4 bug: pops the most recently used leaf first (a max-heap by mistake)."""

import heapq

from minikv.grade import learner_module

TARGET = "4.4"
EXPECT = "least recently used"

_solution = learner_module("ch04_radix_tree", "solutions")
Node, RadixTree = _solution.Node, _solution.RadixTree


def evict(tree, num_tokens):
    heap = [(-leaf.last_access, i, leaf) for i, leaf in enumerate(tree.leaves()) if leaf.lock_ref == 0]
    heapq.heapify(heap)
    count, freed = len(heap), []
    while heap and len(freed) < num_tokens:
        _, _, leaf = heapq.heappop(heap)
        need = num_tokens - len(freed)
        if len(leaf.tokens) > need:
            freed += leaf.values[-need:]
            del leaf.tokens[-need:], leaf.values[-need:]
            break
        freed += leaf.values
        parent = leaf.parent
        del parent.children[leaf.tokens[0]]
        if parent.parent is not None and not parent.children and parent.lock_ref == 0:
            count += 1
            heapq.heappush(heap, (-parent.last_access, count, parent))
    return freed
