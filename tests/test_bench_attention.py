"""``minikv bench attention``: refuses clearly without a GPU; its tiny interpreter run exercises every code path."""

from __future__ import annotations

import json

import pytest
import torch

from minikv.bench import attention


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on a machine without CUDA")
def test_without_a_gpu_it_says_it_needs_one(capsys):
    assert attention.run([]) == 2
    out = capsys.readouterr().out
    assert "needs a CUDA GPU" in out and "--device cpu" in out


def test_tiny_interpreter_run_agrees_with_the_reference(capsys):
    assert attention.run(["--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (decode,), (prefill,) = result["decode"], result["prefill"]
    assert set(decode["ms"]) == {"triton", "torch paged", "torch ref", "sdpa contiguous"}
    assert decode["max_abs_err"] < 1e-5 and prefill["max_abs_err"] < 1e-5
    # bytes of K and V read: 2 sequences x 40 tokens x 2 kv heads x 16 dims x 2 (K, V) x 4 bytes, plus q/out/table
    assert decode["bytes"] >= 2 * 40 * 2 * 16 * 2 * 4
    assert prefill["flops"] == 4 * 2 * 2 * 16 * (8 * 24 + 8 * 9 // 2)


def test_peak_bandwidth_table():
    assert attention.peak_gbs("NVIDIA H200") == 4800
    assert attention.peak_gbs("NVIDIA H100 80GB HBM3") == 3350
    assert attention.peak_gbs("Some Future Card") is None
