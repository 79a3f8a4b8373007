"""Helpers for checks: one-line failure messages that say what differs and where.

Checks raise :class:`CheckFailed` with a message like
``keys of layer 0 differ at kv head 1, position 2 (got 0.13, expected -1.2; max abs error 1.3) for ...``.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from typing import Any, Callable, Iterable, Sequence

import torch

import minikv

_MINIKV_DIR = os.path.dirname(os.path.abspath(minikv.__file__))
_LIB_DIRS = tuple({os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
_NOTEBOOK_CELL = re.compile(r"ipykernel_\d+[/\\]\d+\.py$")


class CheckFailed(Exception):
    """A check found a difference; ``str(exc)`` is the one-line message shown to the learner."""


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace to single spaces and cut at ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_learner_file(filename: str) -> bool:
    """True for files outside minikv and the Python installation: the learner's (or a notebook cell's)."""
    path = os.path.abspath(filename)
    return not (path.startswith(_MINIKV_DIR + os.sep) or path.startswith(_LIB_DIRS) or filename.startswith("<frozen"))


def where(exc: BaseException) -> str:
    """`` (at exercises/ch01_kv_cache.py:42 in append)``: the deepest frame of ``exc`` in the learner's code, or ``""``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_learner_file(f.filename)]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {display_path(frame.filename)}:{frame.lineno} in {frame.name})"


def display_path(filename: str) -> str:
    """A file as the learner knows it: relative to the course root, or "a notebook cell"."""
    if _NOTEBOOK_CELL.search(filename) or filename.startswith("<ipython-input"):
        return "a notebook cell"
    from minikv.grade.layout import relative

    return relative(filename)


def describe_exception(exc: BaseException) -> str:
    """``RuntimeError: shapes differ (at exercises/x.py:3 in f)``."""
    return one_line(f"{type(exc).__name__}: {exc}{where(exc)}")


def call(fn: Callable[..., Any], *args: Any, context: str = "", **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; an exception from it (except NotImplementedError, which means
    "not started") becomes a CheckFailed naming ``context`` and where in the learner's code it was raised."""
    try:
        return fn(*args, **kwargs)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as exc:
        prefix = f"{context}: " if context else ""
        raise CheckFailed(f"{prefix}your code raised {describe_exception(exc)}") from exc


def fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def short(items: Iterable[Any], limit: int = 8, sep: str = ", ") -> str:
    """``[1, 2, 3]``, or ``[1, 2, ... (40 in all)]`` past ``limit`` items; ``sep=" "`` draws token runs ``[1 2 3]``."""
    items = list(items)
    head = sep.join(map(str, items[:limit]))
    return f"[{head}]" if len(items) <= limit else f"[{head}{sep}... ({len(items)} in all)]"


def looks_like(got: Any, guesses: Iterable[tuple[str, Callable[[], Any]]], atol: float = 1e-5) -> str:
    """``"; looks like <mistake>"`` for the first (mistake, what it would give) guess that ``got`` equals
    (tensors: to ``atol``), else ``""``."""
    for text, make in guesses:
        try:
            want = make()
            if isinstance(want, torch.Tensor):
                same = (isinstance(got, torch.Tensor) and got.shape == want.shape
                        and torch.allclose(got.double(), want.double(), atol=atol, rtol=1e-4))
            else:
                same = got == want
            if same:
                return f"; looks like {text}"
        except Exception:  # noqa: BLE001 - a diagnosis is best effort
            continue
    return ""


def expect_tensor(
    got: Any,
    want: torch.Tensor,
    what: str,
    dims: Sequence[str],
    context: str = "",
    atol: float = 1e-5,
    rtol: float = 1e-4,
    check_dtype: bool = True,
    diagnose: Callable[[], str] | None = None,
) -> None:
    """Check ``got`` has ``want``'s type, shape, dtype and values (to ``atol`` + ``rtol`` * |want|).

    ``dims`` names the axes (``("head", "dim")``), so the message points at the
    worst element: ``output differs at head 1, dim 3 (got 0.5, expected 0.1; max abs error 0.4; 6 of 40 values off)``;
    ``diagnose()`` (e.g. a :func:`looks_like`) is added to a failure's message.
    """
    try:
        _expect_tensor(got, want, what, dims, atol, rtol, check_dtype)
    except CheckFailed as exc:
        diagnosis = diagnose() if diagnose else ""
        raise CheckFailed(one_line(f"{exc}{diagnosis}{',' if diagnosis and context else ''} {context}")) from None


def _expect_tensor(got: Any, want: torch.Tensor, what: str, dims: Sequence[str], atol: float, rtol: float,
                   check_dtype: bool) -> None:
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(one_line(f"{what} is a {type(got).__name__}, expected a torch.Tensor of shape {fmt_shape(want.shape)}"))
    if tuple(got.shape) != tuple(want.shape):
        names = ", ".join(dims)
        raise CheckFailed(one_line(f"{what} has shape {fmt_shape(got.shape)}, expected {fmt_shape(want.shape)} ([{names}])"))
    if check_dtype and got.dtype != want.dtype:
        raise CheckFailed(one_line(f"{what} has dtype {got.dtype}, expected {want.dtype}"))
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    bad = ~torch.isclose(g, w, atol=atol, rtol=rtol, equal_nan=False)
    if not bool(bad.any()):
        return
    err = (g - w).abs().nan_to_num(nan=float("inf"))
    err[~bad] = 0
    flat = int(err.argmax())
    index, rest = [], flat
    for size in reversed(want.shape):
        index.append(rest % size)
        rest //= size
    index.reverse()
    at = ", ".join(f"{name} {i}" for name, i in zip(dims, index))
    worst = float((g - w).abs().nan_to_num(nan=float("inf")).max())
    raise CheckFailed(one_line(
        f"{what} differs at {at} (got {float(g[tuple(index)]):.4g}, expected {float(w[tuple(index)]):.4g}; "
        f"max abs error {worst:.3g}; {int(bad.sum())} of {bad.numel()} values off)"
    ))


def forall(*strategies: Any, max_examples: int = 30) -> Callable[[Callable[..., None]], Callable[[], None]]:
    """Decorator: run the body on ``max_examples`` hypothesis-drawn inputs, deterministically
    (derandomized, no example database, quiet, no deadline); the smallest failing input's
    exception is what propagates, so its message should name the input. A NotImplementedError
    (a stub: not started) ends the run at once instead of being shrunk."""
    from hypothesis import HealthCheck, Verbosity, given, settings

    def wrap(fn: Callable[..., None]) -> Callable[[], None]:
        stub: list[NotImplementedError] = []

        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any) -> None:
            if stub:
                return
            try:
                fn(*args, **kwargs)
            except NotImplementedError as exc:
                stub.append(exc)

        run = settings(
            max_examples=max_examples,
            derandomize=True,
            database=None,
            deadline=None,
            verbosity=Verbosity.quiet,
            report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck),
        )(given(*strategies)(body))

        def prop() -> None:
            run()
            if stub:
                raise stub[0]

        return prop

    return wrap
