"""2.2 bug: off by one in the offset inside the block (1-based offsets)."""

TARGET = "2.2"
EXPECT = "one too far"


def slot_mapping(block_table, positions, block_size):
    out = []
    for pos in positions:
        if pos < 0 or pos // block_size >= len(block_table):
            raise IndexError(pos)
        out.append(block_table[pos // block_size] * block_size + pos % block_size + 1)
    return out
