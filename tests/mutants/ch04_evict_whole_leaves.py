"""4.4 bug: always evicts whole leaves, freeing more than asked when the last leaf is longer than needed."""

import heapq

from minikv.grade import learner_module

TARGET = "4.4"
EXPECT = "not removed whole"

_solution = learner_module("ch04_radix_tree", "solutions")
Node, RadixTree = _solution.Node, _solution.RadixTree


def evict(tree, num_tokens):
    heap = [(leaf.last_access, i, leaf) for i, leaf in enumerate(tree.leaves()) if leaf.lock_ref == 0]
    heapq.heapify(heap)
    count, freed = len(heap), []
    while heap and len(freed) < num_tokens:
        _, _, leaf = heapq.heappop(heap)
        freed += leaf.values
        parent = leaf.parent
        del parent.children[leaf.tokens[0]]
        if parent.parent is not None and not parent.children and parent.lock_ref == 0:
            count += 1
            heapq.heappush(heap, (parent.last_access, count, parent))
    return freed
