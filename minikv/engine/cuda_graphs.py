"""DecodeGraphs: decode steps replayed from CUDA graphs, so a small model is not bound by kernel launches.

A decode step of SmolLM2 launches a few hundred kernels (30 layers x norms,
projections, RoPE, the store and the attention); on a GPU each launch costs
microseconds of CPU time, more than the kernel itself at small batch. A CUDA
graph records the whole step once and replays it with one launch (vLLM and
nano-vllm capture decode the same way). A graph replays fixed addresses and
shapes, so:

- every input lives in a **static buffer** sized for the largest batch:
  token ids, positions, slot mapping, block tables ``[max_batch, max_blocks]``
  and context lengths; a step copies its values in and replays;
- one graph per **batch size** in ``batch_sizes`` (1, 2, 4, 8, 12, 16, 24 ...
  up to 256 by default); a batch of 5 runs the graph of 8 with 3
  padding rows (slot ``-1``: the store kernel skips them; context length 1;
  their logits are dropped);
- nothing in the step may read a value back to the host: the attention step
  (:class:`GraphDecodeStep`) is built from the buffers with the split count
  and the longest context fixed at capture time (the model's context), and
  the RoPE tables are built for every position first (``RotaryEmbedding.reserve``).

Steps that are not pure decode (prefill, chunks), batches past the largest
size, or tables wider than the buffers run eagerly as before. Only the
Triton backend is captured (the PyTorch one gathers through host-built
index tensors). ``capture=False`` runs the same static-buffer path eagerly:
that is how the CPU tests check the padding and the buffers; the capture
itself needs CUDA. Shared-prefix (cascade) attention is off inside graphs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minikv.kv.pool import KVPool

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


class GraphDecodeStep:
    """The Triton decode step over static buffers (the attributes ``TritonPagedStep.attend`` reads)."""

    def __init__(self, pool: KVPool, slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, scale: float, max_context_len: int, num_splits: int) -> None:
        self.pool, self.scale = pool, scale
        self.slot_mapping, self.block_tables, self.context_lens = slot_mapping, block_tables, context_lens
        self.is_decode, self.decode_fn, self.cascade_plan = True, None, None
        self.max_context_len, self.num_splits, self.max_query_len = max_context_len, num_splits, 1

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from minikv.attention.triton_backend import TritonPagedStep

        return TritonPagedStep.attend(self, layer, q, k, v)  # type: ignore[arg-type]


class DecodeGraphs:
    """Decode forwards of ``model`` over ``pool`` for batches up to ``max(batch_sizes)``, from captured graphs."""

    def __init__(self, model: torch.nn.Module, pool: KVPool, scale: float, max_model_len: int,
                 batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, capture: bool = True) -> None:
        from minikv.attention.triton_decode import choose_num_splits, decode_block_n

        self.model, self.pool, self.scale = model, pool, scale
        self.device = pool.device
        self.capture = capture and self.device.type == "cuda"
        self.batch_sizes = sorted(set(int(b) for b in batch_sizes))
        self.max_batch = self.batch_sizes[-1]
        self.max_model_len = max_model_len
        self.max_blocks = -(-max_model_len // pool.block_size)
        dev, n = self.device, self.max_batch
        self.input_ids = torch.zeros(n, dtype=torch.long, device=dev)
        self.positions = torch.zeros(n, dtype=torch.long, device=dev)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.long, device=dev)
        self.block_tables = torch.zeros(n, self.max_blocks, dtype=torch.long, device=dev)
        self.context_lens = torch.ones(n, dtype=torch.long, device=dev)
        block_n = decode_block_n(pool.block_size)
        self.steps = {bs: GraphDecodeStep(pool, self.slot_mapping[:bs], self.block_tables[:bs], self.context_lens[:bs],
                                          scale, max_model_len,
                                          choose_num_splits(bs, pool.num_kv_heads, max_model_len, block_n))
                      for bs in self.batch_sizes}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.replays = 0  # steps run through the buffers (replayed, or eagerly with capture off)
        model.rope.reserve(max_model_len, dev)

    def size_for(self, batch: int) -> int | None:
        """The smallest captured batch size that holds ``batch`` rows (None: too many)."""
        for bs in self.batch_sizes:
            if bs >= batch:
                return bs
        return None

    def can_run(self, query_start_loc: Sequence[int], block_tables: Sequence[Sequence[int]]) -> bool:
        """A pure decode step (one token per sequence) that fits the buffers."""
        batch = len(query_start_loc) - 1
        return (0 < batch <= self.max_batch and query_start_loc[-1] == batch
                and all(len(t) <= self.max_blocks for t in block_tables))

    def _forward(self, bs: int) -> torch.Tensor:
        return self.model(self.input_ids[:bs], self.positions[:bs], self.steps[bs])

    @torch.inference_mode()
    def capture_all(self) -> None:
        """Record one graph per batch size, largest first (smaller ones reuse its memory pool)."""
        if not self.capture or self.graphs:
            return
        pool = None
        for bs in reversed(self.batch_sizes):
            self._forward(bs)  # warm-up: compiles the Triton kernels for this shape outside the capture
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[bs] = self._forward(bs)
            pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, slot_mapping: torch.Tensor,
            block_tables: Sequence[Sequence[int]], context_lens: Sequence[int]) -> torch.Tensor:
        """Logits ``[B, vocab]`` of one decode step (check :meth:`can_run` first)."""
        batch = len(context_lens)
        bs = self.size_for(batch)
        assert bs is not None, f"a decode batch of {batch} is past the largest graph ({self.max_batch})"
        width = max(len(t) for t in block_tables)
        tables = torch.zeros(bs, width, dtype=torch.long)
        for b, t in enumerate(block_tables):
            tables[b, :len(t)] = torch.as_tensor(t, dtype=torch.long)
        lens = torch.ones(bs, dtype=torch.long)
        lens[:batch] = torch.as_tensor(list(context_lens), dtype=torch.long)
        self.input_ids[:batch].copy_(input_ids, non_blocking=True)
        self.input_ids[batch:bs].zero_()
        self.positions[:batch].copy_(positions, non_blocking=True)
        self.positions[batch:bs].zero_()
        self.slot_mapping[:batch].copy_(slot_mapping, non_blocking=True)
        self.slot_mapping[batch:bs].fill_(-1)  # padding rows write nothing
        self.block_tables[:bs, :width].copy_(tables.to(self.device, non_blocking=True))
        self.block_tables[:bs, width:].zero_()
        self.context_lens[:bs].copy_(lens.to(self.device, non_blocking=True))
        self.replays += 1
        if self.capture:
            if not self.graphs:
                self.capture_all()
            self.graphs[bs].replay()
            return self.outputs[bs][:batch]
        return self._forward(bs)[:batch]
