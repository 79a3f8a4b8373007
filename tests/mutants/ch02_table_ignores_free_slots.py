"""2.3 bug: blocks_needed counts blocks for the new tokens alone, ignoring the free slots left in the last block."""

from minikv.kv.block_table import slot_mapping

TARGET = "2.3"
EXPECT = "fill those first"


class BlockTable:
    def __init__(self, block_size, blocks=(), num_tokens=0):
        self.block_size = block_size
        self.blocks = list(blocks)
        self.num_tokens = num_tokens

    def blocks_needed(self, n_new):
        return -(-n_new // self.block_size)

    def append_tokens(self, n_new, allocator):
        self.blocks.extend(allocator.allocate(self.blocks_needed(n_new)))
        start = self.num_tokens
        self.num_tokens += n_new
        return slot_mapping(self.blocks, range(start, start + n_new), self.block_size)
