"""What the Triton kernels share: where they may run, and the tile sizes they pick.

Triton compiles for a GPU. With the environment variable ``TRITON_INTERPRET=1``
set *before* ``triton`` is imported, every kernel instead runs on the CPU in
Triton's interpreter (numpy underneath, one program after another): slow,
but the same kernel source, which is how chapter 06 and the tests run on a
laptop. Under the interpreter use fp32: its bf16 arithmetic is not what a GPU computes.
"""

from __future__ import annotations

import os

import torch

from minikv.errors import InvalidRequestError


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def check_triton_device(*tensors: torch.Tensor) -> None:
    """Raise a clear error when a kernel is handed CPU tensors and the interpreter is off."""
    if interpreting():
        return
    for t in tensors:
        if t.device.type != "cuda":
            raise InvalidRequestError(
                f"a Triton kernel got a tensor on {t.device}; run it on a CUDA device, or set "
                f"TRITON_INTERPRET=1 in the environment before triton is imported to use the CPU interpreter"
            )


def pow2_at_least(n: int, floor: int = 1) -> int:
    """The smallest power of two ``>= max(n, floor)``: ``tl.arange`` only takes powers of two."""
    p = floor
    while p < n:
        p *= 2
    return p
