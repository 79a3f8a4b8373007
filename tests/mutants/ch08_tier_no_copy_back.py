"""8.3 bug: load frees the slots and returns, without copying the blocks back into the pool."""

from minikv.prefix.offload import OffloadTier

TARGET = "8.3"
EXPECT = "it was never copied back"


class HostTier(OffloadTier):
    def load(self, out, block_ids):
        self._loaded += len(out.slots)
        self._out -= len(out.slots)
        self._free.extend(out.slots)
        out.keys, out.slots, out.metas = [], [], []
