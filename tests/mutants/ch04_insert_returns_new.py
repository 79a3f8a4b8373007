"""4.2 bug: returns how many tokens it added, not how many were there already."""

from minikv.grade import learner_module

TARGET = "4.2"
EXPECT = "how many leading tokens were there already"

_solution = learner_module("ch04_radix_tree", "solutions")
Node, RadixTree = _solution.Node, _solution.RadixTree


def insert(tree, tokens, values):
    t = tree.tick()
    node, pos = tree.root, 0
    while pos < len(tokens):
        child = node.children.get(tokens[pos])
        if child is None:
            leaf = Node(tokens[pos:], values[pos:], node)
            leaf.last_access = t
            node.children[tokens[pos]] = leaf
            return len(tokens) - pos
        c = 0
        while c < len(child.tokens) and pos + c < len(tokens) and child.tokens[c] == tokens[pos + c]:
            c += 1
        if c < len(child.tokens):
            if pos + c == len(tokens):
                child.last_access = t
                return 0
            child = split_node(child, c)  # noqa: F821 - the grader lends minikv's
        child.last_access = t
        node, pos = child, pos + c
    return 0
