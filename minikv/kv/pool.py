"""The paged KV pool: one preallocated K and V tensor per layer, cut into blocks.

The pool holds tensors only. Which block belongs to whom is the prefix
cache's business (:class:`~minikv.prefix.PrefixCache`, ``NoPrefixCache`` when
caching is off): it is the one ledger of used, evictable and free blocks.
The pool moves bytes: sequences write their K/V at slots, and
:meth:`KVPool.copy_block` copies a partly shared block (copy-on-write).

Layout of each layer's cache: ``[num_blocks, block_size, num_kv_heads, head_dim]``.

Why this order:

- one token's K (or V) for all heads, ``[num_kv_heads, head_dim]``, is one
  contiguous run of memory, so writing a new token is a single copy;
- a *slot* ``= block_id * block_size + offset`` indexes the flat view
  ``[num_blocks * block_size, num_kv_heads, head_dim]`` (a free ``view``, no
  copy), so writing a whole batch of new tokens is one ``index_copy_`` with
  the slot mapping;
- a block is one contiguous chunk of ``block_size * num_kv_heads * head_dim``
  elements, so gathering a sequence through its block table reads whole chunks.

All layers live in one allocation ``[2, num_layers, num_blocks, block_size,
num_kv_heads, head_dim]`` so that the memory budget is spent in one piece;
``k_cache(layer)`` / ``v_cache(layer)`` are views into it. The pool is zeroed
at start, so never-written slots hold finite values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from minikv.errors import KVCacheFull


def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """Bytes of K plus V that one token occupies across all layers."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype.itemsize


class KVPool:
    """Per-layer paged K/V tensors, cut into ``num_blocks`` blocks of ``block_size`` token slots.

    Give exactly one of ``num_blocks`` or ``memory_bytes``. With a memory
    budget, ``num_blocks = memory_bytes // bytes_per_block`` where
    ``bytes_per_block = 2 * num_layers * block_size * num_kv_heads * head_dim * itemsize``.
    A budget (or ``num_blocks``) that holds no block raises :class:`KVCacheFull`.
    """

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        block_size: int,
        num_blocks: int | None = None,
        memory_bytes: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        for name, value in (
            ("num_layers", num_layers),
            ("num_kv_heads", num_kv_heads),
            ("head_dim", head_dim),
            ("block_size", block_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if (num_blocks is None) == (memory_bytes is None):
            raise ValueError("give exactly one of num_blocks or memory_bytes")

        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.block_size = block_size
        self.dtype = dtype
        self.device = torch.device(device)

        per_block = self.bytes_per_block
        if memory_bytes is not None:
            if memory_bytes < per_block:
                raise KVCacheFull(
                    f"a KV memory budget of {memory_bytes} bytes holds no block: one block of "
                    f"{block_size} tokens needs {per_block} bytes (2 x {num_layers} layers x "
                    f"{block_size} tokens x {num_kv_heads} kv heads x {head_dim} head_dim x "
                    f"{dtype.itemsize} bytes); raise kv_cache_memory to at least {per_block} "
                    f"or lower block_size"
                )
            num_blocks = memory_bytes // per_block
        assert num_blocks is not None
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        if num_blocks == 0:
            raise KVCacheFull("a KV pool of 0 blocks holds no token; raise num_blocks to at least 1")
        self.num_blocks = int(num_blocks)

        # [2 (K, V), num_layers, num_blocks, block_size, num_kv_heads, head_dim]
        self.kv = torch.zeros(
            (2, num_layers, self.num_blocks, block_size, num_kv_heads, head_dim),
            dtype=dtype,
            device=self.device,
        )
        self._copy_stream: torch.cuda.Stream | None = None  # made by the first host copy on CUDA

    @property
    def bytes_per_token(self) -> int:
        return bytes_per_token(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype)

    @property
    def bytes_per_block(self) -> int:
        return self.block_size * self.bytes_per_token

    @property
    def memory_bytes(self) -> int:
        """Bytes actually held by the K and V tensors (at most the budget given)."""
        return self.num_blocks * self.bytes_per_block

    @property
    def capacity_tokens(self) -> int:
        """How many token slots the pool has in all (free or not)."""
        return self.num_blocks * self.block_size

    def k_cache(self, layer: int) -> torch.Tensor:
        """K of one layer, a view: # [num_blocks, block_size, num_kv_heads, head_dim]"""
        return self.kv[0, layer]

    def v_cache(self, layer: int) -> torch.Tensor:
        """V of one layer, a view: # [num_blocks, block_size, num_kv_heads, head_dim]"""
        return self.kv[1, layer]

    def copy_block(self, src: int, dst: int, num_tokens: int) -> None:
        """Copy K and V of the first ``num_tokens`` slots of block ``src`` into block ``dst``, every layer.

        Copy-on-write of a partly shared block: a token-granular prefix cache
        hands out a fresh block ``dst`` that must start with ``src``'s first
        ``num_tokens`` tokens (see :class:`~minikv.prefix.Match`).
        """
        self.copy_blocks([(src, dst, num_tokens)])

    def copy_blocks(self, copies: list[tuple[int, int, int]]) -> None:
        """Several :meth:`copy_block` s, each ``(src, dst, num_tokens)``, in order."""
        for src, dst, num_tokens in copies:
            for b in (src, dst):
                if not 0 <= b < self.num_blocks:
                    raise IndexError(f"block {b} is outside the pool's blocks 0..{self.num_blocks - 1}")
            if not 0 <= num_tokens <= self.block_size:
                raise ValueError(f"num_tokens must be in 0..{self.block_size} (one block), got {num_tokens}")
            self.kv[:, :, dst, :num_tokens] = self.kv[:, :, src, :num_tokens]

    # ------------------------------------------------------------ host tier

    def host_buffer(self, num_blocks: int) -> torch.Tensor:
        """Zeroed host memory for ``num_blocks`` blocks, one contiguous slot each (an offload tier's store).

        # [num_blocks, 2, num_layers, block_size, num_kv_heads, head_dim]
        Pinned (page-locked) when the pool is on CUDA, so copies to and from
        it can run asynchronously; plain CPU memory otherwise.
        """
        shape = (num_blocks, 2, self.num_layers, self.block_size, self.num_kv_heads, self.head_dim)
        return torch.zeros(shape, dtype=self.dtype, pin_memory=self.device.type == "cuda")

    def save_blocks(self, block_ids: list[int], host: torch.Tensor, slots: list[int]) -> None:
        """Copy K and V of pool blocks ``block_ids`` into host slots ``slots`` (every layer).

        On CUDA the copy runs on a side stream, asynchronously for the CPU;
        the default stream waits for it before its next kernel, so a block
        handed out again is only overwritten once its K/V are safe in host memory.
        """
        if not block_ids:
            return
        with self._side_stream() as on_gpu:
            if not on_gpu:  # one strided copy per block: far faster on a CPU than a gather and a scatter
                for b, s in zip(block_ids, slots):
                    host[s].copy_(self.kv[:, :, b])
                return
            ids = torch.tensor(block_ids, device=self.device)
            staged = self.kv.index_select(2, ids).movedim(2, 0).contiguous()  # [k, 2, L, bs, H, D]
            for i, s, n in _runs(slots):
                host[s : s + n].copy_(staged[i : i + n], non_blocking=True)

    def load_blocks(self, host: torch.Tensor, slots: list[int], block_ids: list[int]) -> None:
        """Copy host slots ``slots`` back into pool blocks ``block_ids`` (the reverse of :meth:`save_blocks`)."""
        if not block_ids:
            return
        with self._side_stream() as on_gpu:
            if not on_gpu:
                for s, b in zip(slots, block_ids):
                    self.kv[:, :, b].copy_(host[s])
                return
            ids = torch.tensor(block_ids, device=self.device)
            staged = torch.empty((len(slots), *host.shape[1:]), dtype=self.dtype, device=self.device)
            for i, s, n in _runs(slots):
                staged[i : i + n].copy_(host[s : s + n], non_blocking=True)
            self.kv.index_copy_(2, ids, staged.movedim(0, 2))

    @contextlib.contextmanager
    def _side_stream(self) -> Iterator[bool]:
        """On CUDA: run the body on the pool's copy stream, ordered after and before the default stream's work."""
        if self.device.type != "cuda":
            yield False
            return
        main = torch.cuda.current_stream(self.device)
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        side = self._copy_stream
        side.wait_stream(main)  # the blocks' last writes (and reads) are done
        with torch.cuda.stream(side):
            yield True
        main.wait_stream(side)  # later kernels see the copies done

    def __repr__(self) -> str:
        return (
            f"KVPool(layers={self.num_layers}, kv_heads={self.num_kv_heads}, "
            f"head_dim={self.head_dim}, block_size={self.block_size}, "
            f"num_blocks={self.num_blocks}, dtype={self.dtype}, device={self.device})"
        )


def _runs(slots: list[int]) -> Iterator[tuple[int, int, int]]:
    """``(index, first slot, length)`` of each run of consecutive slots, so each run is one copy.

    >>> list(_runs([4, 5, 6, 9, 2, 3]))
    [(0, 4, 3), (3, 9, 1), (4, 2, 2)]
    """
    i = 0
    while i < len(slots):
        n = 1
        while i + n < len(slots) and slots[i + n] == slots[i] + n:
            n += 1
        yield i, slots[i], n
        i += n
