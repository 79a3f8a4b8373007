"""8.3 bug: load copies into block ``b % 8``: right in the checks' pools of 8 blocks, wrong in the engine's pool of 12."""

from minikv.prefix.offload import OffloadTier

TARGET = "8.3"
EXPECT = "generates differently for round"


class HostTier(OffloadTier):
    def load(self, out, block_ids):
        super().load(out, [b % 8 for b in block_ids])
