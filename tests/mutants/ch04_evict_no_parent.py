"""4.4 bug: collects the leaves once and never looks at a parent that becomes a leaf."""

import heapq

from minikv.grade import learner_module

TARGET = "4.4"
EXPECT = "parents that become leaves included"

_solution = learner_module("ch04_radix_tree", "solutions")
Node, RadixTree = _solution.Node, _solution.RadixTree


def evict(tree, num_tokens):
    heap = [(leaf.last_access, i, leaf) for i, leaf in enumerate(tree.leaves()) if leaf.lock_ref == 0]
    heapq.heapify(heap)
    freed = []
    while heap and len(freed) < num_tokens:
        _, _, leaf = heapq.heappop(heap)
        need = num_tokens - len(freed)
        if len(leaf.tokens) > need:
            freed += leaf.values[-need:]
            del leaf.tokens[-need:], leaf.values[-need:]
            break
        freed += leaf.values
        del leaf.parent.children[leaf.tokens[0]]
    return freed
