"""2.2 bug: block index and offset swapped (block_table[pos % block_size], offset pos // block_size)."""

TARGET = "2.2"
EXPECT = "swapped"


def slot_mapping(block_table, positions, block_size):
    out = []
    for pos in positions:
        if pos < 0 or pos // block_size >= len(block_table):
            raise IndexError(pos)
        out.append(block_table[pos % block_size] * block_size + pos // block_size)
    return out
