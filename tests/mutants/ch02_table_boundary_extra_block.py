"""2.3 bug: floor division plus one instead of ceiling division: one block too many when the tokens end on a block boundary."""

from minikv.kv.block_table import slot_mapping

TARGET = "2.3"
EXPECT = "block boundary"


class BlockTable:
    def __init__(self, block_size, blocks=(), num_tokens=0):
        self.block_size = block_size
        self.blocks = list(blocks)
        self.num_tokens = num_tokens

    def blocks_needed(self, n_new):
        return max(0, (self.num_tokens + n_new) // self.block_size + 1 - len(self.blocks))

    def append_tokens(self, n_new, allocator):
        self.blocks.extend(allocator.allocate(self.blocks_needed(n_new)))
        start = self.num_tokens
        self.num_tokens += n_new
        return slot_mapping(self.blocks, range(start, start + n_new), self.block_size)
