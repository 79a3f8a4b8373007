"""2.2 bug: no bounds check; past the end Python raises IndexError by itself, but a negative
position silently reads the block table from its end."""

TARGET = "2.2"
EXPECT = "is negative"


def slot_mapping(block_table, positions, block_size):
    return [block_table[pos // block_size] * block_size + pos % block_size for pos in positions]
