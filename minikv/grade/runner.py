"""Run an exercise's checks in a child process with a time limit, and collect a :class:`Result`.

Each exercise runs in its own process (``fork``: the child sees the notebook's
objects and the warmed-up reference) so an infinite loop, ``os._exit`` or a
segfault in the learner's code ends as a FAIL with the reason instead of
hanging or killing the grader. The child reports each check as it finishes,
so a timeout still says which check was running.
"""

from __future__ import annotations

import importlib.util

import contextlib
import ctypes
import faulthandler
import multiprocessing as mp
import os
import pickle
import re
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from minikv.errors import MinikvError
from minikv.grade import layout, memo, registry
from minikv.grade.compare import CheckFailed, _is_learner_file, describe_exception, display_path, one_line, where
from minikv.grade.registry import Exercise
from minikv.grade.result import FAIL, PASS, SKIP, TODO, CheckResult, Result

DEFAULT_TIMEOUT = 60.0


class Learner:
    """What a check sees: the learner's module (or None) plus objects handed to ``check(id, obj)``."""

    def __init__(self, module: ModuleType | None, objects: dict[str, Any], label: str) -> None:
        self.module, self.objects, self.label = module, dict(objects), label

    def find(self, name: str, default: Any = None) -> Any:
        """The learner's ``name`` (a handed-in object first, then the module's), else ``default``."""
        if name in self.objects:
            return self.objects[name]
        return getattr(self.module, name, default) if self.module is not None else default

    def get(self, name: str) -> Any:
        """The learner's ``name``; CheckFailed if it is missing."""
        value = self.find(name, _MISSING)
        if value is _MISSING:
            raise CheckFailed(f"{self.label} has no `{name}`; keep the name and signature of the stub")
        return value


_MISSING = object()


@dataclass
class Source:
    """Where the learner's code comes from: a file ``path`` imported anew in the child, an
    already-imported ``module``, and/or ``objects`` (name -> object) that take precedence."""

    label: str
    path: Path | None = None
    module: ModuleType | None = None
    objects: dict[str, Any] = field(default_factory=dict)

    @property
    def display(self) -> str:
        """What was graded, for the result: ``decode_attention from check(); the rest from exercises/...``."""
        if not self.objects:
            return self.label
        return f"{', '.join(self.objects)} from check(); the rest from {self.label}"

    def open(self) -> Learner:
        module = self.module
        if module is None and self.path is not None:
            try:
                module = layout.load_file(self.path)
            except Exception:
                if not self.objects:
                    raise
        return Learner(module, self.objects, self.label)

    @property
    def picklable(self) -> bool:
        return self.module is None and not self.objects


# ---- the child ------------------------------------------------------------------------------

def _single_thread_openmp() -> None:
    """After fork, GNU OpenMP's worker threads are gone but its pool says otherwise, so the
    first parallel torch op would wait forever; one OpenMP thread never touches the pool."""
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "omp" in line.rsplit("/", 1)[-1] and ".so" in line}
    except OSError:
        return
    for lib in libs:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(lib).omp_set_num_threads(1)


def _run_check(check: registry.Check, learner: Learner) -> tuple[str, str]:
    try:
        note = check.fn(learner)
        return PASS, one_line(note or "")
    except NotImplementedError as exc:
        return TODO, one_line(f"NotImplementedError{where(exc)}")
    except CheckFailed as exc:
        return FAIL, one_line(str(exc))
    except AssertionError as exc:
        return FAIL, one_line(str(exc) or f"assertion failed{where(exc)}")
    except SystemExit as exc:
        return FAIL, one_line(f"your code called sys.exit({exc.code!r}){where(exc)}")
    except Exception as exc:
        return FAIL, one_line(f"your code raised {describe_exception(exc)}")


def _child(conn: Any, exercise: Exercise | str, source: Source, forked: bool, stdout_to_stderr: bool,
           trace_fd: int | None = None) -> None:
    if forked:
        _single_thread_openmp()
    if trace_fd is not None:  # where the code was when it crashed, or when the parent asks (timeout)
        faulthandler.enable(file=trace_fd, all_threads=False)
        faulthandler.register(signal.SIGUSR1, file=trace_fd, all_threads=False)
    if stdout_to_stderr:  # keep the learner's prints out of --json output
        sys.stdout.flush()
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    if isinstance(exercise, str):  # spawned: look it up in this fresh process's registry
        exercise = registry.get(exercise)
    try:
        learner = source.open()
    except BaseException as exc:  # noqa: BLE001 - anything at import time is the learner's to fix
        if isinstance(exc, SyntaxError):
            detail = f"SyntaxError at line {exc.lineno}: {exc.msg}"
        elif isinstance(exc, MinikvError):
            detail = str(exc)
        else:
            detail = describe_exception(exc)
        conn.send(("load_error", one_line(f"{source.label} could not be imported: {detail}")))
        return
    all_passed = True
    for i, check in enumerate(exercise.checks):
        if check.final and not all_passed:
            conn.send(("check", i, SKIP, "not run: pass the checks above first"))
            continue
        conn.send(("start", i))
        status, message = _run_check(check, learner)
        for key, value in memo.take_new():
            with contextlib.suppress(Exception):  # unpicklable: the parent just will not keep it
                conn.send(("memo", key, value))
        conn.send(("check", i, status, message))
        all_passed = all_passed and status == PASS
    conn.send(("end",))


# ---- the parent -----------------------------------------------------------------------------

_FRAME = re.compile(r'File "(?P<file>.+)", line (?P<line>\d+) in (?P<name>\S+)')


def _learner_frame(trace: Any) -> str:
    """`` (at exercises/x.py:9 in f)`` from a faulthandler dump: its innermost frame in the learner's code."""
    trace.seek(0)
    for match in _FRAME.finditer(trace.read().decode("utf-8", "replace")):  # most recent call first
        if _is_learner_file(match["file"]):
            return f" (at {display_path(match['file'])}:{match['line']} in {match['name']})"
    return ""


def _death(exitcode: int | None, check_name: str | None) -> str:
    during = f" during check '{check_name}'" if check_name else " while importing your file"
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = {"SIGSEGV": " (a segfault: memory accessed out of bounds in native code?)",
               "SIGKILL": " (killed: out of memory?)", "SIGABRT": " (aborted by native code)"}.get(name, "")
        return f"the grading process crashed with {name}{during}{why}"
    return f"the grading process exited with code {exitcode}{during} (does your code call os._exit or exit the process?)"


def start_method(exercise: Exercise, source: Source) -> str:
    """How to run ``exercise``'s checks: ``"fork"`` (the default: the child sees the notebook's
    objects), ``"spawn"`` for GPU exercises (a forked child cannot use CUDA once the grading
    process touched it) or where fork does not exist, ``"inline"`` (in this process, no time
    limit) when spawn cannot carry the code: objects handed over from a notebook."""
    if not exercise.needs_gpu and "fork" in mp.get_all_start_methods():
        return "fork"
    return "spawn" if source.picklable else "inline"


def _run_isolated(exercise: Exercise, source: Source, timeout: float, stdout_to_stderr: bool) -> tuple[list[CheckResult | None], str | None]:
    method = start_method(exercise, source)
    if method == "inline":
        return _run_in_process(exercise, source)
    ctx = mp.get_context(method)
    receive, send = ctx.Pipe(duplex=False)
    trace = tempfile.TemporaryFile()
    trace_fd = trace.fileno() if method == "fork" else None
    target: Exercise | str = exercise
    if method != "fork":  # spawn pickles the exercise (its checks by module and name), else sends the id
        try:
            pickle.dumps(exercise)
        except Exception:  # noqa: BLE001 - e.g. checks that are lambdas or share a name
            target = exercise.id
    proc = ctx.Process(target=_child, args=(send, target, source, method == "fork", stdout_to_stderr, trace_fd),
                       daemon=True, name=f"minikv-grade-{exercise.id}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork may deadlock": handled in the child
        proc.start()
    send.close()
    checks: list[CheckResult | None] = [None] * len(exercise.checks)
    running: int | None = None
    problem: str | None = None
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                name = exercise.checks[running].name if running is not None else None
                at = ""
                if trace_fd is not None and proc.pid is not None and proc.is_alive():
                    with contextlib.suppress(OSError):
                        os.kill(proc.pid, signal.SIGUSR1)
                        time.sleep(0.2)
                        at = _learner_frame(trace).replace(" (at ", " (still running at ", 1)
                problem = (f"timed out after {timeout:g} s" + (f" in check '{name}'" if name else " while importing your file")
                           + (at or " (an infinite loop, or far too slow?)"))
                break
            if not receive.poll(min(left, 1.0)):
                continue
            try:
                message = receive.recv()
            except EOFError:
                proc.join(5)
                problem = _death(proc.exitcode, exercise.checks[running].name if running is not None else None)
                problem += _learner_frame(trace) if trace_fd is not None else ""
                break
            kind = message[0]
            if kind == "start":
                running = message[1]
            elif kind == "check":
                _, i, status, text = message
                checks[i] = CheckResult(exercise.checks[i].name, status, text)
                running = None
            elif kind == "memo":
                memo.store(message[1], message[2])
            elif kind == "load_error":
                problem = message[1]
                break
            elif kind == "end":
                break
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join()
        receive.close()
        trace.close()
    if problem is not None and running is not None:
        checks[running] = CheckResult(exercise.checks[running].name, FAIL, problem)
    return checks, problem


def _run_in_process(exercise: Exercise, source: Source) -> tuple[list[CheckResult | None], str | None]:
    try:
        learner = source.open()
    except Exception as exc:
        return [None] * len(exercise.checks), one_line(f"{source.label} could not be imported: {describe_exception(exc)}")
    checks: list[CheckResult | None] = []
    all_passed = True
    for check in exercise.checks:
        if check.final and not all_passed:
            checks.append(CheckResult(check.name, SKIP, "not run: pass the checks above first"))
            continue
        status, message = _run_check(check, learner)
        checks.append(CheckResult(check.name, status, message))
        all_passed = all_passed and status == PASS
    return checks, None


def _gpu_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _todo_message(exercise: Exercise, todo: CheckResult, passed: int, label: str) -> str:
    """"not started" when nothing passed and the stub hit first is the exercise's entry point
    (the function itself, or a class's ``__init__``); else "not finished" and where."""
    entry = (*exercise.attrs, "__init__")
    located = " (at " in todo.message
    if passed == 0 and (not located or any(todo.message.endswith(f" in {name})") for name in entry)):
        return f"not started ({label})"
    return f"not finished: check '{todo.name}' hit {todo.message}"


def run_exercise(exercise: Exercise, source: Source, timeout: float = DEFAULT_TIMEOUT,
                 stdout_to_stderr: bool = False) -> Result:
    """Grade one exercise against ``source``; never raises for anything the learner's code does."""
    base = dict(id=exercise.id, title=exercise.title, chapter=exercise.chapter, total=len(exercise.checks),
                source=source.display)
    if exercise.needs_gpu and not _gpu_available():
        return Result(status=SKIP, passed=0, message="needs a CUDA GPU; none found here", **base)
    missing = [p for p in exercise.needs_packages if importlib.util.find_spec(p) is None]
    if missing:
        return Result(status=SKIP, passed=0, message=f"needs {', '.join(missing)}, which is not installed here: "
                      f"pip install {' '.join(missing)} (Triton has Linux wheels only)", **base)
    start = time.monotonic()
    raw, problem = _run_isolated(exercise, source, timeout, stdout_to_stderr)
    checks = [c if c is not None else CheckResult(exercise.checks[i].name, SKIP, "not run")
              for i, c in enumerate(raw)]
    passed = sum(c.status == PASS for c in checks)
    failed = next((c for c in checks if c.status == FAIL), None)
    todo = next((c for c in checks if c.status == TODO), None)
    hint = exercise.hint
    if problem is not None and failed is None:
        status, message = FAIL, problem
    elif failed is not None:
        status, message = FAIL, failed.message
        check = exercise.checks[checks.index(failed)]
        hint = check.hint or exercise.hint
    elif todo is not None:
        status = TODO
        message = _todo_message(exercise, todo, passed, source.label)
    else:
        status, message = PASS, ""
    return Result(status=status, passed=passed, message=message, hint=hint if status == FAIL else "",
                  seconds=time.monotonic() - start, checks=checks, **base)


def _source_for(exercise: Exercise, impl: str, module_override: Any, objects: dict[str, Any] | None,
                root: Path | None) -> Source:
    objects = objects or {}
    if isinstance(module_override, ModuleType):
        label = getattr(module_override, "__file__", None) or module_override.__name__
        return Source(layout.relative(Path(label), root) if "/" in str(label) else str(label),
                      module=module_override, objects=objects)
    if module_override is not None:
        path = Path(module_override).resolve()
        return Source(layout.relative(path, root), path=path, objects=objects)
    path = layout.impl_path(exercise.module, impl, root)
    return Source(f"{impl}/{exercise.module}.py", path=path, objects=objects)


def grade(
    ids: list[str] | tuple[str, ...] | None = None,
    chapter: int | None = None,
    impl: str = "exercises",
    module_override: ModuleType | str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    objects: dict[str, Any] | None = None,
    root: Path | None = None,
    stdout_to_stderr: bool = False,
) -> list[Result]:
    """Grade the exercises ``ids`` (default: all, or all of ``chapter``) and return one Result each.

    ``impl``: grade ``exercises/`` (the learner's) or ``solutions/``.
    ``module_override``: a module object or a file path graded instead (e.g. a mutant).
    ``objects``: name -> object used instead of the file's (what ``check(id, obj)`` passes).
    ``timeout``: seconds per exercise, all its checks together.
    """
    if impl not in layout.IMPLS:
        raise MinikvError(f"impl={impl!r} is unknown; choose from {layout.IMPLS}")
    if timeout <= 0:
        raise MinikvError(f"timeout must be positive, got {timeout}")
    chosen = registry.select(list(ids) if ids else None, chapter)
    root = root or (layout.repo_root() if module_override is None else None)
    return [run_exercise(e, _source_for(e, impl, module_override, objects, root), timeout, stdout_to_stderr)
            for e in chosen]


def check(exercise_id: str, obj: Any = None, *, impl: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
    """Grade one exercise from a notebook: ``minikv.grade.check("1.2")``.

    Re-imports the learner's file from disk each time, so saved edits count
    (``solutions/`` instead when ``$MINIKV_IMPL=solutions``). ``check("1.2", MyCache)``
    grades an object defined in the notebook instead of the file's ``KVCache``;
    any other piece a check needs comes from the file (see the chapter's checks).
    """
    exercise = registry.get(exercise_id)
    objects = {exercise.attrs[0]: obj} if obj is not None else None
    return grade([exercise.id], impl=impl or layout.default_impl(), objects=objects, timeout=timeout)[0]
