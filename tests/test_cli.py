"""The minikv command line, happy paths (errors: tests/test_engine_errors.py)."""

from __future__ import annotations

import subprocess
import sys

from minikv.cli import main


def test_generate_prints_text(capsys) -> None:
    assert main(["generate", "--model", "tiny-llama", "--max-tokens", "5", "hello"]) == 0
    assert capsys.readouterr().out.strip() != ""


def test_doctor_reports_environment_and_cache(capsys) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for label in ("torch", "transformers", "triton kernels", "model cache", "device"):
        assert label in out


def test_bench_lists_cases(capsys) -> None:
    assert main(["bench", "--help"]) == 0
    assert "generate" in capsys.readouterr().out
    assert main(["bench", "nope"]) == 2


def test_console_script_error_has_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "minikv", "generate", "--max-tokens", "0", "--model", "tiny-llama", "x"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: max_tokens must be at least 1")
    assert "Traceback" not in proc.stderr


def test_bench_ttft_runs_on_a_tiny_model(capsys) -> None:
    from minikv.bench import main as bench_main

    assert bench_main(["ttft", "--model", "tiny-llama", "--prefix-tokens", "64", "--suffix-tokens", "8",
                       "--repeats", "1", "--stream", "3", "--block-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "hit (64 cached + 8 new)" in out
    assert "hit rate over a stream of 3: 59.3%" in out  # 2 of 3 requests hit 64 of their 72 tokens: 128/216


def test_demo_shows_prefix_cache_reuse(capsys) -> None:
    assert main(["demo", "--model", "tiny-llama", "--max-tokens", "4"]) == 0
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if "reused from the cache" in l]
    assert len(lines) == 3 and lines[0].strip().startswith("[0 of")
    assert all(not l.strip().startswith("[0 of") for l in lines[1:]), "later customers must hit the shared prompt"
