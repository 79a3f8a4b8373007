"""4.1 bug: matches whole edges only; a prompt that ends or differs inside an edge gets nothing of it (no split)."""

from minikv.grade import learner_module

TARGET = "4.1"
EXPECT = "the next edge agrees in part"

_solution = learner_module("ch04_radix_tree", "solutions")
Node, RadixTree, split_node = _solution.Node, _solution.RadixTree, _solution.split_node


def match_prefix(tree, tokens):
    t = tree.tick()
    node, values, pos = tree.root, [], 0
    while pos < len(tokens) and tokens[pos] in node.children:
        child = node.children[tokens[pos]]
        if list(tokens[pos:pos + len(child.tokens)]) != child.tokens:
            break
        child.last_access = t
        values += child.values
        node, pos = child, pos + len(child.tokens)
    return values, node
