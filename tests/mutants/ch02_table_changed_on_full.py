"""2.3 bug: append_tokens counts the new tokens before allocating, so a KVCacheFull leaves num_tokens too high."""

from minikv.kv.block_table import slot_mapping

TARGET = "2.3"
EXPECT = "the table changed"


class BlockTable:
    def __init__(self, block_size, blocks=(), num_tokens=0):
        self.block_size = block_size
        self.blocks = list(blocks)
        self.num_tokens = num_tokens

    def blocks_needed(self, n_new):
        return max(0, -(-(self.num_tokens + n_new) // self.block_size) - len(self.blocks))

    def append_tokens(self, n_new, allocator):
        need = self.blocks_needed(n_new)
        start = self.num_tokens
        self.num_tokens += n_new
        self.blocks.extend(allocator.allocate(need))
        return slot_mapping(self.blocks, range(start, start + n_new), self.block_size)
