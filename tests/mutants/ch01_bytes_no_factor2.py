"""1.1 bug: counts K but not V (no factor 2)."""

TARGET = "1.1"
EXPECT = "(half: count both K and V)"


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    return num_layers * num_kv_heads * head_dim * dtype_bytes
