"""The grader: solutions pass, fresh stubs read TODO, every mutant fails, the harness survives bad code."""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import minikv.grade as mg
from minikv.errors import MinikvError
from minikv.grade import registry, runner, stubs
from minikv.grade.checks import ch01
from minikv.grade.layout import load_file

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = sorted((ROOT / "tests" / "mutants").glob("ch[0-9][0-9]_*.py"))
HARNESS = ("timed out", "exited with code", "SIGSEGV", "could not be imported")


def _meta(path: Path) -> dict[str, object]:
    """TARGET / EXPECT / TIMEOUT of a mutant, read without importing it."""
    out: dict[str, object] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("TARGET", "EXPECT", "TIMEOUT"):
                out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD_BYTES = "def kv_bytes_per_token(num_layers, num_kv_heads, head_dim, dtype_bytes):\n    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes\n"


# ---- solutions, stubs, mutants -------------------------------------------------------------------

def test_solutions_all_pass() -> None:
    results = mg.grade(impl="solutions")
    assert [r.id for r in results] == [e.id for e in registry.all_exercises()]
    for r in results:
        assert r.status == mg.PASS, repr(r)
        assert r.passed == r.total >= 3
    # the engine checks (marked engine=True by minikv.grade.engine.engine_check), whatever their names say
    engine = {(e.id, c.name) for e in registry.all_exercises() for c in e.checks if c.engine}
    messages = {(r.id, c.name): c.message for r in results for c in r.checks}
    chapters = {e.chapter for e in registry.all_exercises()}
    assert {int(i.split(".")[0]) for i, _ in engine} == chapters, "every chapter serves the engine with the learner's piece"
    for key in sorted(engine):
        assert "match minikv's" in messages[key] and " with your " in messages[key], (key, messages[key])
    prefix = [messages[k] for k in engine if k[0] in ("3.3", "4.4")]
    assert len(prefix) == 2 and all("cached tokens" in m for m in prefix), prefix


def test_generated_exercises_all_read_todo() -> None:
    results = mg.grade(impl="exercises")
    assert {r.status for r in results} == {mg.TODO}
    for r in results:
        assert r.passed == 0 and r.message == f"not started (exercises/{registry.get(r.id).module}.py)"
        assert r.hint == ""


def test_stub_files_are_current() -> None:
    assert stubs.main(["--check"]) == 0


@functools.cache
def _graded(path: Path) -> tuple[mg.Result, float]:
    """The mutant's grade and how long it took (graded once per test session)."""
    meta = _meta(path)
    start = time.monotonic()
    (result,) = mg.grade([str(meta["TARGET"])], module_override=path, timeout=float(meta.get("TIMEOUT", 60.0)))
    return result, time.monotonic() - start


@pytest.mark.parametrize("path", MUTANTS, ids=lambda p: p.stem)
def test_mutant_fails(path: Path) -> None:
    meta = _meta(path)
    result, seconds = _graded(path)
    assert result.status == mg.FAIL, repr(result)
    assert str(meta["EXPECT"]) in result.message, repr(result)
    assert "\n" not in result.message
    assert seconds < float(meta.get("TIMEOUT", 60.0)) + 10
    if not path.stem.split("_", 1)[1].startswith("harness_"):
        assert result.hint, "a failing exercise shows a hint"


def test_mutant_expectations_are_specific() -> None:
    """Each mutant names its own bug: an EXPECT that is set, differs from its exercise's other mutants',
    and is found in no other mutant's message of that exercise (a generic "differs at" or "shape" would be)."""
    by_target: dict[str, list[tuple[Path, str]]] = {}
    for path in MUTANTS:
        meta = _meta(path)
        expect = str(meta.get("EXPECT", "")).strip()
        assert expect, f"{path.name} sets no EXPECT: say what its FAIL message must contain"
        by_target.setdefault(str(meta["TARGET"]), []).append((path, expect))
    for target, mutants in by_target.items():
        expects = [e for _, e in mutants]
        assert len(set(expects)) == len(expects), f"exercise {target}'s mutants share an EXPECT: {expects}"
        for path, expect in mutants:
            for other, _ in mutants:
                message = _graded(other)[0].message
                assert other == path or expect not in message, (
                    f"{path.name}'s EXPECT {expect!r} is also in {other.name}'s message {message!r}: make it specific")


def test_a_segfault_names_the_learner_line() -> None:
    (result,) = mg.grade(["1.3"], module_override=ROOT / "tests" / "mutants" / "ch01_harness_segfault.py")
    assert result.message.startswith("the grading process crashed with SIGSEGV during check 'one cached token")
    assert result.message.endswith("(at tests/mutants/ch01_harness_segfault.py:10 in decode_attention)")


def test_every_exercise_has_two_bug_mutants() -> None:
    counts: dict[str, int] = {}
    for path in MUTANTS:
        if not path.stem.split("_", 1)[1].startswith("harness_"):
            target = str(_meta(path)["TARGET"])
            counts[target] = counts.get(target, 0) + 1
    missing = {e.id: counts.get(e.id, 0) for e in registry.all_exercises() if counts.get(e.id, 0) < 2}
    assert not missing, f"exercises with fewer than 2 mutants in tests/mutants: {missing}"


def test_timeout_names_the_running_check() -> None:
    path = ROOT / "tests" / "mutants" / "ch01_harness_loop_forever.py"
    start = time.monotonic()
    (result,) = mg.grade(["1.1"], module_override=path, timeout=1.5)
    assert time.monotonic() - start < 8
    assert result.message.startswith("timed out after 1.5 s in check 'SmolLM2-135M")
    assert "(still running at tests/mutants/ch01_harness_loop_forever.py:" in result.message
    assert result.message.endswith(" in kv_bytes_per_token)")
    assert [c.status for c in result.checks] == [mg.FAIL, mg.SKIP, mg.SKIP]


# ---- the registry agrees with solutions/ ---------------------------------------------------------

def test_registry_matches_the_solution_docstrings() -> None:
    tagged: set[str] = set()
    for exercise in registry.all_exercises():
        path = ROOT / "solutions" / f"{exercise.module}.py"
        module = load_file(path)
        for attr in exercise.attrs:
            assert hasattr(module, attr), f"{path} lacks {attr} (exercise {exercise.id})"
        doc = (getattr(module, exercise.attrs[0]).__doc__ or "").splitlines()[0]
        assert doc.rstrip(".") == f"Exercise {exercise.id}: {exercise.title}"
        assert exercise.checks and exercise.hint
    for path in sorted((ROOT / "solutions").glob("ch[0-9][0-9]_*.py")):
        tagged |= {r.exercise_id for r in stubs.find_regions(path.read_text(), f"solutions/{path.name}")}
    assert tagged == {e.id for e in registry.all_exercises()}


def test_plugged_reference_is_the_default_engine() -> None:
    """The engine checks compare with minikv's own pieces plugged in; that is what LLM('tiny-llama') serves."""
    from minikv import LLM, SamplingParams

    llm = LLM("tiny-llama", device="cpu")
    out = llm.generate(list(ch01.PROMPTS), SamplingParams(max_tokens=ch01.MAX_TOKENS, temperature=0.0))
    (plugged,) = ch01.WORKLOAD.reference(ch01.REFERENCE)
    assert [tuple(o.token_ids) for o in out] == [tokens for tokens, _ in plugged]


# ---- statuses and the notebook API -----------------------------------------------------------------

def test_file_is_reread_on_every_grade(tmp_path: Path) -> None:
    path = _write(tmp_path, "ch01_mine.py", GOOD_BYTES.replace("2 * ", ""))
    assert mg.grade(["1.1"], module_override=path)[0].status == mg.FAIL
    path.write_text(GOOD_BYTES)
    assert mg.grade(["1.1"], module_override=path)[0].status == mg.PASS
    assert load_file(path) is not load_file(path)


def test_partly_written_exercise_is_todo_not_started_only_when_nothing_passes(tmp_path: Path) -> None:
    text = (ROOT / "solutions" / "ch01_kv_cache.py").read_text()
    body = text.split("    def __len__(self) -> int:")[0] + "    def __len__(self) -> int:\n        raise NotImplementedError\n"
    (result,) = mg.grade(["1.2"], module_override=_write(tmp_path, "ch01_partial.py", body))
    assert result.status == mg.TODO
    assert result.message.startswith("not finished: check 'one append: shapes, values, lengths' hit NotImplementedError")


def test_check_reads_env_impl_and_grades_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINIKV_IMPL", raising=False)
    todo = mg.check("1.1")
    assert todo.status == mg.TODO and todo.source == "exercises/ch01_kv_cache.py"
    monkeypatch.setenv("MINIKV_IMPL", "solutions")
    passed = mg.check("1.1")
    assert passed.ok and passed.source == "solutions/ch01_kv_cache.py"

    def notebook_attention(q, keys, values, scale):  # noqa: ANN001, ANN202 - like a notebook cell
        from minikv.attention.reference import decode_attention

        return decode_attention(q, keys, values, scale)

    monkeypatch.delenv("MINIKV_IMPL")
    result = mg.check("1.3", notebook_attention)
    assert result.ok, repr(result)
    assert "minikv's cache" in result.checks[-1].message  # the file's KVCache is still a stub
    assert result.source == "decode_attention from check(); the rest from exercises/ch01_kv_cache.py"
    monkeypatch.setenv("MINIKV_IMPL", "solutions")
    result = mg.check("1.3", notebook_attention)
    assert result.ok and "your decode_attention and your KVCache" in result.checks[-1].message


def test_result_shows_in_text_and_html(tmp_path: Path) -> None:
    path = _write(tmp_path, "ch01_half.py", GOOD_BYTES.replace("2 * ", ""))
    (result,) = mg.grade(["1.1"], module_override=path)
    text, page = repr(result), result._repr_html_()
    assert text.startswith("Exercise 1.1 (KV bytes per token): FAIL  0/3 checks")
    assert "✗ SmolLM2-135M in bf16" in text and "hint: every layer keeps" in text
    assert "#cf222e" in page and "FAIL" in page and "hint:" in page and "&#x27;" not in result.title


def test_learner_module_follows_minikv_impl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINIKV_IMPL", raising=False)
    with pytest.raises(NotImplementedError, match="Exercise 1.1: KV bytes per token - see chapters/01_kv_cache.ipynb"):
        mg.learner_module("ch01_kv_cache").kv_bytes_per_token(1, 1, 1, 1)
    monkeypatch.setenv("MINIKV_IMPL", "solutions")
    assert mg.learner_module("ch01_kv_cache").kv_bytes_per_token(30, 3, 64, 2) == 23040
    monkeypatch.setenv("MINIKV_IMPL", "answers")
    with pytest.raises(MinikvError, match="MINIKV_IMPL='answers' is unknown"):
        mg.learner_module("ch01_kv_cache")


def test_gpu_exercise_is_skipped_without_a_gpu(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    exercise = registry.register(registry.Exercise("99.1", "needs a GPU", "ch99_gpu", ("kernel",), "-", needs_gpu=True))
    exercise.check("never runs here")(lambda learner: None)
    monkeypatch.setattr(runner, "_gpu_available", lambda: False)
    try:
        (result,) = mg.grade(["99.1"])
        assert result.status == mg.SKIP and "GPU" in result.message
        assert mg.main(["99.1"]) == 0  # skipped is not failed
        assert capsys.readouterr().out.strip().endswith("0/0 passed, 1 skipped (needs a GPU)")
    finally:
        registry.unregister("99.1")


def test_start_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, gpu = registry.get("1.1"), registry.Exercise("99.2", "gpu", "ch99_gpu", ("kernel",), "-", needs_gpu=True)
    from_file, from_cell = runner.Source("f.py", path=Path("f.py")), runner.Source("cell", objects={"kernel": len})
    assert runner.start_method(cpu, from_file) == runner.start_method(cpu, from_cell) == "fork"
    assert runner.start_method(gpu, from_file) == "spawn"  # a forked child cannot use CUDA
    assert runner.start_method(gpu, from_cell) == "inline"  # a notebook's function cannot travel to a new process
    monkeypatch.setattr(runner, "start_method", lambda exercise, source: "spawn")
    (spawned,) = mg.grade(["1.1"], impl="solutions")
    assert spawned.ok, repr(spawned)
    monkeypatch.setattr(runner, "start_method", lambda exercise, source: "inline")
    assert mg.check("1.1", lambda *a: 2 * a[0] * a[1] * a[2] * a[3]).ok


# ---- the command line ---------------------------------------------------------------------------------

def test_cli_table_json_and_exit_codes(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert mg.main(["1.1", "--impl", "exercises"]) == 1
    out = capfd.readouterr().out.splitlines()
    assert out[0].split() == ["ex", "title", "status", "checks", "first", "problem"]
    assert out[1].split()[:6] == ["1.1", "KV", "bytes", "per", "token", "TODO"]
    assert out[-1] == "0/1 passed"

    noisy = _write(tmp_path, "ch01_noisy.py", "print('hello from the learner')\n" + GOOD_BYTES)
    assert mg.main(["1.1", "--file", str(noisy), "--json"]) == 0
    captured = capfd.readouterr()
    payload = json.loads(captured.out)  # the learner's print went to stderr
    assert "hello from the learner" in captured.err
    assert set(payload) == {"impl", "passed", "total", "skipped", "summary", "results"}
    assert (payload["passed"], payload["total"], payload["skipped"]) == (1, 1, 0)
    (row,) = payload["results"]
    assert set(row) == {"id", "title", "chapter", "status", "passed", "total", "message", "hint", "source",
                        "seconds", "checks"}
    assert row["status"] == "PASS" and row["checks"][0] == {"name": "SmolLM2-135M in bf16: 23,040 bytes",
                                                             "status": "PASS", "message": ""}

    assert mg.main(["9.9"]) == 2
    assert "no exercise '9.9'; known exercises: 1.1, 1.2, 1.3, 2.1, 2.2, 2.3, 2.4" in capfd.readouterr().err
    assert mg.main(["--chapter", "9"]) == 2
    assert mg.main(["--impl", "nope"]) == 2
    capfd.readouterr()


def test_python_m_entry_points() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MINIKV_IMPL"}
    done = subprocess.run([sys.executable, "-m", "minikv.grade", "1.1", "--impl", "solutions", "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["status"] == "PASS"
    done = subprocess.run([sys.executable, "-m", "minikv.grade.stubs", "--check"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RuntimeWarning" not in done.stderr
