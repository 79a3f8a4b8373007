"""The exercises the grader knows, each with its checks.

Each ``minikv/grade/checks/chNN.py`` module (or ``chNN/`` package), imported on first use, registers its
chapter's exercises. A check calls the learner's code on seeded or hypothesis-drawn inputs, compares with
minikv's reference and raises :class:`~minikv.grade.compare.CheckFailed` (or lets the learner's exception
through) on the first difference, or returns a short PASS note. How to write one: docs/grader.md.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from minikv.errors import MinikvError

if TYPE_CHECKING:
    from minikv.grade.runner import Learner

CheckFn = Callable[["Learner"], "str | None"]


@dataclass(frozen=True)
class Check:
    """One named check. ``final``: run only when every earlier check of the exercise passed
    (for slow end-to-end checks such as plugging the piece into the engine); ``engine``: it serves
    ``LLM("tiny-llama")`` with the learner's piece (see :func:`minikv.grade.engine.engine_check`)."""

    name: str
    fn: CheckFn
    hint: str | None = None
    final: bool = False
    engine: bool = False


@dataclass
class Exercise:
    """An exercise: ``id`` "N.M", its ``title`` (as in the solution's docstring tag), the
    ``module`` stem of ``solutions/`` and ``exercises/`` files, the ``attrs`` the learner
    writes there (``attrs[0]`` is what ``check(id, obj)`` replaces), a ``hint`` shown on
    failure, whether it ``needs_gpu``, and the ``needs_packages`` it imports (graded SKIP
    with how to install them when one is missing, e.g. Triton, which has Linux wheels only). Compute slow reference outputs in a function
    decorated with :func:`minikv.grade.memo.shared` so they are computed once per session."""

    id: str
    title: str
    module: str
    attrs: tuple[str, ...]
    hint: str
    needs_gpu: bool = False
    needs_packages: tuple[str, ...] = ()
    checks: list[Check] = field(default_factory=list)

    @property
    def chapter(self) -> int:
        return int(self.id.split(".")[0])

    @property
    def sort_key(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.id.split("."))

    def check(self, name: str, *, hint: str | None = None, final: bool = False, engine: bool = False) -> Callable[[CheckFn], CheckFn]:
        """Decorator: add ``fn(learner)`` as this exercise's next check."""

        def add(fn: CheckFn) -> CheckFn:
            self.checks.append(Check(name, fn, hint, final, engine))
            return fn

        return add


_REGISTRY: dict[str, Exercise] = {}
_loaded = False


def register(exercise: Exercise) -> Exercise:
    """Add ``exercise`` to the registry (its id must be new) and return it."""
    parts = exercise.id.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"exercise id {exercise.id!r} must look like 'N.M'")
    if exercise.id in _REGISTRY and _REGISTRY[exercise.id] is not exercise:
        raise ValueError(f"exercise {exercise.id} is registered twice")
    if not exercise.attrs:
        raise ValueError(f"exercise {exercise.id} names no attribute for the learner to write")
    _REGISTRY[exercise.id] = exercise
    return exercise


def unregister(exercise_id: str) -> None:
    """Drop an exercise (tests register throwaway ones)."""
    _REGISTRY.pop(exercise_id, None)


def _load_checks() -> None:
    global _loaded
    if _loaded:
        return
    import minikv.grade.checks as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("ch"):
            try:
                importlib.import_module(f"{package.__name__}.{info.name}")
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.split(".")[0] in ("minikv",):
                    raise
                raise MinikvError(
                    f"the grader needs the Python package {exc.name!r}; install the course extras: "
                    "pip install -e '.[course]' (or pip install hypothesis)"
                ) from exc
    _loaded = True


def all_exercises() -> list[Exercise]:
    """Every registered exercise, in course order (1.1, 1.2, ..., 2.1, ...)."""
    _load_checks()
    return sorted(_REGISTRY.values(), key=lambda e: e.sort_key)


def get(exercise_id: str) -> Exercise:
    """The exercise with id ``exercise_id`` ("1.2"); a clear error if unknown."""
    _load_checks()
    exercise_id = str(exercise_id).strip()
    if exercise_id not in _REGISTRY:
        known = ", ".join(e.id for e in all_exercises())
        raise MinikvError(f"no exercise {exercise_id!r}; known exercises: {known}")
    return _REGISTRY[exercise_id]


def select(ids: list[str] | tuple[str, ...] | None = None, chapter: int | None = None) -> list[Exercise]:
    """The exercises named by ``ids`` (all when empty), kept to ``chapter`` if given."""
    chosen = [get(i) for i in ids] if ids else all_exercises()
    if chapter is not None:
        chosen = [e for e in chosen if e.chapter == chapter]
        if not chosen:
            chapters = sorted({e.chapter for e in all_exercises()})
            raise MinikvError(f"no exercises in chapter {chapter} (among those selected); chapters with exercises: {chapters}")
    return chosen
