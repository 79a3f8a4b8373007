"""4.1 bug: stamps the access time on the node where the match ends, not on the whole path."""

from minikv.grade import learner_module

TARGET = "4.1"
EXPECT = "stamp every node of the path"

_solution = learner_module("ch04_radix_tree", "solutions")
Node, RadixTree, split_node = _solution.Node, _solution.RadixTree, _solution.split_node


def match_prefix(tree, tokens):
    t = tree.tick()
    node, values, pos = tree.root, [], 0
    while pos < len(tokens) and tokens[pos] in node.children:
        child = node.children[tokens[pos]]
        c = 0
        while c < len(child.tokens) and pos + c < len(tokens) and child.tokens[c] == tokens[pos + c]:
            c += 1
        inside = c < len(child.tokens)
        if inside:
            child = split_node(child, c)
        values += child.values
        node, pos = child, pos + c
        if inside:
            break
    if node is not tree.root:
        node.last_access = t
    return values, node
