"""4.2 bug: forgets to slice: hangs the whole sequence (not tokens[pos:]) below the node where the walk stopped,
storing its prefix a second time."""

from minikv.grade import learner_module

TARGET = "4.2"
EXPECT = "a prefix stored twice"

_solution = learner_module("ch04_radix_tree", "solutions")
Node, RadixTree = _solution.Node, _solution.RadixTree


def insert(tree, tokens, values):
    t = tree.tick()
    node, pos = tree.root, 0
    while pos < len(tokens):
        child = node.children.get(tokens[pos])
        if child is None:
            leaf = Node(tokens, values, node)
            leaf.last_access = t
            node.children[leaf.tokens[0]] = leaf
            return pos
        c = 0
        while c < len(child.tokens) and pos + c < len(tokens) and child.tokens[c] == tokens[pos + c]:
            c += 1
        if c < len(child.tokens):
            if pos + c == len(tokens):
                child.last_access = t
                return len(tokens)
            child = split_node(child, c)  # noqa: F821 - the grader lends minikv's
        child.last_access = t
        node, pos = child, pos + c
    return len(tokens)
