"""1.1 bug: counts numbers, not bytes (forgets dtype_bytes)."""

TARGET = "1.1"
EXPECT = "that counts numbers"


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    return 2 * num_layers * num_kv_heads * head_dim
