"""1.1 bug: the right number, but a float."""

TARGET = "1.1"
EXPECT = "return an int"


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    return 2.0 * num_layers * num_kv_heads * head_dim * dtype_bytes
