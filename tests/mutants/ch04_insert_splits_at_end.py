"""4.2 bug: a sequence that ends inside an edge (all of it cached already) still splits that edge."""

from minikv.grade import learner_module

TARGET = "4.2"
EXPECT = "a split where there should be none"

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
            return pos
        c = 0
        while c < len(child.tokens) and pos + c < len(tokens) and child.tokens[c] == tokens[pos + c]:
            c += 1
        if c < len(child.tokens):
            child = split_node(child, c)  # noqa: F821 - the grader lends minikv's
        child.last_access = t
        node, pos = child, pos + c
    return len(tokens)
