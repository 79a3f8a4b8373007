"""Never returns: the grader must stop it at the time limit and say so."""

TARGET = "1.1"
EXPECT = "timed out after 2 s"
TIMEOUT = 2.0


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    while True:
        pass
