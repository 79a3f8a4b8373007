"""ModelRunner: turns a list of scheduled sequences into one forward pass and samples a token for each.

The batch is flat ("varlen", as in vLLM): the new tokens of every sequence
are concatenated, each with its own position; the model asks for logits only
at ``logits_indices``, the last new token of each sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from minikv.attention.backend import AttentionStep
from minikv.attention.paged import PagedDecodeFn, PagedStep
from minikv.attention.padded import PaddedStep
from minikv.engine.sampler import sample
from minikv.engine.sequence import Sequence
from minikv.kv.block_table import make_block_table_tensor
from minikv.kv.padded import PaddedKVCache
from minikv.kv.pool import KVPool
from minikv.models.llama import CausalLM


@dataclass
class Batch:
    """The tensors of one forward pass over ``B`` sequences with ``T`` new tokens in all."""

    input_ids: torch.Tensor  # [T] long
    positions: torch.Tensor  # [T] long, position of each token in its own sequence
    slot_mapping: torch.Tensor  # [T] long, pool slot of each token's K/V (paged; empty for the padded cache)
    block_tables: list[list[int]]  # B rows, each sequence's blocks in order (paged; empty for the padded cache)
    rows: list[int]  # B, each sequence's row of the padded cache (empty for the paged pool)
    query_start_loc: list[int]  # B + 1: sequence b's tokens are rows [b] .. [b + 1] - 1
    context_lens: list[int]  # B: tokens in the cache once this step's are written
    logits_indices: torch.Tensor  # [S] long, the last token of each sequence whose chunk reaches its end


class ModelRunner:
    """Runs ``model`` over batches whose K/V live in ``kv``: a paged :class:`KVPool` or a :class:`PaddedKVCache`.

    ``paged_decode_fn``: a replacement for the paged decode attention (see :class:`PagedStep`).
    ``attention``: the paged layout's kernels, ``"torch"`` (:class:`PagedStep`) or ``"triton"``
    (:class:`~minikv.attention.triton_backend.TritonPagedStep`, same inputs).
    ``cuda_graphs``: pure decode steps (Triton, paged) replay CUDA graphs (:mod:`minikv.engine.cuda_graphs`).
    """

    def __init__(self, model: CausalLM, kv: KVPool | PaddedKVCache, scale: float, device: torch.device,
                 paged_decode_fn: PagedDecodeFn | None = None, attention: str = "torch",
                 cuda_graphs: bool = False, max_model_len: int | None = None) -> None:
        self.model, self.kv, self.scale, self.device = model, kv, scale, device
        self.paged_decode_fn = paged_decode_fn
        self.step_cls: type = PagedStep
        if attention == "triton":
            from minikv.attention.triton_backend import TritonPagedStep  # imports triton: only when asked for

            self.step_cls = TritonPagedStep
        self.paged = isinstance(kv, KVPool)
        self.graphs: Any = None  # DecodeGraphs: pure decode steps replay CUDA graphs (captured at the first one)
        if cuda_graphs and self.paged and attention == "triton" and paged_decode_fn is None:
            from minikv.engine.cuda_graphs import DecodeGraphs

            assert max_model_len is not None
            self.graphs = DecodeGraphs(model, kv, scale, max_model_len)

    def prepare(self, scheduled: list[tuple[Sequence, int]]) -> Batch:
        """Sequence ``s`` scheduled for ``n`` tokens feeds ``token_ids[num_computed_tokens : num_computed_tokens + n]``.

        (A whole prompt at its prefill, a chunk of it with chunked prefill, then 1 per decode step.)
        Logits are asked only where a sequence's chunk reaches its end: those sample a token.
        """
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        starts, lens, tables = [0], [], []
        rows: list[int] = []
        last: list[int] = []
        for seq, n in scheduled:
            begin, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            if self.paged:
                table = seq.block_table
                assert table is not None, f"sequence {seq.request_id} was scheduled without blocks"
                slots += (table.slot(p) for p in range(begin, end))
                tables.append(table.blocks)
            else:
                assert seq.kv_row is not None, f"sequence {seq.request_id} was scheduled without a row"
                rows.append(seq.kv_row)
            ids += seq.token_ids[begin:end]
            positions += range(begin, end)
            starts.append(starts[-1] + end - begin)
            lens.append(end)
            if end == len(seq):
                last.append(starts[-1] - 1)

        def as_tensor(xs: list[int]) -> torch.Tensor:
            return torch.tensor(xs, dtype=torch.long, device=self.device)

        return Batch(as_tensor(ids), as_tensor(positions), as_tensor(slots), tables, rows, starts, lens,
                     as_tensor(last))

    def make_step(self, batch: Batch) -> AttentionStep:
        if self.paged:
            assert isinstance(self.kv, KVPool)
            tables = make_block_table_tensor(batch.block_tables, pad=0, device=self.device)
            return self.step_cls(self.kv, batch.slot_mapping, tables, batch.query_start_loc, batch.context_lens,
                                 self.scale, self.paged_decode_fn)
        assert isinstance(self.kv, PaddedKVCache)
        return PaddedStep(self.kv, batch.rows, batch.query_start_loc, batch.context_lens, self.scale)

    @torch.inference_mode()
    def run(self, scheduled: list[tuple[Sequence, int]]) -> dict[int, int]:
        """One forward over the scheduled chunks; the next token of each sequence that reached its end, by request id."""
        batch = self.prepare(scheduled)
        graphs = self.graphs
        if graphs is not None and graphs.can_run(batch.query_start_loc, batch.block_tables):
            logits = graphs.run(batch.input_ids, batch.positions, batch.slot_mapping, batch.block_tables,
                                batch.context_lens)  # [B, vocab]: in a decode step every row is a last token
        else:
            logits = self.model(batch.input_ids, batch.positions, self.make_step(batch), batch.logits_indices)
        ready = [seq for seq, n in scheduled if seq.num_computed_tokens + n == len(seq)]
        if not ready:
            return {}
        return {seq.request_id: token for seq, token in zip(ready, sample(logits, ready))}
