"""Ends the process from inside the learner's code: the grader must survive and say so."""

import os

TARGET = "1.1"
EXPECT = "exited with code 3"


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    os._exit(3)
