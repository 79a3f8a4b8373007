"""8.3 bug: a full tier never evicts: it drops the new blocks and keeps its oldest ones."""

from minikv.prefix.offload import OffloadTier

TARGET = "8.3"
EXPECT = "it never evicts"


class HostTier(OffloadTier):
    def store(self, items):
        for key, _, _ in items:
            old = self._index.pop(key, None)
            if old is not None:
                self._free.append(old[0])
        blocks, slots = [], []
        for key, block, meta in items:
            if not self._free:
                self._dropped += 1
                continue
            slot = self._free.pop()
            self._index[key] = (slot, meta)
            blocks.append(block)
            slots.append(slot)
        self.pool.save_blocks(blocks, self.host, slots)
        self._stored += len(blocks)
