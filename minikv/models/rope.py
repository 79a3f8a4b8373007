"""Rotary position embedding (RoPE) with the config's theta and scaling.

Each pair of channels (i, i + head_dim/2) of q and k is rotated by the angle
``position * inv_freq[i]``. Scaling changes ``inv_freq``: ``linear`` divides
every frequency by a factor, ``llama3`` divides only the low frequencies and
blends the middle band (Meta's Llama 3.1 recipe).
"""

from __future__ import annotations

import math
from typing import Any

import torch


def inv_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None = None) -> torch.Tensor:
    """Angular speed of each channel pair. Returns ``[head_dim // 2]`` float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim))
    if scaling is None:
        return inv_freq
    kind = scaling["rope_type"]
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    if kind == "llama3":
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, blended, scaled)
    raise ValueError(f"unknown rope_type {kind!r}")


class RotaryEmbedding:
    """Holds a cos/sin table that grows on demand; ``apply`` rotates q and k in place of HF's module."""

    def __init__(self, head_dim: int, theta: float, scaling: dict[str, Any] | None = None) -> None:
        self.inv_freq = inv_frequencies(head_dim, theta, scaling)
        self.cos = torch.empty(0, head_dim, device="cpu")
        self.sin = torch.empty(0, head_dim, device="cpu")
        self.frozen = False  # set by reserve(): no size check (a host sync) per call, as CUDA graph capture needs

    def _grow(self, n: int, device: torch.device) -> None:
        size = max(n, 2 * self.cos.shape[0], 256)
        freqs = torch.arange(size, dtype=torch.float32, device="cpu")[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)  # [size, head_dim]
        self.cos, self.sin = emb.cos().to(device), emb.sin().to(device)

    def reserve(self, n: int, device: torch.device) -> None:
        """Build the tables for positions ``< n`` on ``device`` now, and stop checking positions afterwards."""
        if n > self.cos.shape[0] or self.cos.device != torch.device(device):
            self._grow(n, torch.device(device))
        self.frozen = True

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions [T]`` -> cos, sin ``[T, 1, head_dim]`` ready to broadcast over heads."""
        if not self.frozen:
            need = int(positions.max()) + 1 if positions.numel() else 0
            if need > self.cos.shape[0] or self.cos.device != positions.device:
                self._grow(need, positions.device)
        return self.cos[positions, None, :].to(dtype), self.sin[positions, None, :].to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x [T, H, D]`` rotated by the angles in ``cos``/``sin [T, 1, D]``."""
    return x * cos + rotate_half(x) * sin
