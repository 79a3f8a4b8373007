"""4.1 bug: split_node keeps the original object as the upper part and makes a new node for the rest,
so a request that locked the original node now holds only the first half of its path."""

from minikv.grade import learner_module

TARGET = "4.1"
EXPECT = "not `node` itself"

_solution = learner_module("ch04_radix_tree", "solutions")
Node, RadixTree, match_prefix = _solution.Node, _solution.RadixTree, _solution.match_prefix


def split_node(node, k):
    lower = Node(node.tokens[k:], node.values[k:], node)
    lower.lock_ref, lower.last_access = node.lock_ref, node.last_access
    lower.children = node.children
    for child in lower.children.values():
        child.parent = lower
    node.tokens, node.values = node.tokens[:k], node.values[:k]
    node.children = {lower.tokens[0]: lower}
    return node
