"""4.3 bug: locks only the node where the match ended, not its ancestors: eviction can take the path from under it."""

from minikv.grade import learner_module

TARGET = "4.3"
EXPECT = "up to the root"

_solution = learner_module("ch04_radix_tree", "solutions")
Node, RadixTree = _solution.Node, _solution.RadixTree


def lock(node):
    node.lock_ref += 1


def unlock(node):
    node.lock_ref -= 1
