"""4.3 bug: a lock is a flag, not a count: when one of two requests on a path finishes, the path is unlocked."""

from minikv.grade import learner_module

TARGET = "4.3"
EXPECT = "count, not a flag"

_solution = learner_module("ch04_radix_tree", "solutions")
Node, RadixTree = _solution.Node, _solution.RadixTree


def lock(node):
    while node.parent is not None:
        node.lock_ref = 1
        node = node.parent


def unlock(node):
    while node.parent is not None:
        node.lock_ref = 0
        node = node.parent
