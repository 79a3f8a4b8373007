"""``minikv bench leak`` and ``minikv bench collisions`` run end to end on small settings (tiny-llama)."""

from __future__ import annotations

from minikv.bench import main


def test_bench_leak_offline_prints_every_part(capsys):
    assert main(["leak", "--model", "tiny-llama", "--device", "cpu", "--lengths", "8,32", "--trials", "2"]) == 0
    out = capsys.readouterr().out
    for title in ("identification attack", "secret recovery", "what salts cost", "middle way", "ordering leak"):
        assert title in out
    assert "radix1" in out and "2 digits at once" in out and "lpm" in out


def test_bench_collisions_small(capsys):
    assert main(["collisions", "--requests", "90", "--num-blocks", "512", "--engine-requests", "5"]) == 0
    out = capsys.readouterr().out
    assert "sha256[:16 bits]" in out and "blocks held when idle" in out


def test_bench_leak_refuses_unknown_parts(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["leak", "--parts", "auc,nope"])
    assert "unknown part 'nope'" in capsys.readouterr().err
